# Two commands do all the set-up on a fresh machine: `make grade` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
RESULTS ?= results/results.json
DEVICE ?= auto

.PHONY: grade test setup
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
