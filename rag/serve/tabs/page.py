"""What every tab of the page shares: the bases, saved conversations, files made for a user, who is asking."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import gradio as gr

from rag.answer.assistant import Assistant
from rag.serve.guard import FileOwners, private_dirs
from rag.serve.history import History
from rag.serve.kbs import KB, Registry
from rag.serve.links import Signer
from rag.settings import Settings

# The question box while it takes a question, and while an answer is being written (locked, and says so).
READY = {"interactive": True, "placeholder": "请输入问题，例如：什么是四服务一加强"}
BUSY = {"interactive": False, "placeholder": "正在回答上一个问题，请稍候…"}


def browser_id(request: gr.Request | None) -> str:
    """The browser's id from its cookie (set by HEAD's script): conversations per browser with login off."""
    # Starlette's parser: one malformed cookie of another app on this host does not hide ours.
    cookies = getattr(getattr(request, "request", None), "cookies", None) or {}
    value = cookies.get("kexie_browser", "")
    if re.fullmatch(r"[0-9a-f]{32}", value):
        return value
    return f"session-{getattr(request, 'session_hash', None) or 'none'}"  # a client without cookies: this session only


def user_of(request: gr.Request | None) -> str | None:
    """The logged-in user (None with login off)."""
    return getattr(request, "username", None) or None if request is not None else None



class Page:
    """The page's services, made once per app, and the per-request questions every tab asks of them."""

    def __init__(self, settings: Settings, assistant: Assistant | None = None, registry: Registry | None = None,
                 signer: Signer | None = None, quota=None):
        self.settings = settings
        self.registry = registry = registry or Registry(settings, assistant=assistant)
        self.signer = signer or Signer(settings.data_root)
        self.saved = History(registry.db)
        dirs = private_dirs(settings.data_root)
        # Gradio's upload folder is one per process, read from the environment: the first app's private one (or the
        # operator's own choice), made private too.
        if os.environ.get("GRADIO_TEMP_DIR"):
            dirs.pop("cache")  # the operator's folder: theirs to protect
        else:
            os.environ["GRADIO_TEMP_DIR"] = str(dirs["cache"])
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        self.exports = dirs["exports"]

        def may_read(user: str, kb_id: str) -> bool:
            base = registry.by_id(kb_id)
            return base is not None and registry.allowed(user or None, base)

        self.owners = FileOwners(may_read)
        self.quota = quota

    def made_for(self, request, path: Path) -> str:
        """A file produced for this user: only they may fetch it (through Gradio's cache)."""
        self.owners.add(path, user_of(request) or "")
        return str(path)

    def owner(self, request) -> str:
        user = user_of(request)
        return f"user:{user}" if user else f"browser:{browser_id(request)}"

    def is_admin(self, request) -> bool:
        user = user_of(request)
        return not self.settings.logins() or user == self.settings.auth_user

    def kb_choices(self, request) -> list[tuple[str, str]]:
        """The bases this user may see: shown by name, chosen by id (a name is only a label)."""
        return [(b.name, b.id) for b in self.registry.visible(user_of(request))]

    def kb_lists(self, request, value=None):
        ids = [i for _, i in self.kb_choices(request)]
        return gr.update(choices=self.kb_choices(request), value=value if value in ids else (ids[0] if ids else None))

    def linker(self, user, base: KB):
        return lambda source: self.signer.url(user, base.id, source)

    def conv_choices(self, own: str) -> list[tuple[str, str]]:
        return [(f"{c.title} · {time.strftime('%m-%d %H:%M', time.localtime(c.updated))}", c.id)
                for c in self.saved.list(own)]

    def managed(self, kb_id, request, change: bool = False) -> tuple[KB, Settings, Assistant]:
        """The base chosen in the KB tab (its id): to look at (granted), or to change (`change`: its creator or
        the admin)."""
        user = user_of(request)
        base = self.registry.managed(kb_id or None, user) if change else self.registry.get(kb_id or None, user)
        return base, self.registry.settings_for(base), self.registry.assistant(base)


@dataclasses.dataclass
class Confirm:
    """A confirmation for a destructive action: hidden until asked, names what will be removed."""

    box: gr.Group
    text: gr.Markdown
    yes: gr.Button
    target: gr.State  # what the question named: deleting it is what 确认删除 does, whatever was picked since

    @property
    def outputs(self) -> list:
        return [self.box, self.target]

    @staticmethod
    def close():
        return gr.update(visible=False), None


def confirm_box(elem_id: str) -> Confirm:
    with gr.Group(visible=False, elem_id=elem_id) as box:
        text = gr.Markdown()
        with gr.Row():
            yes = gr.Button("确认删除", variant="stop", size="sm", elem_id=f"{elem_id}-yes")
            no = gr.Button("取消", size="sm", elem_id=f"{elem_id}-no")
    c = Confirm(box, text, yes, gr.State(None))
    no.click(Confirm.close, None, c.outputs)
    return c

