# Fresh machine: `make demo` runs the main example end to end, `make test` the
# test suite. Both create .venv and install the project with its extras.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= test,torch,jax,bench,examples
STAMP  := $(VENV)/.installed
# `make demo` installs only the extras it needs (a no-op after a full install).
DEMO_EXTRAS := torch,examples
DEMO_STAMP  := $(VENV)/.installed-demo

.PHONY: venv demo test test-cpu test-cudasim bench asv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(DEMO_EXTRAS)]"
	touch $(DEMO_STAMP)

# Lorenz governing-equation discovery with the S-MNN layer (examples/README.md).
demo: $(DEMO_STAMP)
	$(BIN)/python examples/lorenz_discovery.py

# The CUDA simulator is chosen when numba.cuda is first imported, so the
# simulator tests run in their own pytest process.
test: test-cpu test-cudasim

test-cpu: $(STAMP)
	$(BIN)/python -m pytest -q tests bandsolve smnn adapters --doctest-modules -m "not cudasim"

test-cudasim: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q tests -m cudasim

bench: $(STAMP)
	$(BIN)/python benchmarks/compare.py

asv: $(STAMP)
	cd benchmarks && ../$(BIN)/asv machine --yes >/dev/null && ../$(BIN)/asv run --python=same --quick --show-stderr

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
