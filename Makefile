# The two commands of the README. Each creates .venv when it is missing, installs the pinned
# torch and egalib with its dev extras once (a stamp file records it), and fetches Fashion-MNIST
# when it is not on disk. Running either again installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.egalib-installed
FMNIST := train-images-idx3-ubyte.gz

.PHONY: demo test test-fast data browser slurm publish docs lint clean

demo: $(STAMP) data
	$(PY) -m egalib demo

test: lint data browser slurm
	$(PY) -m pytest

# The unit tests alone: everything but the tests marked `integration` (notebooks, the browser,
# submitit, the benchmark, the wheel, whole training runs and command-line processes), spread
# over the cores by pytest-xdist, one torch thread per process (more would compete for them).
test-fast: $(STAMP) data
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not integration" -n auto

# The executed demo notebooks for readers, in docs/notebooks/ (the demo's runs are reused).
publish: $(STAMP) data
	$(PY) -m egalib publish

# The documentation site, from README, docs/ and the executed notebooks (nothing is executed).
docs: $(STAMP)
	$(PY) -m sphinx -q -b html docs docs/_build/html
	@echo "site: docs/_build/html/index.html"

# ruff over the whole repository: the package, tests, benchmarks, the notebooks (sources and
# executed copies) and the Python blocks of the docs.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's dataset-fashion-mnist where apt-get can be run as root; else torchvision's download.
data: $(STAMP)
	@if [ -f /usr/share/datasets/fashion-mnist/$(FMNIST) ] || \
	    [ -f data/fashion-mnist/FashionMNIST/raw/$(FMNIST) ]; then \
	  echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  $(PY) -m egalib download fashion-mnist; \
	fi

# Debian's Chromium for the browser test (playwright drives it; no browser is downloaded).
browser:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq chromium; \
	else \
	  echo "chromium: not installed, so the browser test skips (apt-get install chromium)"; \
	fi

# Debian's Slurm and munge for the one-node cluster that tests/test_slurm.py starts (as root).
slurm:
	@if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then \
	  echo "slurm: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq slurm-wlm munge; \
	else \
	  echo "slurm: not installed, so the Slurm tests skip (apt-get install slurm-wlm munge)"; \
	fi

clean:
	rm -rf runs .pytest_cache
