# internvl-course: `make course` runs the course, `make test` runs the tests.
# Both set up whatever is missing first; a second run reinstalls nothing unless a lock file changed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION := 3.11
UV_VERSION := 0.13.8
TOOLS := work_dirs/tools
UV := $(TOOLS)/bin/uv
COURSE_PY := .venv/bin/python
TRAIN_PY := .venv-train/bin/python
# Reproducible lock files: resolve against PyPI as it was on this date.
LOCK_DATE := 2026-11-24T00:00:00Z
LOCK_FLAGS := --python-version $(PYTHON_VERSION) --python-platform x86_64-manylinux_2_28 --exclude-newer $(LOCK_DATE) --quiet
# course: smoke (seconds per notebook), full (each notebook's own defaults) or a YAML/JSON file
PARAMS ?= full
PORT ?= 1096
MODEL ?=

.PHONY: help setup browser course test lab demo doctor lock base clean

help:
	@echo "make course   set up what is missing, then run every notebook headless (PARAMS=smoke|full|FILE)"
	@echo "make test     set up what is missing, then run the whole test suite"
	@echo "make setup    create .venv (course) and .venv-train (XTuner) from requirements/*.lock"
	@echo "make lab      start JupyterLab with the internvl-course kernel"
	@echo "make demo     start the gradio chat demo on 127.0.0.1:$(PORT)"
	@echo "make doctor   check both environments, the hardware and what is built"
	@echo "make lock     re-resolve requirements/*.lock from pyproject.toml"
	@echo "make base     retrain the tiny model's talking base, data/tiny_base (about 5 CPU minutes)"

# uv lives in its own small venv under work_dirs/, so setup needs nothing but Python 3.11.
$(UV):
	python$(PYTHON_VERSION) -m venv $(TOOLS) || python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Each env is stamped with the lock it was made from; a changed lock or pyproject.toml rebuilds it.
.venv/.installed: requirements/course.lock pyproject.toml | $(UV)
	@echo "Setting up the course env (.venv/) from requirements/course.lock ..."
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) .venv
	VIRTUAL_ENV=.venv $(UV) pip sync --quiet requirements/course.lock
	$(UV) pip install --quiet --python $(COURSE_PY) --no-deps -e .
	$(COURSE_PY) -m ipykernel install --sys-prefix --name internvl-course --display-name "Python (internvl-course)" >/dev/null
	cp requirements/course.lock $@

.venv-train/.installed: requirements/train.lock pyproject.toml | $(UV)
	@echo "Setting up the train env (.venv-train/) from requirements/train.lock ..."
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) .venv-train
	VIRTUAL_ENV=.venv-train $(UV) pip sync --quiet requirements/train.lock
	$(UV) pip install --quiet --python $(TRAIN_PY) --no-deps -e .
	cp requirements/train.lock $@

# The embedded tiny InternVL2, rebuilt when the code or the shipped base weights that make it change.
TINY_MODEL := work_dirs/models/internvl2-tiny/config.json
TINY_SOURCES := $(wildcard internvl_course/modelcode/*.py) internvl_course/tiny.py internvl_course/tokenizer_build.py internvl_course/corpus.py \
	data/tiny_base/model.safetensors data/tiny_base/tokenizer.model
$(TINY_MODEL): $(TINY_SOURCES) .venv/.installed
	$(COURSE_PY) -m internvl_course.cli build --force

# Debian's chromium for the browser tests (Playwright drives it; it never downloads a browser),
# and a CJK font so that the demo's Chinese renders in screenshots.
BROWSER_PACKAGES := chromium fonts-wqy-microhei
browser:
	@test -x /usr/bin/chromium && test -d /usr/share/fonts/truetype/wqy || { if [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian's $(BROWSER_PACKAGES) for the browser tests ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
	  else echo "Browser tests need Debian packages: sudo apt-get install $(BROWSER_PACKAGES) (skipped without them)"; fi; }

setup: .venv/.installed .venv-train/.installed $(TINY_MODEL) browser

course: setup
	$(COURSE_PY) -m internvl_course.cli run --params $(PARAMS)

test: setup
	$(TRAIN_PY) -m pytest -q -m train_env -p no:cacheprovider
	$(COURSE_PY) -m pytest

lab: setup
	.venv/bin/jupyter lab --notebook-dir=notebooks

demo: setup
	$(COURSE_PY) -m internvl_course.cli demo --port $(PORT) $(if $(MODEL),--model $(MODEL))

doctor: setup
	$(COURSE_PY) -m internvl_course.cli doctor

lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra course $(LOCK_FLAGS) -o requirements/course.lock
	$(UV) pip compile pyproject.toml --extra train $(LOCK_FLAGS) -o requirements/train.lock

# Same seed, same bytes: running this on an unchanged kit leaves git status clean.
base: .venv/.installed
	$(COURSE_PY) -m internvl_course.pretrain

clean:
	rm -rf work_dirs/runs work_dirs/pytest
