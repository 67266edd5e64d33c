"""The gate in front of the Gradio page (one ASGI middleware): who is asking, which files they may name or
fetch, whose session a session id is, and how fast passwords may be guessed.

Gradio checks that a file named in a request was uploaded only when its app "has launched", which a page
mounted on FastAPI never does, and it serves any file in its cache to anyone who knows the path. So every
file the page handles is owned: uploads by the user whose upload returned them, outputs by the user whose
handler made them. A request that names a file it does not own, or fetches one, is refused here, before
Gradio sees it."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request, cookie_parser

log = logging.getLogger("kexie.guard")

MAX_EVENT_BODY = 8 * 1024 * 1024  # a page event (question, settings, file references): never a document
# Both spellings of Gradio's file route: "file=<path>" and the older "file/<path>".
FILE_ROUTES = ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/file/")
UPLOAD_ROUTES = ("/gradio_api/upload", "/upload")
LOGIN_ROUTES = ("/login", "/login/")
OWN_ROUTES = ("/v1/", "/api/", "/files/", "/view/")  # the HTTP API: its own keys, limits and signed links


def _norm(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def private_dirs(data_root: Path) -> dict[str, Path]:
    """The page's own folders under the data directory: Gradio's upload cache and the exports."""
    return {"cache": Path(data_root) / "gradio-cache", "exports": Path(data_root) / "exports"}


class FileOwners:
    """The files each user may name in a request or fetch: their uploads and what was made for them,
    the latter optionally tied to a knowledge base (a withdrawn grant withdraws its downloads too).

    With login off every caller is the one office ("") and shares these files; no caller, in any mode,
    reaches a file the page did not receive or produce."""

    def __init__(self, may_read: Callable[[str, str], bool] | None = None, limit: int = 100_000):
        self._owners: OrderedDict[str, dict[str, str | None]] = OrderedDict()  # path -> {owner: kb id or None}
        self._lock = threading.Lock()
        self.may_read = may_read or (lambda user, kb_id: True)
        self.limit = limit

    def add(self, path: str | Path, owner: str, kb_id: str | None = None) -> None:
        p = _norm(str(path))
        with self._lock:
            self._owners.setdefault(p, {})[owner] = kb_id
            self._owners.move_to_end(p)
            while len(self._owners) > self.limit:  # the oldest entries go first; their files are cleaned anyway
                self._owners.popitem(last=False)

    def owns(self, path: str | Path, owner: str) -> bool:
        with self._lock:
            entry = self._owners.get(_norm(str(path)), {})
            if owner not in entry:
                return False
            kb_id = entry[owner]
        return kb_id is None or self.may_read(owner, kb_id)

    def alias(self, source: str | Path, copy: str | Path) -> None:
        """Gradio copied `source` into its cache as `copy`: the copy belongs to the source's owners only."""
        with self._lock:
            owners = dict(self._owners.get(_norm(str(source)), {}))
        for o, kb_id in owners.items():
            self.add(copy, o, kb_id)


def protect_output(component, owners: FileOwners):
    """A gr.File output whose cached copies belong to whoever the handler made the original for (Gradio
    copies outputs with the sync or the async method, depending on the path it takes)."""
    move, amove = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    def moved(url_or_file_path):
        cached = move(url_or_file_path)
        if cached is not None and url_or_file_path is not None:
            owners.alias(url_or_file_path, cached)
        return cached

    async def amoved(url_or_file_path):
        cached = await amove(url_or_file_path)
        if cached is not None and url_or_file_path is not None:
            owners.alias(url_or_file_path, cached)
        return cached

    component.move_resource_to_block_cache = moved
    component.async_move_resource_to_block_cache = amoved
    return component


