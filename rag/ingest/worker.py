"""Parse one file (load, clean, chunk, metadata) in a child process with a memory ceiling and a timeout.

The web app indexes uploads in its own process; a hostile or broken file must cost a child process at
most. `parse` runs `parse_file` in `python -m rag.ingest.worker` (a fresh interpreter, never a fork of
the big web process) when `settings.isolate_parsing` is on: the child sets RLIMIT_AS to
`settings.parse_memory_mb` and RLIMIT_CPU, reads a JSON request on stdin and writes a JSON result on
its own copy of stdout (what libraries print goes to stderr). A child that runs out of memory, dies, or
passes `settings.parse_seconds` (plus GRACE_SECONDS for a parser stuck in C) is killed, with its
process group (a LibreOffice it started), and the file is reported as failed with a Chinese reason.

Small plain-text files (.txt/.md under IN_PROCESS_MAX_BYTES) are read in the caller's process: their
reading is linear and bounded by the limits, and a child would cost ~0.3 s each.

The limits of `rag.ingest.limits` hold in both places (the child gets the caller's values).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rag.ingest import limits
from rag.ingest.limits import LimitExceeded, LoadError

log = logging.getLogger("kexie.worker")

PLAIN = (".txt", ".md", ".markdown")
IN_PROCESS_MAX_BYTES = 1 * limits.MB  # plain text up to this size is parsed in the caller's process
GRACE_SECONDS = 30  # past parse_seconds the child checks its own clock; past this too it is killed
_MEMORY_SIGNS = ("MemoryError", "Memory allocation failed", "Cannot allocate memory", "out of memory", "std::bad_alloc")


@dataclass
class Parsed:
    chunks: list
    warnings: list[str]
    scanned_pages: list[int]
    meta: object  # DocMeta

    def __iter__(self):  # unpacks like pipeline.Chunked
        return iter((self.chunks, self.warnings, self.scanned_pages, self.meta))


@dataclass
class Outcome:
    """What one child run gave: `parsed`, or `error` (a LoadError to raise); its peak memory and time."""

    parsed: Parsed | None = None
    error: LoadError | None = None
    peak_mb: float = 0.0  # resident
    peak_vm_mb: float = 0.0  # address space (what the ceiling bounds)
    seconds: float = 0.0
    returncode: int | None = None
    stages: dict[str, float] = field(default_factory=dict)


# -- the parse itself (in either process) -------------------------------------------------------------
@contextmanager
def timed(stages: dict[str, float], name: str):
    """Add the block's wall time to stages[name]."""
    t = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t


def parse_file(path: Path, source: str, *, ocr: bool = False, chunk_size: int = 400, chunk_overlap: int = 80,
               seconds: float | None = None, stages: dict[str, float] | None = None) -> Parsed:
    """Load, clean and chunk one file, and read what it says about itself (its metadata, corrected by its
    `.meta.toml` sidecar), within the per-file limits and `seconds` of wall clock; adds each step's
    seconds to `stages`."""
    from rag.ingest.chunking import chunk_document, document_title, is_regulation
    from rag.ingest.cleaning import paragraphs
    from rag.ingest.loaders import Skipped, load
    from rag.ingest.metadata import apply_sidecar, extract, read_sidecar

    stages = {} if stages is None else stages
    with limits.budget(seconds or limits.DEFAULT_SECONDS):
        with timed(stages, "load"):
            doc = load(path, source, ocr=ocr)
        with timed(stages, "clean"):
            paras = paragraphs(doc.pages, pdf=path.suffix.lower() in (".pdf", ".ofd"))  # fixed-layout lines
        with timed(stages, "chunk"):
            limits.check_time("分块前")
            chunks = chunk_document(paras, source, chunk_size, chunk_overlap)
            meta = extract(paras, source, document_title(paras, source), is_regulation(paras))
    if not chunks:
        raise Skipped("文件中没有可索引的文字")
    warnings = list(doc.warnings)
    try:
        meta = apply_sidecar(meta, read_sidecar(path))
    except ValueError as e:  # a broken sidecar must not cost the document: index it, say why the fix was ignored
        warnings.append(f"{e}，已忽略")
    return Parsed(chunks, warnings, doc.scanned_pages, meta)


