# 科协问答 — `make run` starts the web chat, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# PyTorch: the CPU build. Here pip finds the local CPU wheel for torch==2.13.0; elsewhere point
# TORCH_INDEX at a CPU wheel index (e.g. your mirror of the PyTorch CPU index). Never the CUDA build.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=

.PHONY: install run index test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel setuptools
	$(BIN)/pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -e ".[dev]"
	touch $@

run: install
	$(BIN)/python app.py

index: install
	$(BIN)/kexie index

# The tests also exercise the optional local GGUF backend: llama-cpp-python compiles from source
# (about 10 minutes once; pip caches the wheel). If it cannot be built, those tests skip and say why.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev,local-llm]" || echo "llama-cpp-python 未能安装：本地 GGUF 后端的测试将跳过"
	touch $@

test: $(VENV)/.installed-test
	bash scripts/test-deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/run.py --sizes 1000,10000

clean:
	rm -rf index test-output bench/results