class Throttle:
    """Failed attempts per key (a user name, a client address): after `free` failures each further one
    locks the key for twice as long as the last, up to `longest` seconds. A success clears the key."""

    def __init__(self, free: int = 10, first: float = 1.0, longest: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.free, self.first, self.longest, self.clock = free, first, longest, clock
        self._state: dict[str, tuple[int, float]] = {}  # key -> (failures, locked until)
        self._lock = threading.Lock()

    def wait(self, *keys: str) -> float:
        """Seconds until any of these keys may try again (0: now)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [until - now for k in keys if (s := self._state.get(k)) and (until := s[1]) > now])

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._state) > 100_000:  # forget keys whose lock ran out
                self._state = {k: v for k, v in self._state.items() if v[1] > now}
            for k in keys:
                n = self._state.get(k, (0, 0.0))[0] + 1
                lock = 0.0 if n <= self.free else min(self.longest, self.first * 2 ** (n - self.free - 1))
                self._state[k] = (n, now + lock)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._state.pop(k, None)

    def refund(self, key: str) -> None:
        """Take back one failure counted in advance (the attempt succeeded); the lock already set stays."""
        with self._lock:
            n, until = self._state.get(key, (0, 0.0))
            if n > 1:
                self._state[key] = (n - 1, until)
            else:
                self._state.pop(key, None)


def client_address(scope) -> str:
    """The caller's address: every loopback address is one caller (127.0.0.2 is not a second machine), and
    an IPv6 caller is its /64 (one machine holds a whole /64)."""
    host = (scope.get("client") or ("", 0))[0] or ""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if ip.is_loopback:
        return "loopback"
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip)


def wait_message(seconds: float) -> str:
    s = int(seconds) + 1
    return f"尝试次数过多，已暂时锁定，请 {s} 秒后再试" if s < 120 else f"尝试次数过多，已暂时锁定，请 {s // 60 + 1} 分钟后再试"


class Gate:
    """ASGI middleware: file ownership, session binding and login throttling for the mounted Gradio app.

    Failed logins are counted per user name (`users`) and per client address (`addresses`, never cleared by
    another account's success, so logging in as oneself does not buy more guesses at someone else)."""

    def __init__(self, app, gradio_app: Callable[[], object], owners: FileOwners, users: Throttle,
                 addresses: Throttle, logins_on: bool):
        self.app, self.gradio_app, self.owners, self.logins_on = app, gradio_app, owners, logins_on
        self.users, self.addresses = users, addresses
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    # -- who -------------------------------------------------------------------------------
    def user(self, scope) -> str:
        """The logged-in user from Gradio's own login cookie, read with the parser Gradio uses; "" with
        login off or before login."""
        if not self.logins_on:
            return ""
        app = self.gradio_app()
        raw = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie"), "")
        jar = cookie_parser(raw)
        cid = getattr(app, "cookie_id", "")
        tokens = getattr(app, "tokens", {})
        for name in (f"access-token-{cid}", f"access-token-unsecure-{cid}"):
            if (u := tokens.get(jar.get(name))):
                return u
        return ""

    def bind(self, session_hash: str, user: str) -> bool:
        """A session id belongs to the user who first used it; another user's events on it are refused.
        With logins on, only logged-in users claim ids (an anonymous flood cannot push real ones out)."""
        if not session_hash:
            return True
        with self._lock:
            owner = self._sessions.get(session_hash)
            if owner is None or (owner == "" and user):  # unclaimed, or used before its login: the user's now
                if user or not self.logins_on:
                    self._sessions[session_hash] = user
                    while len(self._sessions) > 100_000:
                        self._sessions.popitem(last=False)
                return True
            self._sessions.move_to_end(session_hash)
            return owner == user

    # -- the middleware --------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")  # already percent-decoded by the server
        if path.startswith(OWN_ROUTES):
            return await self.app(scope, receive, send)
        user = self.user(scope)
        if path in LOGIN_ROUTES and scope["method"] == "POST":
            return await self._login(scope, receive, send)
        for prefix in FILE_ROUTES:
            if path.startswith(prefix):
                target = path[len(prefix):]
                if not self.owners.owns(target, user):
                    log.warning("refused a file not owned by %r: %s", user, target)
                    return await _reply(send, 403, {"detail": "无权访问该文件"})
                return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        hashes = query.get("session_hash", [])
        if "/heartbeat/" in path:
            hashes.append(path.rsplit("/", 1)[-1])
        if not all(self.bind(h, user) for h in hashes):
            return await _reply(send, 403, {"detail": "会话不属于当前用户"})
        if path in UPLOAD_ROUTES:
            return await self._upload(scope, receive, send, user)
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            return await self._event(scope, receive, send, user)
        return await self.app(scope, receive, send)

    async def _event(self, scope, receive, send, user: str):
        """Every page event is JSON (read as Gradio reads it: any encoding json.loads accepts); one that is
        not, or that names a file this user does not own, or another user's session, is refused."""
        body = await _read_body(receive, MAX_EVENT_BODY)
        if body is None:
            return await _reply(send, 413, {"detail": "请求过大"})
        if body.strip():
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return await _reply(send, 400, {"detail": "请求格式有误：应为 JSON"})
            if isinstance(data, dict) and not self.bind(str(data.get("session_hash") or ""), user):
                return await _reply(send, 403, {"detail": "会话不属于当前用户"})
            for p in _file_paths(data):
                if not self.owners.owns(p, user):
                    log.warning("refused a request naming a file not uploaded by %r: %s", user, p)
                    return await _reply(send, 403, {"detail": "请求中的文件不是当前用户上传的"})
        return await self.app(scope, _replay(body, receive), send)

    async def _upload(self, scope, receive, send, user: str):
        """Pass the upload through and make its files the uploader's."""
        status, chunks = 0, []

        async def capture(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        for p in json.loads(b"".join(chunks)):
                            self.owners.add(p, user)
                    except (ValueError, TypeError):
                        pass
            await send(message)

        return await self.app(scope, receive, capture)

    async def _login(self, scope, receive, send):
        body = await _read_body(receive, 64 * 1024)
        if body is None:
            return await _reply(send, 413, {"detail": "请求过大"})
        try:  # the user name exactly as Gradio's form parsing sees it (last value wins, urlencoded or multipart)
            form = await Request(scope, _replay(body, receive)).form()
            name = str(form.get("username") or "").strip()
        except Exception:
            name = ""
        user_key, addr_key = f"user:{name}", f"addr:{client_address(scope)}"
        wait = max(self.users.wait(user_key), self.addresses.wait(addr_key))
        if wait > 0:
            return await _reply(send, 429, {"detail": wait_message(wait)}, {"retry-after": str(int(wait) + 1)})
        # Counted before the password is checked, so parallel attempts cannot all slip in before the first failure.
        self.users.failed(user_key)
        self.addresses.failed(addr_key)

        async def watch(message):
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.users.succeeded(user_key)
                self.addresses.refund(addr_key)
            await send(message)

        return await self.app(scope, _replay(body, receive), watch)


def _file_paths(data) -> list[str]:
    """Every file a Gradio payload names: dicts with a "path" (FileData), wherever they are nested."""
    out, stack = [], [data]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            p = x.get("path")
            if isinstance(p, str) and p:
                out.append(p)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return out


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the app waiting for a disconnect gets the real one
    return again


async def _reply(send, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode()
    hdrs = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})
