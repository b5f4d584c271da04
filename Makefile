# Convenience targets; the README's two commands do the same with python3 and pip alone.
PYTHON ?= python3
VENV ?= .venv

.PHONY: demo test clean
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/stbench run --method bilinear --dataset demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

clean:
	rm -rf stbench-runs .pytest_cache
