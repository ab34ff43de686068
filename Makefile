# `make demo` and `make test` each bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast reproduce install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

# The everyday loop (under a minute): no whole training runs, subprocesses or fault suite.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow and not faults" tests

demo: $(STAMP)
	$(PY) -m launch.demo

# Every experiment at cpu scale (resumable; ONLY=fig3,fig5 for some), then results/reproduction.md,
# compared by verdict with the committed reference/cpu (left alone; --update_reference rewrites it).
reproduce: $(STAMP)
	$(PY) -m launch.reproduce --only="$(ONLY)"

clean:
	rm -rf $(VENV) results
