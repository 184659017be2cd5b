# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   - venv, requirements, toy data set, train, evaluate, pictures
#                 (MODEL=faster_rcnn, the default, or MODEL=refinedet)
#   make test   - venv, requirements, then the test suite
# (set-up = a venv .venv with requirements.txt and `pip install -e .`, see setup.py)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
MODEL ?= faster_rcnn
SCHEME ?= end2end
OHEM ?= 0
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo toy-data bench clean-venv

# The venv with the pinned requirements, then this project installed into it in editable
# mode (setup.py): `import caffe` and Caffe's commands work from anywhere, and the NMS kernel
# (caffe-fast-rcnn/python/caffe/bbox_util/nms_kernel.c) is compiled next to its source.
# Graphviz's `dot` (for draw_net.py and its tests) is a system package: set-up only says how
# to get it when it is missing.
$(STAMP): requirements.txt setup.py pyproject.toml caffe-fast-rcnn/python/caffe/bbox_util/nms_kernel.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)
	@command -v dot >/dev/null 2>&1 || echo "note: Graphviz's dot is not installed; draw_net.py" \
	  "and its tests need it: apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS)"

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

toy-data: setup
	$(PY) data/scripts/make_toy_dataset.py --out data/toy

# MODEL=faster_rcnn: experiments/scripts/faster_rcnn_*.sh with ToyNet (SCHEME, OHEM);
# MODEL=refinedet: caffe-fast-rcnn's toy LMDBs, examples/refinedet/ToyNet_toy_160.py, its job
# script, test/refinedet_test.py and test/refinedet_demo.py.
demo: setup toy-data
ifeq ($(MODEL),faster_rcnn)
	$(PY) tools/run_demo.py --scheme $(SCHEME) --ohem $(OHEM)
else ifeq ($(MODEL),refinedet)
	$(PY) tools/run_refinedet_demo.py
else
	$(error MODEL must be faster_rcnn or refinedet, not "$(MODEL)")
endif

bench: setup
	$(PY) benchmarks/bench_engine.py

clean-venv:
	rm -rf $(VENV)
