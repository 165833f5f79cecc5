# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates the local virtual environment it needs (.venv) the first time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Development and CI use the CPU build of torch 2.13.0 available locally; users may take any newer torch.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test quality env clean browser

# A dropped connection to the package registry fails one pip command, not the set-up: each is tried up to 3 times.
PIP_INSTALL := $(PY) -m pip install --quiet --retries 10 --timeout 60
define retry
	@for attempt in 1 2 3; do \
	  echo "$(1)"; $(1) && break; \
	  if [ $$attempt = 3 ]; then echo "failed 3 times: $(1)" >&2; exit 1; fi; \
	  echo "attempt $$attempt failed; retrying in 30 s" >&2; sleep 30; \
	done
endef

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(call retry,$(PIP_INSTALL) --upgrade pip)
	$(call retry,$(PIP_INSTALL) "$(TORCH_PIN)")
	$(call retry,$(PIP_INSTALL) -e ".[dev]")
	touch $@

env: $(VENV)/.installed

# The app's browser test (tests/test_app_browser.py) drives Debian's chromium through Playwright: installed here when
# missing and apt-get can be used (as root); elsewhere the test skips and says why (-rs).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "Installing chromium failed: tests/test_app_browser.py will skip."; \
	  else echo "No chromium and no apt-get as root: tests/test_app_browser.py will skip."; fi; }

# --durations=25: every log names the 25 slowest tests (the suite should stay under ~10 minutes on 2 CPU cores).
test: $(VENV)/.installed browser
	$(PY) -m pytest -q -rs --durations=25 tests

# Lint (ruff.toml: pycodestyle, pyflakes, import order), as diffusers' `make quality`.
quality: $(VENV)/.installed
	$(PY) -m ruff check .

demo: $(VENV)/.installed
	$(PY) examples/demo.py --output_dir outputs/demo

clean:
	rm -rf $(VENV) outputs build src/*.egg-info
