# The two commands of the README.  Both create/reuse .venv (scripts/setup_env.sh).
VENV := .venv
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench clean

setup:
	@bash scripts/setup_env.sh

## demo: install and run the main job (the quick validation table)
demo: setup
	$(VENV)/bin/fokker validate --quick --out fokker-report

## test: install and run the fast test suite (2 workers)
test: setup
	$(VENV)/bin/python -m pytest -n 2 -q -m "not slow" $(PYTEST_ARGS)

## test-all: the fast suite plus the slow statistical tests
test-all: setup
	$(VENV)/bin/python -m pytest -n 2 -q $(PYTEST_ARGS)

clean:
	rm -rf fokker-report .pytest_cache .hypothesis
