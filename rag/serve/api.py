"""The HTTP API served beside the web page (one port): OpenAI-compatible chat, search, ask, signed file links.

- `POST /v1/chat/completions`: `model` is a knowledge base id or name ("kexie" or none: the default base),
  or several joined by commas ("id1,id2": the best-supported answer of those bases, rag/serve/chat.py).
  The last user message is the question, earlier user/assistant pairs the conversation. The answer keeps
  its [n] markers; the extra top-level fields `citations` (as `kexie ask --json`), `refused`, `notice` and
  `kb` say where it comes from. Streaming (`stream: true`): `chat.completion.chunk` deltas as the answer
  grows, then a last chunk with `finish_reason: "stop"` and the same extra fields plus `answer` (the full
  verified text: an LLM's draft may be corrected after streaming, the `answer` field wins), then `[DONE]`.
- `GET /v1/models`: one model per knowledge base.
- `POST /api/search` {"query", "k"?, "kb"?, "doc"?, "in_force_on"?}: exactly what `kexie search --json` prints.
- `POST /api/ask` {"question", "history"?: [[q, a], …], "kb"?, "kbs"?: [id or name, …]}: exactly what
  `kexie ask --json` prints; given `kbs` (several bases), with `kb` added: the id of the base that answered.
- `GET /files/{kb_id}/{source}?t=TOKEN`: a corpus file behind a signed citation link (rag/serve/links.py).
- `GET /view/{kb_id}/{source}?t=TOKEN&c=…&s=…`: the cited passage in its document (rag/serve/viewer.py).

Keys: `Authorization: Bearer <key>` with a key from `api_keys`; required whenever keys are configured.
Without keys the API is open only while the app listens on loopback, else every call is refused. A key
may use every knowledge base. Each key (each client address when open) gets `api_rate_limit` requests a
minute. Errors are always `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    StreamingResponse,
)
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.lang.text import estimate_tokens
from rag.models import Answer
from rag.serve import chat as asking
from rag.serve import kb as kbfiles
from rag.serve import viewer
from rag.serve.guard import Throttle, client_address, wait_message
from rag.serve.kbs import KB, KBError, Registry
from rag.serve.links import Signer
from rag.settings import Settings

log = logging.getLogger("kexie.api")

DEFAULT_MODEL = "kexie"
MAX_QUESTION = 4000  # characters: a question, not a document


class ApiError(Exception):
    """An error answered as JSON: status, Chinese message, OpenAI-style type and code."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str = "",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers


def error_body(message: str, type_: str, code: str) -> dict:
    return {"error": {"message": message, "type": type_, "code": code or None}}


class RateLimiter:
    """At most `limit` requests per `window` seconds per key (sliding window, in memory, thread-safe)."""

    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._hits: dict[str, collections.deque] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def hit(self, key: str) -> float:
        """Count one request; 0 if allowed, else the seconds until the next one would be."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            if now - self._swept > self.window:  # forget idle clients, so the table stays small
                self._hits = {k: q for k, q in self._hits.items() if q and q[-1] > now - self.window}
                self._swept = now
            q = self._hits.setdefault(key, collections.deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.001, q[0] + self.window - now)
            q.append(now)
            return 0.0


def local_caller(request: Request) -> bool:
    """A caller on this machine, not through a proxy (X-Forwarded-For) and not by a rebound DNS name."""
    host = (request.headers.get("host", "").rsplit(":", 1)[0] if not request.headers.get("host", "").endswith("]")
            else request.headers.get("host", ""))
    return (bool(request.client) and is_loopback(request.client.host) and "x-forwarded-for" not in request.headers
            and (host.strip("[]") in ("localhost", "") or is_loopback(host)))


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- request bodies --------------------------------------------------------------------------
class Message(BaseModel):
    role: str
    content: str | list[dict] | None = None


class ChatBody(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False


class SearchBody(BaseModel):
    query: str
    k: int | None = Field(default=None, ge=1, le=100)
    kb: str | None = None
    doc: list[str] | None = None  # only these documents (file or title names), as `kexie search --doc`
    in_force_on: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")


class AskBody(BaseModel):
    question: str
    history: list[tuple[str, str]] = Field(default_factory=list)
    kb: str | None = None
    kbs: list[str] | None = Field(default=None, max_length=20)  # several bases: the best-supported answer


def _text(m: Message) -> str:
    if isinstance(m.content, list):  # OpenAI content parts: keep the text ones
        return "".join(str(p.get("text", "")) for p in m.content if p.get("type", "text") == "text")
    return m.content or ""


def conversation(messages: list[Message]) -> tuple[str, list[tuple[str, str]]]:
    """The question (the last message, a user's) and the earlier user/assistant pairs."""
    turns = [m for m in messages if m.role in ("user", "assistant")]  # system prompts do not steer the answer
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "最后一条消息必须是用户的问题（role 为 user）", code="invalid_messages")
    history, pending = [], None
    for m in turns[:-1]:
        if m.role == "user":
            pending = _text(m).strip()
        elif pending is not None:
            history.append((pending, _text(m).strip()))
            pending = None
    return _question(_text(turns[-1])), history