def isolated(path: Path, settings) -> bool:
    """Whether `parse` reads this file in a child process."""
    if not getattr(settings, "isolate_parsing", False):
        return False
    if path.suffix.lower() in PLAIN:
        try:
            return path.stat().st_size > IN_PROCESS_MAX_BYTES
        except OSError:
            return False
    return True


def parse(path: Path, source: str, settings, stages: dict[str, float] | None = None) -> Parsed:
    """`parse_file` with the settings' chunking and limits: in a child process when `isolated`."""
    stages = {} if stages is None else stages
    if not isolated(path, settings):
        return parse_file(path, source, ocr=settings.ocr, chunk_size=settings.chunk_size,
                          chunk_overlap=settings.chunk_overlap, seconds=settings.parse_seconds, stages=stages)
    out = run(path, source, settings)
    for k, v in out.stages.items():
        stages[k] = stages.get(k, 0.0) + v
    # The child's start and the transfer count as reading the file.
    stages["load"] = stages.get("load", 0.0) + max(0.0, out.seconds - sum(out.stages.values()))
    if out.error is not None:
        raise out.error
    return out.parsed


# -- the parent's side --------------------------------------------------------------------------------
def run(path: Path, source: str, settings) -> Outcome:
    """Parse one file in a child process; never raises for the file's sake (see Outcome.error)."""
    from rag.ingest.loaders import Skipped

    memory_mb = int(settings.parse_memory_mb)
    seconds = float(settings.parse_seconds or limits.DEFAULT_SECONDS)
    request = {
        "path": str(Path(path).resolve()), "source": source, "ocr": bool(settings.ocr),
        "chunk_size": settings.chunk_size, "chunk_overlap": settings.chunk_overlap,
        "seconds": seconds, "memory_mb": memory_mb, "limits": limits.snapshot(),
    }
    root = str(Path(__file__).resolve().parent.parent.parent)  # the directory holding the rag package
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Under RLIMIT_AS address space is what counts: no BLAS thread pools, and few malloc arenas (glibc
    # reserves 64 MB of address space per arena, up to 8 per core, for threads such as OCR's).
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(k, "1")
    env.setdefault("MALLOC_ARENA_MAX", "2")
    out = Outcome()
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "rag.ingest.worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        except OSError as e:
            out.error = LoadError(f"无法启动解析进程（{e}），未索引")
            return out
        timed_out = False
        try:
            data, _ = proc.communicate(json.dumps(request).encode("utf-8"), timeout=seconds + GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            data, _ = proc.communicate()
        finally:
            if proc.poll() is None:  # an exception here (KeyboardInterrupt): never leave it running
                _kill_group(proc)
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            _kill_group(proc)  # whatever a dead child had started (a converter) goes with it
        out.seconds = time.perf_counter() - t
        out.returncode = proc.returncode
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - 4000))
        tail = err.read().decode("utf-8", "replace")
    if timed_out:
        out.error = LimitExceeded(f"解析超时：超过每个文件 {seconds:g} 秒的上限仍未完成，已终止解析进程，未索引")
        return out
    result = None
    if data:
        try:
            result = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            result = None
    if not isinstance(result, dict):
        out.error = _died(proc.returncode, tail, memory_mb, seconds)
        if not isinstance(out.error, LimitExceeded):
            log.warning("parse worker for %s exited %s: %s", source, proc.returncode, tail[-1000:])
        return out
    out.peak_mb = float(result.get("peak_mb") or 0.0)
    out.peak_vm_mb = float(result.get("peak_vm_mb") or 0.0)
    out.stages = {k: float(v) for k, v in (result.get("stages") or {}).items()}
    if "parsed" in result:
        from rag.ingest.metadata import DocMeta
        from rag.models import Chunk

        p = result["parsed"]
        out.parsed = Parsed([Chunk.from_dict(c) for c in p["chunks"]], list(p["warnings"]), list(p["scanned_pages"]),
                            DocMeta.from_dict(p["meta"]))
    elif result.get("memory"):
        out.error = _memory_error(memory_mb)
    elif "skipped" in result:
        out.error = Skipped(str(result["skipped"]))
    elif "limit" in result:
        out.error = LimitExceeded(str(result["limit"]))
    else:
        out.error = LoadError(str(result.get("failed") or "处理出错（解析进程没有给出原因）"))
    return out


