# The two commands of the quick start are `make run` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench soak bench-scale clean

setup: $(STAMP)

# Reinstall only when the dependencies change; `make setup` is cheap when nothing did.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	$(BIN)/tlbench up

test: setup
	$(BIN)/python -m pytest

# tlbench's five-backbone benchmark against the seed recipe in plain Keras; see docs/performance.md.
bench: setup
	$(BIN)/python -m bench.run

# 50 small jobs through two workers while five random worker kills land mid-job; see docs/reliability.md.
soak: setup
	$(BIN)/python -m bench.soak

# The same 8 small jobs on one CPU worker, then on two (a second `tlbench worker`); see docs/operations.md.
bench-scale: setup
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) .pytest_cache
