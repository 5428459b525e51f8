# The two commands of the quick start are `make run` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-alone bench soak bench-scale clean

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

# Each test of FILE in a pytest run of its own, then all of them in reverse order: no test may need
# another's state. `make test-alone FILE=tests/test_end_to_end.py` (slow: stack tests start a stack each).
FILE ?= tests/test_end_to_end.py
test-alone: setup
	ids=$$(mktemp) && trap 'rm -f "$$ids"' EXIT && \
	$(BIN)/python -m pytest --collect-only -q $(FILE) | grep '::' > "$$ids" && \
	while read -r id; do $(BIN)/python -m pytest -q -p no:cacheprovider "$$id" < /dev/null || exit 1; done < "$$ids" && \
	tac "$$ids" | xargs -d '\n' $(BIN)/python -m pytest -q -p no:cacheprovider

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
