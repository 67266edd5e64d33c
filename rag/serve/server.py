"""One process, one port: the HTTP API (rag/serve/api.py) and the Gradio page mounted at "/", run by uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
from starlette.routing import Mount

from rag.serve.api import build_api
from rag.serve.guard import FileOwners, Gate, Throttle, private_dirs
from rag.serve.kbs import Registry
from rag.serve.links import Signer
from rag.serve.web import CSS, HEAD, server_address
from rag.settings import Settings


def make_app(settings: Settings, demo: gr.Blocks, registry: Registry, signer: Signer) -> FastAPI:
    """The API routes first, then the page at "/" (a mount at "/" would otherwise answer every path),
    behind the Gate (rag/serve/guard.py)."""
    app = build_api(settings, registry, signer)
    demo.queue(default_concurrency_limit=8)
    host, port = server_address(settings)
    app = gr.mount_gradio_app(
        app, demo, path="/", server_name=host, server_port=port,
        auth=list(settings.logins().items()) or None,
        # Only the page's own outputs (exports, eval downloads) may leave through Gradio; corpus files go
        # through /files with a signed link. Secrets and every base's files are never servable.
        allowed_paths=[str(private_dirs(settings.data_root)["exports"])],
        blocked_paths=blocked_paths(settings),
        max_file_size=f"{settings.max_file_mb}mb",
        css=CSS, head=HEAD, show_error=False,
        footer_links=[],  # Gradio's own footer (API docs, "built with Gradio", runs) is not for staff
    )
    # Gradio checks that a file named in a request was uploaded only once its app "has launched", which a
    # mounted app never does (gradio #11162): say it has, so its own check runs behind the Gate's.
    demo.has_launched = True
    mounted = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == "")
    # Failed logins: 10 free per user name; 30 per address (an office behind one proxy shares it).
    app.add_middleware(Gate, gradio_app=lambda: mounted, owners=getattr(demo, "kexie_owners", None) or FileOwners(),
                       users=Throttle(), addresses=Throttle(free=30), logins_on=bool(settings.logins()))
    return app


def blocked_paths(settings: Settings) -> list[str]:
    """What Gradio must never serve, whatever else allows it."""
    from rag.settings import find_config

    root = settings.data_root
    out = [root / "link.key", root / "kexie.db", root / "kbs", root / "evals", root / "recycle", settings.corpus_dir,
           settings.index_dir, settings.faq_root]
    config = find_config()
    if config:
        out.append(Path(config))
    return [str(Path(p).resolve()) for p in out]


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Running:
    """A server started with block=False: `.url`, `.close()`."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str):
        self.server, self.thread, self.url = server, thread, url

    def close(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve(settings: Settings, demo: gr.Blocks, registry: Registry, signer: Signer, block: bool = True):
    """Run the app on server_address(settings); block=False: in a daemon thread, once the port answers."""
    host, port = server_address(settings)
    app = make_app(settings, demo, registry, signer)
    # log_config=None: uvicorn logs through the app's handlers (secrets masked); no access log (it would hold
    # the signed file links' tokens).
    config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3, lifespan="on")
    server = uvicorn.Server(config)
    if block:
        server.run()
        return None
    thread = threading.Thread(target=server.run, name="kexie-http", daemon=True)
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.started and _answers(host, port):
            return Running(server, thread, url_of(host, port))
        if not thread.is_alive():
            raise RuntimeError(f"服务未能启动（端口 {port} 可能已被占用）")
        time.sleep(0.05)
    server.should_exit = True
    raise RuntimeError(f"服务在 60 秒内未能启动：{url_of(host, port)}")


def _answers(host: str, port: int) -> bool:
    connect = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((connect, port), timeout=1):
            return True
    except OSError:
        return False
