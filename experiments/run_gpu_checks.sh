#!/usr/bin/env bash
# The checks for a lent GPU machine (CUDA torch, no apt, no network): build the ops with their CUDA
# implementations, test every op against its reference, and time the CUDA ops. Eigen comes as a carried prefix.
#   EIGEN_PREFIX=/path/with/include/eigen3 bash experiments/run_gpu_checks.sh OUTDIR
set -uo pipefail
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
if ! python3 -m pip install --no-build-isolation --no-deps -e . -Cbuild-dir=build/gpu \
    -Ccmake.define.SPATTEN_BUILD_HWSIM=OFF -Ccmake.define.SPATTEN_WITH_CUDA=ON -Ccmake.define.CMAKE_PREFIX_PATH="${EIGEN_PREFIX:-/usr}" \
    >"$out/build.log" 2>&1; then
  tail -n 60 "$out/build.log"
  exit 1
fi
grep -h "spatten: building CUDA" -r build/gpu/CMakeCache.txt build/gpu 2>/dev/null | head -1
python3 -m pytest -q -p no:cacheprovider tests/test_ops_*.py 2>&1 | tee "$out/pytest.log"
python3 experiments/bench_ops_cuda.py 2>&1 | tee "$out/bench_ops_cuda.md"
