# The two commands of the README. Both create .venv and install the project on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Threads for torch/BLAS: small graph ops suffer from oversubscription on busy machines.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
# Busy-waiting OpenMP threads waste the CPU under load (measured: 6x slower extraction).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-all test-min lint install clean browser wheel-check docs

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[vision,serve,dev]'
	touch $@

# The demo's real images: Debian's dataset-fashion-mnist where apt-get can install it,
# otherwise torchvision's download (internet) or, failing both, a clearly-labelled synthetic run.
FMNIST := /usr/share/datasets/fashion-mnist
demo: $(STAMP)
	@if [ ! -d $(FMNIST) ] && [ -z "$$LAGNH_FASHION_MNIST" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"; \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
			|| echo "note: could not install dataset-fashion-mnist"; \
	fi
	$(BIN)/lagnh demo

# The search page's test drives Debian's headless Chromium; CI starts from nothing, so the
# browser is installed here when we are root and it is missing (the test skips only without it).
browser:
	@if { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; } \
		&& command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Chromium for the browser test (apt-get install chromium chromium-driver)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| echo "note: could not install chromium; the browser test cannot run"; \
	fi

# Fast suite (what CI runs): everything but tests marked slow.
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow"

# The same suite in a second venv holding the lowest numpy, scipy and torch-geometric that
# pyproject.toml declares (constraints-min.txt): CI runs it after `make test` to prove the bounds.
VENV_MIN  := .venv-min
STAMP_MIN := $(VENV_MIN)/.installed
# torch (~6 GB with its CUDA libraries) is hard-linked from .venv, not installed a second time:
# CI disks can have under 10 GB free (.ci/link_torch.py).
$(STAMP_MIN): pyproject.toml constraints.txt constraints-min.txt $(STAMP)
	test -x $(VENV_MIN)/bin/python || $(PYTHON) -m venv $(VENV_MIN)
	$(BIN)/python .ci/link_torch.py $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_MIN)/bin/python -m pip install --quiet -c constraints.txt -c constraints-min.txt -e '.[vision,serve,dev]'
	touch $@

test-min: $(STAMP_MIN) browser
	$(VENV_MIN)/bin/python -c "from importlib.metadata import version as v; \
		print('test-min:', *(f'{p} {v(p)}' for p in ('numpy', 'scipy', 'torch-geometric', 'torch')))"
	$(VENV_MIN)/bin/python -m pytest -q -m "not slow"

test-all: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The wheel outside a checkout: build the sdist and wheel (no warnings, twine check), install
# the wheel into a fresh venv, use it from a temporary directory (.ci/wheel-check.sh).
wheel-check: $(STAMP)
	BUILD_PYTHON=$(BIN)/python PYTHON=$(PYTHON) .ci/wheel-check.sh

# The documentation site (MkDocs + Material + mkdocstrings) into site/, built strictly: a broken
# link or API reference fails the build.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[vision,serve,dev,docs]'
	touch $@

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check lagnh_pyg cli tests docs/hooks.py

clean:
	rm -rf $(VENV) $(VENV_MIN) build dist site *.egg-info .pytest_cache
