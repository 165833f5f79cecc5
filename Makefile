# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates the local virtual environment it needs (.venv) the first time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Development and CI use the CPU build of torch 2.13.0 available locally; users may take any newer torch.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test quality env clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

env: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# Lint (ruff.toml: pycodestyle, pyflakes, import order), as diffusers' `make quality`.
quality: $(VENV)/.installed
	$(PY) -m ruff check .

demo: $(VENV)/.installed
	$(PY) examples/demo.py --output_dir outputs/demo

clean:
	rm -rf $(VENV) outputs build src/*.egg-info