def _question(q: str) -> str:
    q = (q or "").strip()
    if not q:
        raise ApiError(400, "问题不能为空", code="empty_question")
    if len(q) > MAX_QUESTION:
        raise ApiError(400, f"问题过长（最多 {MAX_QUESTION} 字）", code="question_too_long")
    return q


_VALIDATION = {"missing": "缺少字段", "json_invalid": "不是有效的 JSON", "model_attributes_type": "应为 JSON 对象",
               "dict_type": "应为 JSON 对象", "list_type": "应为列表", "string_type": "应为字符串", "int_type": "应为整数",
               "int_parsing": "应为整数", "bool_type": "应为布尔值", "bool_parsing": "应为布尔值",
               "greater_than_equal": "超出范围", "less_than_equal": "超出范围", "too_short": "不能为空",
               "string_pattern_mismatch": "格式不对", "tuple_type": "应为 [问题, 回答]", "too_long": "项数过多"}


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = () if e.get("type") == "json_invalid" else e.get("loc", ())  # its loc is a character offset
        where = ".".join(str(x) for x in loc if x != "body") or "请求体"
        parts.append(f"{where}：{_VALIDATION.get(e.get('type', ''), '取值无效')}")
    return "请求格式有误：" + "；".join(dict.fromkeys(parts))


