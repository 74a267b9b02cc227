# Each target does its own set-up: a virtual environment in .venv, made on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

# --no-compile: no bytecode for the many modules of torch and the rest that a run never imports (torch installs
# in 31 s, not 47 s, on two cores); Python writes it for those it does import, on first use (hence unexport).
unexport PYTHONDONTWRITEBYTECODE

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.14.1 torchvision==0.29.1   # CUDA builds; they also run on the CPU
	$(PY) -m pip install -q --no-compile -e '.[test]'
	touch $@

.PHONY: setup run test test-fast clean
setup: $(VENV)/.installed

# The main job: every suite against the embedded reference (tiny-dev on the CPU); reports in results/<run id>/.
run: setup
	$(PY) run_tests.py $(ARGS)

# fluxgate's own tests.
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: no service, no Triton server, nothing marked slow (tests/conftest.py: TIERS).
test-fast: setup
	$(PY) -m pytest -m "not server and not triton and not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
