#!/usr/bin/env bash
# One device session (see README, "GPU checks"): build mcnet_rt._C from source with nvcc, run the test suite
# (the CUDA tests run only here), then the op, frame-latency and training-step benchmarks; everything that should
# come back is written under $OUT. Usage on the GPU machine, from the repository root:
#   OUT=/path/to/out bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:?set OUT to the folder that receives the results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:$PWD/benchmarks
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
git rev-parse --short HEAD > "$OUT/commit.txt" 2>/dev/null || true
{ MCNET_RT_CUDA=1 MAX_JOBS=16 python setup.py build_ext --inplace; } > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
python -m pytest -q -p no:cacheprovider tests/test_warp_kernels.py tests/test_memory_attention_kernels.py \
  tests/test_modulated_conv_kernels.py tests/test_equivalence.py tests/test_native_build.py > "$OUT/tests.log" 2>&1
tail -5 "$OUT/tests.log"
python benchmarks/ops.py --output "$OUT/ops_cuda.json" > "$OUT/ops.log" 2>&1; tail -3 "$OUT/ops.log"
python benchmarks/frame_latency.py --output "$OUT/frame_latency_cuda_vox-256.json" > "$OUT/frame_latency.log" 2>&1
tail -8 "$OUT/frame_latency.log"
if [ -f benchmarks/training_step.py ]; then
  python benchmarks/training_step.py --output "$OUT/training_step_cuda.json" > "$OUT/training_step.log" 2>&1
  tail -8 "$OUT/training_step.log"
fi
