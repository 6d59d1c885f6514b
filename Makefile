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

## Debian's packages that tests and tools need: $(apt_need) installs $(PKG) with apt when none of the
## commands $(CMDS) is on PATH and make runs as root; otherwise it says what is lost without it ($(WITHOUT)).
define apt_need
	@for c in $(CMDS); do command -v $$c >/dev/null 2>&1 && exit 0; done; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing Debian's $(PKG) $(FOR)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PKG) >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PKG) >/dev/null 2>&1; } || \
	  echo "make: could not install $(PKG); $(WITHOUT)"; \
	else echo "make: no $(PKG) and not root: $(WITHOUT) (apt-get install $(PKG))"; fi
endef

## Debian's chromium, for the test that opens the built pages offline (tests/test_book.py); without it
## that test is skipped and says why.
browser: CMDS = chromium chromium-browser
browser: PKG = chromium
browser: FOR = for the offline-math browser test
browser: WITHOUT = the browser test will be skipped
browser:
	$(apt_need)

## Debian's bubblewrap, the sandbox `course grade` runs each submission in (cam_core/book/course_sandbox.py,
## tests/test_course.py); without it grading refuses to run (it says how to install it) and the course's
## grading tests are skipped.
sandbox: CMDS = bwrap
sandbox: PKG = bubblewrap
sandbox: FOR = for the course grader's sandbox
sandbox: WITHOUT = course grade will refuse to run and its grading tests will be skipped
sandbox:
	$(apt_need)

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
