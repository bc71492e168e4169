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
# outputs: the notebook numbers to rerun (all when empty)
ONLY ?=
# test: more pytest arguments for both runs, e.g. ARGS="-k chat" or ARGS="-x --durations=20"
# (the train env's run keeps its own -m train_env)
ARGS ?=
# OFFLINE=work_dirs/wheelhouse: set up from `make wheelhouse`'s bundle, never from the internet.
OFFLINE ?=
ifneq ($(OFFLINE),)
export UV_OFFLINE := 1
endif
# uv's flags that take an env's packages from the bundle, e.g. $(call FROM_BUNDLE,course).
FROM_BUNDLE = $(if $(OFFLINE),--no-index --find-links $(OFFLINE)/$(1) --find-links $(OFFLINE)/tools)
# Offline bundles (README, "Offline install"): WHEELHOUSE_ARGS="--dry-run" or "--only addict deepspeed"
# for a trial; wheelhouse-node needs NODE_FREEZE, the node's `python -m pip list --format=freeze`,
# and takes WHEELHOUSE_ARGS="--max-mib N" to fail a bundle larger than the way to the node carries.
WHEELHOUSE := work_dirs/wheelhouse
WHEELHOUSE_ARGS ?=
NODE_FREEZE ?=
NODE_PYTHON ?= 3.12

.PHONY: help setup browser course outputs test lab demo doctor lock base clean wheelhouse wheelhouse-node

help:
	@echo "make course   set up what is missing, then run every notebook headless (PARAMS=smoke|full|FILE)"
	@echo "make test     set up what is missing, then run the whole test suite (ARGS=\"-k chat\": more pytest arguments)"
	@echo "make outputs  rerun the notebooks (ONLY=\"03 05\" for some) and write their cleaned outputs into notebooks/"
	@echo "make setup    create .venv (course) and .venv-train (XTuner) from requirements/*.lock"
	@echo "make lab      start JupyterLab with the internvl-course kernel"
	@echo "make demo     start the gradio chat demo on 127.0.0.1:$(PORT)"
	@echo "make doctor   check both environments, the hardware and what is built (MODEL=path: also that model folder)"
	@echo "make lock     re-resolve requirements/*.lock from pyproject.toml"
	@echo "make wheelhouse       download both envs' wheels to $(WHEELHOUSE)/ for a node without internet;"
	@echo "                      there: make setup OFFLINE=$(WHEELHOUSE)"
	@echo "make wheelhouse-node  only what a GPU node with its own torch lacks (NODE_FREEZE=its pip freeze)"
	@echo "make base     retrain the tiny model's talking base, data/tiny_base (about 5 CPU minutes)"

# uv lives in its own small venv under work_dirs/, so setup needs nothing but Python 3.11.
$(UV):
	python$(PYTHON_VERSION) -m venv $(TOOLS) || python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check $(if $(OFFLINE),--no-index --find-links $(OFFLINE)/tools) uv==$(UV_VERSION)

# Each env is stamped with the lock it was made from; a changed lock or pyproject.toml rebuilds it.
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (CI, containers) Python would compile
# every library it imports, in every process, for good: 12 s of each XTuner launch (profiled).
.venv/.installed: requirements/course.lock pyproject.toml | $(UV)
	@echo "Setting up the course env (.venv/) from requirements/course.lock ..."
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) .venv
	VIRTUAL_ENV=.venv $(UV) pip sync --quiet --compile-bytecode $(call FROM_BUNDLE,course) requirements/course.lock
	$(UV) pip install --quiet --python $(COURSE_PY) --no-deps $(call FROM_BUNDLE,course) -e .
	$(COURSE_PY) -m ipykernel install --sys-prefix --name internvl-course --display-name "Python (internvl-course)" >/dev/null
	cp requirements/course.lock $@

.venv-train/.installed: requirements/train.lock pyproject.toml | $(UV)
	@echo "Setting up the train env (.venv-train/) from requirements/train.lock ..."
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) .venv-train
	VIRTUAL_ENV=.venv-train $(UV) pip sync --quiet --compile-bytecode $(call FROM_BUNDLE,train) requirements/train.lock
	$(UV) pip install --quiet --python $(TRAIN_PY) --no-deps $(call FROM_BUNDLE,train) -e .
	cp requirements/train.lock $@

# The embedded tiny InternVL2, rebuilt when the code or the shipped base weights that make it change.
TINY_MODEL := work_dirs/models/internvl2-tiny/config.json
TINY_SOURCES := $(wildcard internvl_course/modelcode/*.py) internvl_course/tiny/build.py internvl_course/tiny/internlm2_tokenizer.py internvl_course/data/words.py \
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

# The outputs committed in notebooks/: a sequential run with the full defaults on a fresh work_dirs.
outputs: setup
	$(COURSE_PY) -m internvl_course.cli outputs $(foreach n,$(ONLY),--only $(n))

# pytest's status 5 (no test selected) is fine for the train env's share: ARGS="-k ..." may pick
# only course-env tests; the course env runs every test, so an empty selection still fails there.
test: setup
	$(TRAIN_PY) -m pytest -q $(ARGS) -m train_env -p no:cacheprovider || [ $$? -eq 5 ]
	$(COURSE_PY) -m pytest $(ARGS)

lab: setup
	.venv/bin/jupyter lab --notebook-dir=notebooks

demo: setup
	$(COURSE_PY) -m internvl_course.cli demo --port $(PORT) $(if $(MODEL),--model $(MODEL))

doctor: setup
	$(COURSE_PY) -m internvl_course.cli doctor $(if $(MODEL),--model "$(MODEL)")

lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra course $(LOCK_FLAGS) -o requirements/course.lock
	$(UV) pip compile pyproject.toml --extra train $(LOCK_FLAGS) -o requirements/train.lock

# Same seed, same bytes: running this on an unchanged kit leaves git status clean.
base: .venv/.installed
	$(COURSE_PY) -m internvl_course.cli base

wheelhouse: | $(UV)
	$(TOOLS)/bin/python -m internvl_course.cli wheelhouse full --out $(WHEELHOUSE) --uv $(UV) --uv-version $(UV_VERSION) $(WHEELHOUSE_ARGS)

wheelhouse-node: | $(UV)
	@test -n "$(NODE_FREEZE)" || { echo "usage: make wheelhouse-node NODE_FREEZE=freeze.txt [NODE_PYTHON=3.12], freeze.txt being the node's \`python -m pip list --format=freeze\`"; exit 2; }
	$(TOOLS)/bin/python -m internvl_course.cli wheelhouse node --out $(WHEELHOUSE)/node --have $(NODE_FREEZE) --python-version $(NODE_PYTHON) $(WHEELHOUSE_ARGS)

clean:
	rm -rf work_dirs/runs work_dirs/pytest
