"""The build files agree with each other (checked here because nothing else would notice a drift)."""

import re
import tomllib
from pathlib import Path

from conftest import PROJECT_ROOT


def test_the_background_llama_build_installs_the_local_llm_extra():
    """`make test` installs llama-cpp-python alone (LLAMA_SPEC), not the editable project with its extra."""
    extra = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    make = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    spec = re.search(r"^LLAMA_SPEC := (.+)$", make, re.M)
    assert spec and [spec.group(1).strip()] == extra["local-llm"]
    assert 'pip install -e ".[local-llm]"' not in make


def test_only_the_libraries_the_backend_loads_are_compiled():
    make = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    args = re.search(r"^LLAMA_CMAKE_ARGS \?=((?:.*\\\n)*.*)$", make, re.M).group(1)
    for flag in ("LLAVA_BUILD", "LLAMA_BUILD_TESTS", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_SERVER"):
        assert f"-D{flag}=OFF" in args, flag


def test_the_llama_tests_wait_for_the_background_build_only(tmp_path):
    import subprocess
    import sys
    import time

    from conftest import wait_for_local_llm_build

    pid_file = tmp_path / "local-llm.pid"
    build = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)", "make", "local-llm"])
    while b"local-llm" not in Path(f"/proc/{build.pid}/cmdline").read_bytes():  # until the child has exec'd
        time.sleep(0.01)
    pid_file.write_text(str(build.pid))
    t = time.monotonic()
    wait_for_local_llm_build(pid_file)
    assert time.monotonic() - t >= 1.0 and build.wait() == 0 and not pid_file.exists()
    other = subprocess.Popen(["sleep", "30"])  # a live process that is no build: no wait
    pid_file.write_text(str(other.pid))
    t = time.monotonic()
    try:
        wait_for_local_llm_build(pid_file)
    finally:
        other.kill()
        other.wait()
    assert time.monotonic() - t < 1.0 and not pid_file.exists()
    wait_for_local_llm_build(pid_file)  # no file: nothing to wait for


class _Item:
    def __init__(self, nodeid: str, llm: bool = False):
        self.nodeid, self.llm = nodeid, llm

    def get_closest_marker(self, name):
        return name == "local_llm" and self.llm or None


def test_files_run_largest_first_and_the_local_backend_last():
    from conftest import run_order

    items = [_Item("a.py::one"), _Item("llm.py::x", True), _Item("b.py::one"), _Item("b.py::two"),
             _Item("llm.py::y", True), _Item("llm.py::z", True), _Item("c.py::p[1]"), _Item("b.py::three")]
    # must not fire: the largest file (llm.py, 3 tests) is not first; a.py and c.py tie and keep their order
    assert [i.nodeid for i in run_order(items)] == ["b.py::one", "b.py::two", "b.py::three", "a.py::one", "c.py::p[1]",
                                                   "llm.py::x", "llm.py::y", "llm.py::z"]
    make = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--no-loadscope-reorder" in re.search(r"^test:.*?pytest (.*)$", make, re.M | re.S).group(1)


def test_the_common_library_hook_overrides_llama_cpp_pythons_forced_setting(tmp_path):
    """llama-cpp-python sets LLAMA_BUILD_COMMON ON with FORCE before adding llama.cpp; the hook named in
    LLAMA_CMAKE_ARGS must still turn it off inside llama.cpp's project (and only there)."""
    import shutil
    import subprocess

    import pytest

    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    make = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    args = re.search(r"^LLAMA_CMAKE_ARGS \?=((?:.*\\\n)*.*)$", make, re.M).group(1)
    hook = re.search(r"-DCMAKE_PROJECT_llama\.cpp_INCLUDE=\$\(CURDIR\)/(\S+)", args)
    assert hook, "LLAMA_CMAKE_ARGS names no hook for llama.cpp's project"
    assert (PROJECT_ROOT / hook.group(1)).is_file()
    # The shape of llama-cpp-python's CMakeLists.txt around llama.cpp's (both cut to what matters here).
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.21)\nproject(llama_cpp NONE)\n"
        'set(LLAMA_BUILD_COMMON ON CACHE BOOL "common" FORCE)\nadd_subdirectory(vendor)\n'
        'message(STATUS "outside=${LLAMA_BUILD_COMMON}")\n')
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "CMakeLists.txt").write_text(
        'cmake_minimum_required(VERSION 3.14)\nproject("llama.cpp" NONE)\n'
        'option(LLAMA_BUILD_COMMON "common" ON)\nmessage(STATUS "inside=${LLAMA_BUILD_COMMON}")\n')

    def configure(*extra: str) -> str:
        build = tmp_path / f"build{len(extra)}"
        out = subprocess.run(["cmake", "-S", str(tmp_path), "-B", str(build), *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "inside=ON" in configure()  # without the hook the forced value wins, as in a plain build
    with_hook = configure(f"-DCMAKE_PROJECT_llama.cpp_INCLUDE={PROJECT_ROOT / hook.group(1)}")
    assert "inside=OFF" in with_hook and "outside=ON" in with_hook
