# The README's two commands. Both install what is missing, build, then run; both are idempotent.
#   make demo   the main job on the embedded default
#   make test   ctest (plain and ASan/UBSan builds), pytest, and the patch tests under transformers 5.2
PYTHON ?= python3
PIP := $(PYTHON) -m pip
JOBS ?= 2
SPATTEN_DATA_DIR ?= $(abspath ../shared/data)
export SPATTEN_DATA_DIR
# Keep transformers from ever reaching for a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# python3-venv and binutils (objdump): the packaging test's fresh venvs and its ISA check.
APT_PACKAGES := libeigen3-dev libgtest-dev libyaml-cpp-dev python3-venv binutils
# Portable (baseline x86-64) builds unless SPATTEN_NATIVE_ARCH=ON is given (docs/install.md); pip reads it too.
SPATTEN_NATIVE_ARCH ?= OFF
export SPATTEN_NATIVE_ARCH
CMAKE_TEST_FLAGS := -DSPATTEN_BUILD_TESTS=ON -DSPATTEN_BUILD_PYTHON=OFF -DSPATTEN_NATIVE_ARCH=$(SPATTEN_NATIVE_ARCH) -G Ninja

.PHONY: demo test deps build cpp-test cpp-test-asan pytest bench clean

demo: build
	$(PYTHON) -m spatten demo

test: build cpp-test cpp-test-asan pytest peers-test

deps:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q $(APT_PACKAGES); }
	@# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	@$(PYTHON) -c "import torch, sys; sys.exit(not torch.__version__.startswith('2.13.'))" 2>/dev/null \
		|| $(PIP) install -q torch==2.13.0
	@# build: `python -m build` for the packaging test (tests/test_packaging.py).
	@$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake build

# Editable install against the installed torch; serialised so parallel builds never share a build dir.
build: deps
	@mkdir -p build
	flock build/.lock $(PIP) install -q --no-build-isolation -e ".[test,models,ray]"

cpp-test: deps
	cmake -S . -B build/cpp $(CMAKE_TEST_FLAGS) -DCMAKE_BUILD_TYPE=Release
	cmake --build build/cpp -j $(JOBS)
	ctest --test-dir build/cpp --output-on-failure -j $(JOBS)

cpp-test-asan: deps
	cmake -S . -B build/cpp-asan $(CMAKE_TEST_FLAGS) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPATTEN_SANITIZE=ON
	cmake --build build/cpp-asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --test-dir build/cpp-asan --output-on-failure -j $(JOBS)

pytest: build
	$(PYTHON) -m pytest -q

bench: build
	$(PYTHON) experiments/bench_ops.py

clean:
	rm -rf build results

# ---- kvpress comparison (issue 9) ------------------------------------------------------------------------
# kvpress 0.5.5 needs transformers < 5.3 and pandas < 3, so the comparison has its own venv, built once and reused.
#   make peers        regenerate results/compare_kvpress.md (the README's table) from nothing
#   make peers-test   the patch tests under transformers 5.2 (the main venv covers the latest 5.x)
PEERS_VENV ?= build/peers-venv
PEERS_PY := $(PEERS_VENV)/bin/python

.PHONY: peers peers-venv peers-build peers-test

peers-venv: $(PEERS_VENV)/.ready

$(PEERS_VENV)/.ready:
	$(PYTHON) -m venv $(PEERS_VENV)
	@# torch first and pinned (see deps).
	$(PEERS_PY) -m pip install -q torch==2.13.0
	$(PEERS_PY) -m pip install -q "transformers==5.2.*" "pandas<3" "kvpress==0.5.5" numpy pyyaml scipy tqdm \
		matplotlib pytest "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
	touch $@

# spatten itself, rebuilt when the sources changed; its own build dir, so it never reconfigures the main build.
peers-build: peers-venv
	@mkdir -p build
	flock build/.lock $(PEERS_PY) -m pip install -q --no-build-isolation --no-deps \
		-Cbuild-dir=build/peers-{wheel_tag} -e .

peers: deps peers-build
	OMP_NUM_THREADS=2 $(PEERS_PY) experiments/compare_kvpress.py --out results/compare_kvpress

peers-test: deps peers-build
	OMP_NUM_THREADS=1 $(PEERS_PY) -m pytest -q tests/test_patch.py tests/test_generation_eviction.py \
		tests/test_generation_causality.py tests/test_kv_compare.py
