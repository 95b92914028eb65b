# raylm: the README's commands. Each target creates/refreshes the virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU build of torch where there is no GPU (an unpinned torch pulls a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-variants test-unit test-integration lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev,examples]"
	touch $(STAMP)

demo: setup  ## the sentiment recipe end to end on an embedded local Ray
	$(VENV)/bin/raylm run examples/sentiment_zh.yaml --output outputs

test: setup  ## lint + the whole test suite
	$(VENV)/bin/ruff check lib tests benchmarks ray_jobs examples
	$(PY) -m pytest -q -ra --durations=15

test-variants: setup  ## the layout variants `make test` skips (HAProxy ingress, ZeRO-0 on one worker)
	RAYLM_TEST_VARIANTS=1 $(PY) -m pytest -q -ra -m variant

test-unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check lib tests benchmarks ray_jobs examples
	$(VENV)/bin/ruff format --check lib tests benchmarks ray_jobs examples

format: setup
	$(VENV)/bin/ruff format lib tests benchmarks ray_jobs examples
	$(VENV)/bin/ruff check --fix lib tests benchmarks ray_jobs examples

bench: setup  ## quick CPU benchmarks; results in benchmarks/results/
	$(PY) -m benchmarks.run --quick --readme README.md

clean:
	rm -rf outputs .pytest_cache .ruff_cache
