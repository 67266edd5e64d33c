"""A local GGUF model in a child process, so that a crash in llama.cpp's native code (a bad kernel,
a broken file, running out of memory) becomes an error message here instead of killing the server.

The parent sends one request at a time over a pipe and reads tokens back; a worker that died is
reported once (`LLMUnavailable`, with the signal) and started again on the next question.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kexie.llm")

LOAD_TIMEOUT = 300.0  # seconds to load a GGUF (a 7B Q4 model reads ~4 GB)
FIRST_TOKEN_TIMEOUT = 600.0  # reading a long prompt with a 7B model on two cores takes minutes


class WorkerError(Exception):
    """The worker reported an error (kind, message) or died."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "load" | "context" | "died" | "error"


@dataclass(frozen=True)
class LocalConfig:
    path: str
    n_ctx: int
    n_threads: int  # 0 = llama.cpp's default
    max_tokens: int
    temperature: float


def _worker_main(conn, cfg: LocalConfig) -> None:  # runs in the child
    try:
        from llama_cpp import Llama

        llm = Llama(model_path=cfg.path, n_ctx=cfg.n_ctx, n_batch=512, n_threads=cfg.n_threads or None, verbose=False)
    except ImportError as e:
        conn.send(("error", "import", str(e)))
        return
    except Exception as e:
        conn.send(("error", "load", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None, None))
    while True:
        try:
            req = conn.recv()
        except EOFError:
            return
        op = req[0]
        if op == "stop":
            return
        if op == "context":  # what the engine evaluated last: the templated prompt and the reply (tests)
            ids = llm.input_ids[: llm.n_tokens].tolist()
            conn.send(("context", llm.detokenize(ids, special=True).decode("utf-8", "replace"), None))
            continue
        messages, fault = req[1], req[2]
        if fault == "llm_decode":  # crash-safety tests: die the way a bad native kernel does
            os.kill(os.getpid(), signal.SIGSEGV)
        if fault == "llm_hang":  # ... or hang in native code
            import time

            time.sleep(3600)
        try:
            stream = llm.create_chat_completion(
                messages=messages, stream=True, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                repeat_penalty=1.0,  # citations and figures legitimately repeat the passages' words
            )
            for part in stream:
                piece = part["choices"][0].get("delta", {}).get("content")
                if piece:
                    conn.send(("token", piece, None))
            conn.send(("done", None, None))
        except ValueError as e:
            kind = "context" if "context window" in str(e) else "error"
            conn.send(("error", kind, str(e)))
        except Exception as e:
            conn.send(("error", "error", f"{type(e).__name__}: {e}"))


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"信号 {signal.Signals(-code).name}"
        except ValueError:
            return f"信号 {-code}"
    return f"退出码 {code}"


class LocalModel:
    """One GGUF in one worker process; `lock` serialises questions (one llama.cpp context)."""

    starts = 0  # worker processes started by all instances (tests check one build per key)

    def __init__(self, cfg: LocalConfig):
        self.cfg = cfg
        self.lock = threading.Lock()
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process that holds OpenMP threads and sockets
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, self.cfg), daemon=True, name="kexie-gguf")
        proc.start()
        child.close()
        LocalModel.starts += 1
        try:
            if not parent.poll(LOAD_TIMEOUT):
                raise WorkerError("load", f"加载超过 {LOAD_TIMEOUT:.0f} 秒")
            try:
                status, kind, msg = parent.recv()
            except EOFError:
                proc.join(5)
                raise WorkerError("died", f"本地模型进程在加载时异常退出（{_death(proc.exitcode)}）") from None
            if status != "ready":
                raise WorkerError(kind, msg)
        except BaseException:
            parent.close()  # a failed start leaves neither a descriptor nor a process behind
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            raise
        self._proc, self._conn = proc, parent

    def ensure_started(self) -> None:
        if self._proc is None or not self._proc.is_alive():
            self._reset()
            self._start()

    def _reset(self) -> None:
        conn, proc = self._conn, self._proc
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5)

    def _request(self, msg: tuple, first_wait: float = FIRST_TOKEN_TIMEOUT, wait: float = FIRST_TOKEN_TIMEOUT) -> Iterator[tuple]:
        """Send one request and yield its replies; a worker silent for longer than the wait is killed
        (a hang in native code must not hold the model's lock forever)."""
        self.ensure_started()
        try:
            self._conn.send(msg)
            limit = first_wait
            while True:
                if not self._conn.poll(limit):
                    self._reset()
                    raise WorkerError("timeout", f"本地模型 {limit:.0f} 秒没有输出，已停止")
                yield self._conn.recv()
                limit = wait
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            proc = self._proc
            if proc is not None:
                proc.join(5)
            code = proc.exitcode if proc is not None else None
            self._reset()  # the next question starts a new worker
            raise WorkerError("died", f"本地模型进程异常退出（{_death(code)}）") from None

    def stream(self, messages: list[dict], token_timeout: float = FIRST_TOKEN_TIMEOUT) -> Iterator[str]:
        """Tokens of the reply to chat `messages` ([{"role", "content"}]); WorkerError on failure.
        `token_timeout`: the longest pause between two tokens (the first may take FIRST_TOKEN_TIMEOUT)."""
        finished = False
        try:
            # KEXIE_FAULT=llm_decode (tests) makes the worker crash on this request, as a bad kernel would.
            msg = ("chat", messages, os.environ.get("KEXIE_FAULT"))
            for status, a, b in self._request(msg, max(FIRST_TOKEN_TIMEOUT, token_timeout), token_timeout):
                if status == "token":
                    yield a
                elif status == "done":
                    finished = True
                    return
                elif status == "error":
                    finished = True
                    raise WorkerError(a, b)
        finally:
            if not finished:
                # Abandoned mid-reply (the user left): the rest of it is still coming down the pipe and
                # would be read as the next answer. A fresh worker is cheaper than a wrong answer.
                self._reset()

    def evaluated_text(self) -> str:
        """The text the engine evaluated for the last reply (prompt and answer, special tokens kept)."""
        for status, a, _ in self._request(("context",)):
            return a
        return ""

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(("stop",))
                self._proc.join(5)
            except OSError:
                pass
        self._reset()


def local_config(path: Path, ep) -> LocalConfig:
    """The worker's configuration from an `LLMEndpoint`."""
    return LocalConfig(str(path), ep.gguf_context, ep.gguf_threads, ep.max_tokens, ep.temperature)
