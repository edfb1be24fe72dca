# From a fresh clone, `make quickstart` and `make test` do all the set-up: the first call
# creates .venv/ (torch, then metaray editable with every extra, so the tests skip nothing)
# and later calls reuse it; an edit to pyproject.toml reinstalls. CI runs the same targets.

PYTHON ?= python3
# torch goes in before metaray, so that metaray's plain `torch` requirement is already met
# and never pulls a CUDA build of several GB onto a CPU machine.
TORCH_SPEC ?= torch==2.13.0
# Where torch comes from. Empty (the default): a wheel pip already has locally (find-links),
# else PyTorch's CPU index when no NVIDIA GPU is present, else PyPI's CUDA build. Set it to
# another index (e.g. a CUDA one of PyTorch's) to choose, on the first call or after
# `rm -rf .venv`.
TORCH_INDEX_URL ?=
TORCH_CPU_INDEX_URL := https://download.pytorch.org/whl/cpu
# Extra pytest arguments, e.g. PYTEST_ARGS="-x -k bandit" (not -m: each target sets its tier).
PYTEST_ARGS ?=

VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
PIP_INSTALL := $(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check
INSTALLED := $(VENV)/.installed

.PHONY: quickstart test test-fast test-learning

quickstart: $(INSTALLED)
	$(VENV_PYTHON) launch.py --config configs/quickstart.yaml

# The whole suite, as CI runs it: the default tier, then the learning tier.
test: $(INSTALLED)
	$(MAKE) --no-print-directory test-fast
	$(MAKE) --no-print-directory test-learning

# The default tier: everything but the learning tests (cluster and heavy_env included).
test-fast: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -m "not learning" $(PYTEST_ARGS)

# Trains to learning targets within fixed env-step budgets.
test-learning: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -m learning $(PYTEST_ARGS)

$(INSTALLED): pyproject.toml
	@echo "setting up $(VENV)/ (first use, or pyproject.toml changed)"
	@[ -x $(VENV_PYTHON) ] || { \
		$(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' || \
			{ echo "metaray needs Python 3.10-3.12: make $(MAKECMDGOALS) PYTHON=python3.12, say" >&2; exit 1; }; \
		echo "$(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; }
	@if [ -n "$(TORCH_INDEX_URL)" ]; then \
		echo "$(PIP_INSTALL) '$(TORCH_SPEC)' --index-url $(TORCH_INDEX_URL)"; \
		$(PIP_INSTALL) '$(TORCH_SPEC)' --index-url '$(TORCH_INDEX_URL)'; \
	elif $(PIP_INSTALL) --no-index --no-deps '$(TORCH_SPEC)' 2>/dev/null; then \
		echo "$(PIP_INSTALL) '$(TORCH_SPEC)'  (torch from a local wheel; its dependencies)"; \
		$(PIP_INSTALL) '$(TORCH_SPEC)'; \
	elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then \
		echo "$(PIP_INSTALL) '$(TORCH_SPEC)'  (GPU found: PyPI's CUDA build)"; $(PIP_INSTALL) '$(TORCH_SPEC)'; \
	else \
		echo "$(PIP_INSTALL) '$(TORCH_SPEC)' --index-url $(TORCH_CPU_INDEX_URL)  (no GPU: CPU build)"; \
		$(PIP_INSTALL) '$(TORCH_SPEC)' --index-url '$(TORCH_CPU_INDEX_URL)'; \
	fi
	$(PIP_INSTALL) -e ".[test,mujoco,metaworld]"
	@touch $@
