"""The language rules of Chinese reports and policy texts, each in one place with its own table test
(tests/unit/lang/, including the cases where it must not fire). Rule modules are leaves: they import
nothing from the project but each other.

`fingerprint` hashes the rule tables of the modules an index depends on, so the index records which rules
built it and is rebuilt when one of them changes, without anyone remembering to bump a version."""

from __future__ import annotations

import hashlib
import re
from types import ModuleType


def _canon(value) -> str | None:
    """A stable text form of a rule table (patterns, words, numbers); None for what is not one."""
    if isinstance(value, re.Pattern):
        return f"re({value.pattern!r},{value.flags})"
    if isinstance(value, (str, int, float, bool)):
        return repr(value)
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(_canon(v) or "?" for v in value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canon(v) or "?" for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(sorted(f"{_canon(k)}:{_canon(v)}" for k, v in value.items())) + "}"
    return None


def fingerprint(*modules: ModuleType) -> str:
    """12 hex digits over every rule table the modules define at top level (their functions are not read:
    a change of logic still needs its consumer's version bumped)."""
    h = hashlib.sha1()
    for mod in sorted(modules, key=lambda m: m.__name__):
        for name in sorted(vars(mod)):
            if name.startswith("__"):
                continue
            text = _canon(vars(mod)[name])
            if text is not None:
                h.update(f"{mod.__name__}.{name}={text}\n".encode("utf-8"))
    return h.hexdigest()[:12]
