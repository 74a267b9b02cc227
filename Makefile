# Each target does its own set-up: a virtual environment in .venv, made on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1    # the CUDA build; it also runs on the CPU
	$(PY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: setup run test clean
setup: $(VENV)/.installed

# The main job: the embedded reference generates an image and compares itself with diffusers.
run: setup
	$(PY) -m targets.reference --prompt "a cat holding a sign that says hello world" --out results/reference

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
