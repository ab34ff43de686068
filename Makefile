# `make demo` and `make test` each bootstrap a venv on a fresh machine, with the versions the suite
# passed with on that Python (constraints/python<X.Y>.txt). PYTHON=python3.12 picks the other line.
PYTHON ?= python3
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYVER),)
$(error PYTHON=$(PYTHON) does not run here; name a Python 3.11 or 3.12)
endif
VENV ?= $(if $(filter 3.11,$(PYVER)),.venv,.venv-$(PYVER))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BASE := $(VENV)/.installed-base
CONSTRAINTS := constraints/python$(PYVER).txt
VERSIONS := import importlib.metadata as m; print("versions:", ", ".join( \
  f"{p} {m.version(p)}" for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")))

.PHONY: demo test test-fast test-latest reproduce install clean

# The demo and the reproduction need only the core (JAX, Flax, optax, orbax, pandas, matplotlib);
# the tests add TensorFlow, tfds and seqio (the C4 / text path), Jupyter and pytest.
$(BASE): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e .
	touch $(BASE)

$(STAMP): $(BASE)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

$(CONSTRAINTS):
	@echo "no tested versions for Python $(PYVER) (constraints/ has $$(ls constraints)); use PYTHON=python3.11 or python3.12, or try the newest releases with make test-latest" >&2
	@exit 2

install: $(STAMP)

test: $(STAMP)
	@$(PY) -c '$(VERSIONS)'
	$(PY) -m pytest -q -n 2 tests

# The everyday loop (under a minute): no whole training runs, subprocesses or fault suite.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow and not faults" tests

# The next upgrade in one command: the newest releases, unpinned, in a venv of their own. If the
# suite passes, `pip freeze` there (less this project) can become constraints/python<X.Y>.txt.
test-latest:
	test -x .venv-latest-$(PYVER)/bin/python || $(PYTHON) -m venv .venv-latest-$(PYVER)
	.venv-latest-$(PYVER)/bin/python -m pip install -q --upgrade pip
	.venv-latest-$(PYVER)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
	@.venv-latest-$(PYVER)/bin/python -c '$(VERSIONS)'
	.venv-latest-$(PYVER)/bin/python -m pytest -q -n 2 tests

demo: $(BASE)
	$(PY) -m launch.demo

# Every experiment at cpu scale (resumable; ONLY=fig3,fig5 for some), then results/reproduction.md,
# compared by verdict with the committed reference/cpu (left alone; --update_reference rewrites it).
reproduce: $(BASE)
	$(PY) -m launch.reproduce --only="$(ONLY)"

clean:
	rm -rf .venv .venv-* results
