# Two commands do all the set-up on a fresh machine: `make grade` and `make test`.
# The system Python when it is recent enough, else the first python3 on PATH. As root, student code runs
# as an unprivileged user, which must be able to run the interpreter: a pyenv Python under /root cannot.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
RESULTS ?= results/results.json
DEVICE ?= auto

.PHONY: grade test lint setup autograder
setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

grade: $(STAMP)
	$(PY) -m grader --submission submission --data reference_data --results $(RESULTS) --device $(DEVICE) \
		--plots $(dir $(RESULTS))plots

test: $(STAMP)
	$(PY) -m pytest -q

# ruff on the whole tree, mypy on the grader (settings in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# The zip instructors upload to Gradescope (tracked files only; setup.sh and run_autograder at its top).
autograder:
	git archive --format=zip -o autograder.zip HEAD setup.sh run_autograder requirements.txt grader reference_data
	@echo "autograder.zip: upload it as the autograder (base image: Ubuntu 24.04)"
