# Two commands do all the set-up on a fresh machine: `make grade` and `make test`.
# The system Python when it is recent enough, else the first python3 on PATH. As root, student code runs
# as an unprivileged user, which must be able to run the interpreter: a pyenv Python under /root cannot.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' \
	2>/dev/null && echo /usr/bin/python3 || echo python3)
# The virtual environment: .venv, but as root in a folder other users cannot enter (a clone in /root, say)
# the student user could not run an interpreter inside it, so it goes to a root-owned folder they can
# reach, one per checkout. (Not /tmp: another user could plant it there first.)
VENV ?= $(shell if [ "$$(id -u)" = 0 ] && ! runuser -u nobody -- test -x "$(CURDIR)" 2>/dev/null; then \
	echo /var/cache/mp-grader/venv-$$(echo "$(CURDIR)" | cksum | cut -d' ' -f1); else echo .venv; fi)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
RESULTS ?= results/results.json
DEVICE ?= auto
# The folder graded by every grading target (grade, docker-grade, submission-zip).
SUBMISSION ?= submission
# Docker: the image's name, its base (Gradescope's default), torch's wheel index (CPU builds; empty: PyPI's
# CUDA builds), a CA bundle pip must trust while building (a proxy's), the limits of the run (Gradescope's
# defaults), GPU=1 for --gpus all, NOBUILD=1 to grade in $(IMAGE) as it is.
IMAGE ?= mp-grader
BASE ?= ubuntu:22.04
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
CA_BUNDLE ?=
DOCKER_LIMITS ?= --cpus 0.5 --memory 768m --network none
GPU ?=
NOBUILD ?=
DOCKER_RESULTS ?= results/docker
# The secret reference data the autograder zip grades on (a folder outside the repository), and its config;
# ALLOW_PUBLIC=1 zips held-out data that is mostly a public set anyway (refused otherwise).
REFERENCE ?=
ALLOW_PUBLIC ?=
CONFIG ?= grader/config.toml
SUBMISSION_ZIP ?= submission.zip
AUTOGRADER_ZIP ?= autograder.zip

.PHONY: grade test lint setup protect autograder submission-zip docker-image docker-grade docker-test
setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@if [ "$(VENV)" != .venv ]; then echo "make: $(CURDIR) is closed to other users, whom student code runs as:" \
		"the virtual environment goes to $(VENV)"; install -d -m 755 "$$(dirname "$(VENV)")"; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@$(MAKE) --no-print-directory protect
	rm -f $(VENV)/.installed-* && touch $@

# As root, what student code must never read is closed once, at set-up (setup.sh and the Dockerfile do the
# same in the image): a grading run never changes modes, and in the user layer refuses to start when it
# finds these open.
protect:
	@if [ "$$(id -u)" = 0 ]; then chmod go-rwx grader reference_data $$(test -e .git && echo .git) && \
		echo "make: grader/, reference_data/ and .git closed to other users (student code runs as one)"; fi

grade: $(STAMP)
	$(PY) -m grader --submission $(SUBMISSION) --data reference_data --results $(RESULTS) --device $(DEVICE) --config $(CONFIG) \
		--plots $(dir $(RESULTS))plots

test: $(STAMP)
	$(PY) -m pytest -q

# ruff on the whole tree, mypy on the grader (settings in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# The zip students upload: the files of $(SUBMISSION) at its top, after a trial run of predict.py.
submission-zip: $(STAMP)
	$(PY) -m grader.package submission $(SUBMISSION) --config $(CONFIG) --out $(SUBMISSION_ZIP)

# The zip instructors upload to Gradescope, from the working tree, grading on $(REFERENCE).
autograder: $(STAMP)
	$(PY) -m grader.package autograder --reference "$(REFERENCE)" --config $(CONFIG) --out $(AUTOGRADER_ZIP) \
		$(if $(ALLOW_PUBLIC),--allow-public)

# CA_BUNDLE replaces build-ca/extra.crt; without it build-ca/ stays as it is (so the cached install stands).
# BASE and TORCH_INDEX not given: the ones $(IMAGE) was built with (kept in its labels), else the defaults,
# so a rebuild after an edit reuses Docker's cache instead of starting over from another base.
docker-image:
	if [ -n "$(CA_BUNDLE)" ]; then cp "$(CA_BUNDLE)" build-ca/extra.crt; fi
	@base='$(BASE)'; index='$(TORCH_INDEX)'; \
	labels=$$(docker image inspect -f '{{ index .Config.Labels "mp-grader.build" }}' $(IMAGE) 2>/dev/null); \
	[ "$$labels" = "<no value>" ] && labels=; \
	case "$(origin BASE)" in "command line"|environment) ;; *) [ -n "$$labels" ] && base=$${labels%%|*};; esac; \
	case "$(origin TORCH_INDEX)" in "command line"|environment) ;; *) [ -n "$$labels" ] && index=$${labels#*|};; esac; \
	echo "docker-image: $(IMAGE) from BASE=$$base TORCH_INDEX=$$index$${labels:+ (not given: as $(IMAGE) was built)}"; \
	docker build -t $(IMAGE) --build-arg BASE="$$base" --build-arg TORCH_INDEX="$$index" \
		--label "mp-grader.build=$$base|$$index" .

# Gradescope's documented local run of the autograder, under its default limits. NOBUILD=1 runs $(IMAGE) as
# it is (an image built elsewhere, say); otherwise it is brought up to date first (Docker's cache: seconds).
docker-grade: $(if $(NOBUILD),,docker-image)
	mkdir -p $(DOCKER_RESULTS)
	docker run --rm $(DOCKER_LIMITS) $(if $(GPU),--gpus all) -v "$(abspath $(SUBMISSION)):/autograder/submission:ro" \
		-v "$(abspath $(DOCKER_RESULTS)):/autograder/results" $(IMAGE) /autograder/run_autograder
	@echo "results written to $(DOCKER_RESULTS)/results.json"

# Builds the image on a local stand-in base and grades inside it (skips, saying why, without a daemon).
docker-test: $(STAMP)
	MP_GRADER_DOCKER_TEST=1 $(PY) -m pytest -q -s tests/docker
