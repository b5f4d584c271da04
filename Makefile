# Convenience targets; the README's two commands do the same with python3 and pip alone.
PYTHON ?= python3
VENV ?= .venv

.PHONY: demo test test-quick clean
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e ".[dev]" -c constraints.txt
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/stbench run --method bilinear --dataset demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

# The inner loop (under 2 minutes on 2 cores): everything but the tests marked slow.
test-quick: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "not slow"

clean:
	rm -rf stbench-runs .pytest_cache
