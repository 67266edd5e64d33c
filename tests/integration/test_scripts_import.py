"""Every bench/ and train/ script imports: nothing else runs them on each change, and a moved module broke
one silently before (bench/bm25_compare.py imported `rag.store` long after it moved to `rag.index.store`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

CHECK = """
import importlib, json, sys, traceback
sys.path.insert(0, {root!r})
failed = {{}}
for name in {names!r}:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=2)
print(json.dumps(failed))
"""


@pytest.mark.slow
def test_every_bench_and_train_script_imports():
    names = sorted(f"{p.parent.name}.{p.stem}" for d in ("bench", "train") for p in (PROJECT_ROOT / d).glob("*.py")
                   if p.name != "__init__.py")
    assert "bench.bm25_compare" in names and "train.reader" in names
    run = subprocess.run([sys.executable, "-c", CHECK.format(root=str(PROJECT_ROOT), names=names)], capture_output=True,
                         text=True, timeout=600, cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    failed = json.loads(run.stdout.strip().splitlines()[-1])
    assert failed == {}, failed
