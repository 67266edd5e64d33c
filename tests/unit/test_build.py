"""The build files agree with each other (checked here because nothing else would notice a drift)."""

import re
import tomllib

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
