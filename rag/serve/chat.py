"""The chat use case under the page and the API: a question to one or several knowledge bases, each checked
against what the caller may read, answered by that base's assistant; several bases give the best-supported
answer with the passages fused across them (rag/serve/multi.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from rag.models import Answer, Hit
from rag.serve.kbs import KB, Registry
from rag.serve.multi import ask_many
from rag.settings import LLMEndpoint, Settings


class EndpointRefused(ValueError):
    """A typed LLM endpoint the admin has not allowed (settings.llm_allowed_urls)."""


def endpoint_settings(settings: Settings, base_url: str, model: str, api_key: str) -> LLMEndpoint:
    """The model endpoint typed in the page: the configured one or one the admin allowed, never any
    other host (the server would make requests for the user). The configured API key goes only to the
    configured endpoint: a typed URL gets the key typed with it, or none."""
    url = (base_url or "").strip() or settings.llm_base_url
    allowed = {u.strip().rstrip("/") for u in (settings.llm_base_url, *settings.llm_allowed_urls) if u.strip()}
    if url.rstrip("/") not in allowed:
        raise EndpointRefused("该接口地址未被管理员允许（管理员可在 kexie.toml 的 llm_allowed_urls 中添加）")
    same = url.rstrip("/") == settings.llm_base_url.rstrip("/")
    key = (api_key or "").strip() or (settings.llm_api_key if same else "")
    return settings.llm_endpoint(base_url=url, model=(model or "").strip() or settings.llm_model, api_key=key)


@dataclasses.dataclass
class Options:
    """This question's choices; None: the settings' own."""

    k: int | None = None
    mode: str | None = None
    backend: str | None = None
    llm: LLMEndpoint | None = None  # the typed endpoint (endpoint_settings)

    @classmethod
    def chosen(cls, settings: Settings, opts: dict) -> "Options":
        """The page's applied settings; an endpoint no longer allowed falls back to the configured one."""
        try:
            llm = endpoint_settings(settings, opts.get("base_url", ""), opts.get("model", ""), opts.get("api_key", ""))
        except EndpointRefused:  # settings changed since they were applied: the configured endpoint
            llm = settings.llm_endpoint()
        return cls(opts.get("k"), opts.get("mode"), opts.get("backend"), llm)


@dataclasses.dataclass
class Reply:
    """An answer (partial while it streams) and where it comes from."""

    answer: Answer
    base: KB  # the base whose answer it is
    bases: list[KB]  # every base asked
    fused: list[tuple[KB, Hit]] | None = None  # several bases: their passages in one ranking


def open_bases(registry: Registry, user: str | None, keys: list[str | None]) -> list[KB]:
    """The bases named (ids or names; none: the first this user may read), every one checked for this user:
    KBError if any is unknown or not theirs to read."""
    bases = [registry.get(k or None, user) for k in keys] or [registry.get(None, user)]
    return list({b.id: b for b in bases}.values())


def ask_stream(registry: Registry, user: str | None, keys: list[str | None], question: str,
               history: list[tuple[str, str]], options: Options | None = None) -> Iterator[Reply]:
    """Partial replies while one base's answer streams, the final one last (several bases: that one only)."""
    bases = open_bases(registry, user, keys)
    o = options or Options()
    kw = {"k": o.k, "mode": o.mode, "llm": o.llm}
    if len(bases) == 1:
        for a in registry.assistant(bases[0]).ask_stream(question, history, o.backend, **kw):
            yield Reply(a, bases[0], bases)
        return
    best, base, fused = ask_many(registry, bases, question, history, backend=o.backend, **kw)
    yield Reply(best, base, bases, fused)


def ask(registry: Registry, user: str | None, keys: list[str | None], question: str,
        history: list[tuple[str, str]], options: Options | None = None) -> Reply:
    reply = None
    for reply in ask_stream(registry, user, keys, question, history, options):
        pass
    assert reply is not None
    return reply