def _memory_error(memory_mb: int) -> LimitExceeded:
    return LimitExceeded(f"解析时内存超过上限（{memory_mb} MB），已终止，未索引；文件可能过大或结构异常，可拆分或另存后重新上传")


def _died(rc: int | None, tail: str, memory_mb: int, seconds: float) -> LoadError:
    """The reason for a child that gave no result."""
    if rc is not None and rc < 0 and -rc == getattr(signal, "SIGXCPU", -1):
        return LimitExceeded(f"解析超时：CPU 时间超过每个文件 {seconds:g} 秒的上限，已终止解析进程，未索引")
    crash = rc is not None and rc < 0 and -rc in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)
    if crash or any(s in tail for s in _MEMORY_SIGNS):
        return _memory_error(memory_mb)
    how = f"信号 {-rc}" if rc is not None and rc < 0 else f"退出码 {rc}"
    return LoadError(f"解析进程异常退出（{how}），未索引")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the child and what it started, nothing else
    except (ProcessLookupError, PermissionError, OSError):
        pass


# -- the child's side ---------------------------------------------------------------------------------
def _set_limits(memory_mb: int, seconds: float) -> None:
    import resource

    def lower(which: int, soft: int) -> None:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        try:
            resource.setrlimit(which, (soft, hard))  # the soft limit only: a converter it starts may raise it
        except (ValueError, OSError) as e:  # a platform without it: the timeout and the limits still hold
            print(f"kexie parse worker: setrlimit({which}) failed: {e}", file=sys.stderr)

    lower(resource.RLIMIT_AS, memory_mb * limits.MB)
    lower(resource.RLIMIT_CPU, int(seconds + GRACE_SECONDS))


def _status_mb(key: str) -> float:
    """A /proc/self/status figure in MB: VmHWM (peak resident since exec; ru_maxrss would include the
    forked parent's) or VmPeak (peak address space, what RLIMIT_AS bounds)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _near_ceiling(memory_mb: int) -> bool:
    """Whether the address space came near the ceiling: libraries report a failed allocation in their
    own words (lxml: "XMLSyntaxError: unknown error"), so an error after the peak passed half the
    ceiling counts as running out of memory (a damaged file fails long before that)."""
    return _status_mb("VmPeak") > memory_mb / 2


def _is_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(s in str(e) for s in _MEMORY_SIGNS)


def main() -> None:
    result_fd = os.dup(1)
    os.dup2(2, 1)  # what libraries print goes to stderr; the result has its own descriptor
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    limits.apply(request.get("limits") or {})
    memory_mb = int(request["memory_mb"])
    _set_limits(memory_mb, float(request["seconds"]))
    if os.environ.get("KEXIE_FAULT") == "parse_hang":  # tests: a parser stuck where no clock is checked
        time.sleep(3600)
    from rag.ingest.loaders import Skipped

    stages: dict[str, float] = {}
    try:
        p = parse_file(Path(request["path"]), request["source"], ocr=request["ocr"], chunk_size=request["chunk_size"],
                       chunk_overlap=request["chunk_overlap"], seconds=request["seconds"], stages=stages)
        result = {"parsed": {"chunks": [c.to_dict() for c in p.chunks], "warnings": p.warnings,
                             "scanned_pages": list(p.scanned_pages), "meta": p.meta.to_dict()}}
        del p
    except MemoryError:
        result = {"memory": True}
    except Skipped as e:
        result = {"skipped": str(e)}
    except LimitExceeded as e:
        result = {"limit": str(e)}
    except LoadError as e:
        result = {"memory": True} if _is_memory(e) or _near_ceiling(memory_mb) else {"failed": str(e)}
    except Exception as e:  # a loader bug must not lose the reason
        failed = {"failed": f"处理出错（{type(e).__name__}: {str(e)[:300]}）"}
        result = {"memory": True} if _is_memory(e) or _near_ceiling(memory_mb) else failed
    result["stages"] = stages
    result["peak_mb"] = _status_mb("VmHWM")
    result["peak_vm_mb"] = _status_mb("VmPeak")
    try:
        data = json.dumps(result, ensure_ascii=False).encode("utf-8")
    except MemoryError:
        data = json.dumps({"memory": True, "peak_mb": _status_mb("VmHWM")}).encode("utf-8")
    with os.fdopen(result_fd, "wb") as out:
        out.write(data)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no teardown of what the parse left in memory


if __name__ == "__main__":
    main()
