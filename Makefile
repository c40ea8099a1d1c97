# Two commands do all set-up: `make quickstart` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install quickstart test lint bench

# Keep a torch that is already there (a GPU user's CUDA build); otherwise pin the CPU build
# so that pip does not pull gigabytes of CUDA packages.
install:
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "keeping installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
		$(PIP) install -q -e ".[dev]"; \
	else \
		$(PIP) install -q -c constraints.txt -e ".[dev]"; \
	fi

quickstart: install
	$(PYTHON) -m codetune quickstart

test: install
	$(PYTHON) -m pytest -q -m "not slow and not gpu" --timeout 900

lint:
	$(PYTHON) -m ruff check src tests bench
	$(PYTHON) -m ruff format --check src tests bench

bench: install
	for b in bench/*.py; do $(PYTHON) $$b || exit 1; done
