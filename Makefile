# The README's two commands. Both install what is missing, build, then run; both are idempotent.
#   make demo   the main job on the embedded default
#   make test   ctest (plain and ASan/UBSan builds) and pytest
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

test: build cpp-test cpp-test-asan pytest

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
