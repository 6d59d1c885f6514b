# One entry point for everything. `make book` is the main job; `make test` is what CI runs.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Chapter parameters for `make book`; `make book SMOKE=1` runs every chapter on tiny sizes.
SMOKE ?= 0
DEVICE ?= auto

.PHONY: venv browser sandbox test test-all lint models book book-smoke bench demo lab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	@# an existing environment (make lab VENV=...) keeps the torch it has (a CUDA build, say); a new one gets ours
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || \
		$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[test,book,distributed,course,photos]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

## Debian's chromium, for the test that opens the built pages offline (tests/test_book.py): installed
## with apt when missing and run as root; otherwise that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's chromium for the offline-math browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } || \
	    echo "make: could not install chromium; the browser test will be skipped"; \
	  else echo "make: no chromium and not root: the browser test will be skipped (install chromium to run it)"; fi; }

## Debian's bubblewrap, the sandbox `course grade` runs each submission in (cam_core/course_sandbox.py,
## tests/test_course.py): installed with apt when missing and run as root; otherwise grading refuses to run
## (it says how to install it) and the course's grading tests are skipped.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's bubblewrap for the course grader's sandbox"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1; } || \
	    echo "make: could not install bubblewrap; course grade will refuse to run and its tests will be skipped"; \
	  else echo "make: no bubblewrap and not root: the course grading tests will be skipped (apt-get install bubblewrap)"; fi; }

## The tests (what .ci/run calls): library tests, a smoke run of every chapter, a book build, the
## built pages opened in headless chromium with the network off.
test: $(STAMP) browser sandbox
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP) browser sandbox
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check cam_core tests bench

## Train (or verify) the embedded benchmark's small CNNs; cached under data/.
models: $(STAMP)
	$(BIN)/python -m cam_core train --all --jobs 2

## The main job: train/load models, execute every chapter with papermill, build the HTML book.
book: $(STAMP)
	$(BIN)/python -m cam_core book --device $(DEVICE) $(if $(filter 1,$(SMOKE)),--smoke,)

book-smoke:
	$(MAKE) book SMOKE=1

bench: $(STAMP)
	$(BIN)/python bench/run.py --device $(DEVICE)

demo: $(STAMP)
	$(BIN)/python -m cam_core demo --out results/demo.png

## JupyterLab on the chapters and the course: this environment's kernel first, nbgrader's formgrader on
## course/ (LAB_ARGS="--no-browser --port 8899" for a server without a browser). An existing environment
## (VENV=...) that already imports cam_core, JupyterLab and nbgrader is used as it is: nothing installed.
lab:
	@$(BIN)/python -P -c "import cam_core, jupyterlab, nbgrader" 2>/dev/null || $(MAKE) --no-print-directory venv
	JUPYTER_PATH="$(abspath $(VENV))/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH}" \
	JUPYTER_CONFIG_PATH="$(CURDIR)/course$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
		$(BIN)/jupyter lab --CourseDirectory.root="$(CURDIR)/course" \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

clean:
	rm -rf book/_build build results/cache
