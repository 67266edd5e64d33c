"""The package's import arrows run one way, ingest → index → search → answer → evaluate → serve → cli, over a
base (models, settings, e5) that imports no stage, and the language rules (rag.lang) below all of them; nothing in rag/ imports the evals/ data folder; and
no two modules import each other at load time, directly or round a circle. Read from the source (ast), so
imports inside functions count for the direction (they still couple) but not for circles (they break them)."""

from __future__ import annotations

import ast

from conftest import PROJECT_ROOT

ORDER = ["ingest", "index", "search", "answer", "evaluate", "serve", "cli"]
BASE = -1
LANG = -2  # rag.lang: the language rules, below everything (models and settings included)


def rank(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "rag":
        return None
    if len(parts) > 1 and parts[1] == "lang":
        return LANG
    return ORDER.index(parts[1]) if len(parts) > 1 and parts[1] in ORDER else BASE


def modules() -> dict[str, ast.Module]:
    out = {}
    for p in sorted((PROJECT_ROOT / "rag").rglob("*.py")):
        name = ".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(p.read_text(encoding="utf-8"))
    return out


def imported(node: ast.AST, known: set[str]) -> list[str]:
    """The rag modules (or packages) an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
    return []


def top_level(tree: ast.Module):
    """Import statements run when the module loads (not in functions, not under `if TYPE_CHECKING`)."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            yield from (n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom)))
        elif isinstance(node, ast.Try):
            yield from (n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom)))


def test_arrows_point_down_the_stages():
    mods = modules()
    wrong = []
    for name, tree in mods.items():
        here = rank(name)
        for node in ast.walk(tree):
            for target in imported(node, set(mods)):
                if target.split(".")[0] == "evals":
                    wrong.append(f"{name} -> {target} (evals/ holds data only)")
                there = rank(target)
                if there is not None and there > here:
                    wrong.append(f"{name} -> {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    mods = modules()
    graph = {name: {t for node in top_level(tree) for t in imported(node, set(mods)) if t in mods and t != name}
             for name, tree in mods.items()}
    # A module importing its own package's __init__ (rag.x.y -> rag.x) is Python's normal order, not a circle.
    graph = {v: {w for w in ws if not v.startswith(w + ".")} for v, ws in graph.items()}
    assert cycles(graph) == []


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert rank("rag.search.fusion") > rank("rag.index.bm25") > rank("rag.models") > rank("rag.lang.text")
    assert rank("rag.serve.web") > rank("rag.evaluate.runner") > rank("rag.answer.assistant")