# -- the app ---------------------------------------------------------------------------------
class GuardedRoute(APIRoute):
    """Unexpected errors become the JSON 500 here, logged once (Starlette's last-resort handler re-raises
    to the server, which would log the traceback a second time)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request):
            try:
                return await handler(request)
            except (ApiError, StarletteHTTPException, RequestValidationError):
                raise
            except Exception as exc:
                return internal_error(request, exc)
        return guarded


def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("API %s %s failed: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return JSONResponse(error_body(_internal_message(exc), "server_error", "internal_error"), 500)


def build_api(settings: Settings, registry: Registry, signer: Signer) -> FastAPI:
    """The API routes and JSON error handlers; server.make_app mounts the page after them."""
    from rag.search.snapshot import IndexNotReady
    from rag.serve.web import server_address

    app = FastAPI(title="科协问答 API", docs_url=None, redoc_url=None, openapi_url=None)
    app.router.route_class = GuardedRoute
    keys = tuple(k for k in settings.api_keys if k)
    # Without keys: only a loopback listener, only without logins (the API would bypass the page's grants).
    open_ok = not keys and not settings.logins() and is_loopback(server_address(settings)[0])
    limiter = RateLimiter(settings.api_rate_limit)
    throttle = Throttle()  # failed keys per client address

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.type, exc.code), exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        messages = {404: "接口不存在", 405: "请求方法不支持"}
        return JSONResponse(error_body(messages.get(exc.status_code, "请求无效"), "invalid_request_error",
                                       str(exc.status_code)), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body(validation_message(exc), "invalid_request_error", "invalid_body"), 400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # errors outside a route (middleware)
        return internal_error(request, exc)

    def client(request: Request) -> str:
        """The caller (a key, or its address when the API is open); 401 or 429 otherwise."""
        addr = "addr:" + client_address(request.scope)
        if keys:
            wait = throttle.wait(addr)
            if wait > 0:  # guessing keys: locked out for a while, whatever key comes next
                raise ApiError(429, wait_message(wait), "rate_limit_error", "too_many_failures",
                               {"Retry-After": str(int(wait) + 1)})
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            match = next((k for k in keys if given and hmac.compare_digest(given.encode(), k.encode())), None)
            if match is None:
                throttle.failed(addr)
                raise ApiError(401, "API Key 无效或缺失：请在请求头中加入 Authorization: Bearer <API Key>",
                               "authentication_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"})
            throttle.succeeded(addr)
            who = "key:" + match
        elif open_ok and local_caller(request):
            who = "ip:" + client_address(request.scope)  # every loopback address is one caller
        else:
            raise ApiError(401, "未配置 API Key：只有应用只监听本机地址、未启用登录、且从本机直接访问（不经代理）时接口才开放。"
                                "请在 kexie.toml 中设置 api_keys，"
                                "或设置环境变量 KEXIE_API_KEYS=key1,key2 后重启", "authentication_error", "api_keys_not_configured",
                           {"WWW-Authenticate": "Bearer"})
        wait = limiter.hit(who)
        if wait:
            raise ApiError(429, f"请求过于频繁：每分钟最多 {settings.api_rate_limit} 次，请 {int(wait) + 1} 秒后再试",
                           "rate_limit_error", "rate_limit_exceeded", {"Retry-After": str(int(wait) + 1)})
        return who

    def base(key: str | None, model: bool = False) -> KB:
        """The knowledge base a request names (API keys may use every base)."""
        key = (key or "").strip()
        try:
            return registry.get(key or None, None)
        except KBError as e:
            if model and key == DEFAULT_MODEL:
                return registry.get(None, None)
            raise ApiError(404, str(e), code="model_not_found" if model else "kb_not_found") from None

    def model_bases(model: str | None) -> list[KB]:
        """The bases a chat `model` names: one id or name, else several joined by commas."""
        try:
            return [base(model, model=True)]
        except ApiError:
            if "," not in (model or ""):
                raise
        return [base(m, model=True) for m in model.split(",") if m.strip()]

    async def blocking(fn, *args):
        """Run the (blocking) retrieval or answer in a worker thread; known failures become JSON errors."""
        try:
            return await run_in_threadpool(fn, *args)
        except KBError as e:
            raise ApiError(404, str(e), code="kb_not_found") from None
        except IndexNotReady as e:
            raise ApiError(503, f"索引尚未就绪：{e}", "server_error", "index_not_ready") from None

    @app.get("/v1/models")
    async def models(who: str = Depends(client)):
        return {"object": "list", "data": [{"id": b.id, "object": "model", "created": 0, "owned_by": "kexie", "name": b.name}
                                           for b in registry.visible(None)]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, who: str = Depends(client)):
        question, history = conversation(body.messages)
        bases = model_bases(body.model)
        model_id = ",".join(b.id for b in bases)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        replies = asking.ask_stream(registry, None, [b.id for b in bases], question, history)
        done = object()
        answered = [bases[0]]  # the base of the latest answer

        def step():
            """The next answer (partial while it streams; its base noted in `answered`), `done` at the end."""
            r = next(replies, done)
            if r is done:
                return done
            answered[0] = r.base
            return r.answer

        first = await blocking(step)  # errors before the first byte get their status code
        if first is done:
            raise ApiError(500, "服务器内部错误（没有回答），请稍后再试或联系管理员", "server_error", "internal_error")

        asked = estimate_tokens(question) + sum(estimate_tokens(q) + estimate_tokens(a) for q, a in history)

        def extra(a: Answer) -> dict:
            """The fields beyond OpenAI's: where the answer comes from (for a refusal, the closest passages it
            announces, flagged as not supporting it), and `usage` as an estimate (rag.lang.text.estimate_tokens)."""
            cites = [c.to_json() for c in a.citations] or [{**c.to_json(), "supporting": False} for c in a.closest()]
            said = estimate_tokens(a.answer)
            usage = {"prompt_tokens": asked, "completion_tokens": said, "total_tokens": asked + said, "estimated": True}
            return {"citations": cites, "refused": a.refused, "notice": a.notice, "kb": answered[0].id, "usage": usage}

        if not body.stream:
            final = first
            while (a := await blocking(step)) is not done:
                final = a
            return {"id": cid, "object": "chat.completion", "created": created, "model": model_id,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": final.answer},
                                 "finish_reason": "stop"}], **extra(final)}

        def chunk(delta: dict, finish: str | None = None, **more) -> str:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        async def events():
            sent, last = "", first
            yield chunk({"role": "assistant", "content": ""})
            try:
                a = first
                while a is not done:
                    last, text = a, a.answer
                    if text.startswith(sent) and len(text) > len(sent):  # only what is new; a revised draft waits for `answer`
                        yield chunk({"content": text[len(sent):]})
                        sent = text
                    a = await run_in_threadpool(step)
            except Exception as e:  # headers are sent: the error goes in the stream (OpenAI clients raise it)
                if not isinstance(e, (KBError, ApiError)):
                    log.error("API chat stream failed: %s", type(e).__name__, exc_info=e)
                msg = e.message if isinstance(e, ApiError) else str(e) if isinstance(e, KBError) else _internal_message(e)
                yield f"data: {json.dumps(error_body(msg, 'server_error', 'internal_error'), ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"
                return
            yield chunk({}, "stop", answer=last.answer, **extra(last))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/search")
    async def search(body: SearchBody, who: str = Depends(client)):
        kb = base(body.kb)
        query = _question(body.query)

        def run() -> list[dict]:
            hits = registry.assistant(kb).retriever.search(query, body.k, documents=body.doc,
                                                             effective_on=body.in_force_on)
            return [h.to_json() for h in hits]
        return await blocking(run)

    @app.post("/api/ask")
    async def ask(body: AskBody, who: str = Depends(client)):
        bases = ([base(body.kb)] if body.kb or not body.kbs else []) + [base(k) for k in body.kbs or []]
        question = _question(body.question)

        def run() -> dict:
            reply = asking.ask(registry, None, [b.id for b in bases], question, list(body.history))
            return reply.answer.to_json() if body.kbs is None else {**reply.answer.to_json(), "kb": reply.base.id}
        return await blocking(run)

    def linked_file(kb_id: str, source: str, t: str) -> tuple[KB, Path]:
        """The base and corpus file a signed link names, checked again now (a grant may have been withdrawn)."""
        denied = ApiError(403, "链接无效、已过期或无权访问该文件", "permission_error", "forbidden")
        user = signer.verify(t, kb_id, source, logins_on=bool(settings.logins())) if t else None
        if user is None:
            raise denied
        kb = registry.by_id(kb_id)
        if kb is None or not registry.allowed(user or None, kb):
            raise denied
        try:
            path = kbfiles.resolve_in_corpus(registry.settings_for(kb), source)
        except kbfiles.UploadRejected:
            raise denied from None
        if not path.is_file():
            raise ApiError(404, f"文件已被删除或移动：{source}（知识库中已没有这个文件，可请管理员重新上传）", code="file_not_found")
        return kb, path

    def as_page(request: Request | None, e: ApiError):
        """A link opened in a browser (and every viewer error) gets a Chinese page, a program the JSON error."""
        if request is None or "text/html" in request.headers.get("accept", ""):
            title = "无法打开原文" if e.status == 403 else "文件不存在"
            return HTMLResponse(viewer.message_page(title, e.message), e.status, headers=VIEW_HEADERS)
        raise e

    @app.get("/files/{kb_id}/{source:path}")
    async def files(request: Request, kb_id: str, source: str, t: str = ""):
        try:
            _, path = linked_file(kb_id, source, t)
        except ApiError as e:
            return as_page(request, e)
        # Always a download: an uploaded HTML file must not run as a page of this site.
        return FileResponse(path, filename=path.name, content_disposition_type="attachment",
                            headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})

    @app.get("/view/{kb_id}/{source:path}")
    async def view(kb_id: str, source: str, t: str = "", c: str = "", s: str = ""):
        """The cited passage in its document (rag/serve/viewer.py), behind the download link's token."""
        try:
            kb, path = linked_file(kb_id, source, t)
        except ApiError as e:
            return as_page(None, e)

        def run() -> str:
            snap = registry.assistant(kb).retriever.snapshot()
            chunks = sorted((x for x in snap.chunks if x.source == source), key=lambda x: x.position)
            return viewer.render(path, source, chunks, c[:40], viewer.parse_spans(s))
        try:
            body = await blocking(run)
        except ApiError as e:
            return as_page(None, e)
        return HTMLResponse(body, headers=VIEW_HEADERS)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown(request: Request, rest: str):
        """A JSON error for any other /v1 or /api path (the page, mounted at "/", would answer it otherwise)."""
        path = request.url.path
        known = [r for r in app.routes if isinstance(r, APIRoute) and r.endpoint is not unknown and r.path_regex.match(path)]
        if known:
            raise ApiError(405, f"请求方法不支持：{request.method} {path}", code="method_not_allowed")
        raise ApiError(404, f"接口不存在：{path}", code="not_found")

    return app


# The viewer's page: no script, no outside requests, not framed by other sites.
VIEW_HEADERS = {"Content-Security-Policy": viewer.CSP + "; frame-ancestors 'self'", "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "private, no-store"}


def _internal_message(exc: BaseException) -> str:
    return f"服务器内部错误（{type(exc).__name__}），请稍后再试或联系管理员"

