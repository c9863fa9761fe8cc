#!/usr/bin/env bash
# One device session (see README, "GPU checks"), in the order of issue 10: build mcnet_rt._C for this GPU, the
# CUDA tests (pytest marker `cuda`) plus the dispatch and build tests, compute-sanitizer memcheck and racecheck on
# one small case per op family, `mcnet-rt info --kernels`, then the op, frame-latency and training-step
# benchmarks. Everything that should come back is written under $OUT. On the GPU machine, from the repository root:
#   OUT=/path/to/out bash benchmarks/gpu_session.sh   # SANITIZE=0 skips the sanitizer, BENCH=0 the benchmarks,
#                                                      # BACKENDS=0 the backends' comparison
set -uo pipefail
OUT=${OUT:?set OUT to the folder that receives the results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:$PWD/benchmarks
export MCNET_RT_DISPATCH_CACHE="$OUT/dispatch.json"
step() { echo "== $1 ($(date +%T))"; }
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
git rev-parse --short HEAD > "$OUT/commit.txt" 2>/dev/null || true
# Machine code for this GPU only: a full build (csrc/build.json) costs minutes of device time.
export MCNET_RT_CUDA_ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d " .")
step "build for sm_$MCNET_RT_CUDA_ARCHS"
{ time MCNET_RT_CUDA=1 MAX_JOBS=16 python setup.py build_ext --inplace; } \
  > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
step "tests"
python -m pytest -q -p no:cacheprovider -m cuda tests > "$OUT/tests_cuda.log" 2>&1; tail -5 "$OUT/tests_cuda.log"
python -m pytest -q -p no:cacheprovider tests/test_native_build.py tests/test_dispatch.py tests/test_ops_library.py \
  > "$OUT/tests_dispatch.log" 2>&1; tail -3 "$OUT/tests_dispatch.log"
if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    for family in warp modulated_conv memory_attention; do
      step "compute-sanitizer $tool $family"
      compute-sanitizer --tool "$tool" --error-exitcode 1 python benchmarks/sanitize_case.py "$family" \
        > "$OUT/sanitizer_${tool}_${family}.log" 2>&1
      echo "exit $?"; tail -2 "$OUT/sanitizer_${tool}_${family}.log"
    done
  done
fi
python -m mcnet_rt info --kernels --json > "$OUT/info_kernels.json" 2>&1
if [ "${BENCH:-1}" = 1 ]; then
  step "op benchmarks"
  python benchmarks/ops.py --output "$OUT/ops_cuda.json" > "$OUT/ops.log" 2>&1; tail -3 "$OUT/ops.log"
  step "frame latency"
  python benchmarks/frame_latency.py --output "$OUT/frame_latency_cuda_vox-256.json" > "$OUT/frame_latency.log" 2>&1
  tail -8 "$OUT/frame_latency.log"
  if [ "${BACKENDS:-1}" = 1 ]; then  # the engines side by side (issue 12: vox-256 fp16, batch 1 and 8)
    step "backends"
    python benchmarks/frame_latency.py --precisions fp16 --batches 1 8 --impls auto \
      --backend eager compiled aoti onnxruntime tensorrt --warmup 10 --iterations 100 \
      --output "$OUT/frame_latency_cuda_vox-256_backends.json" > "$OUT/frame_latency_backends.log" 2>&1
    tail -12 "$OUT/frame_latency_backends.log"
  fi
  step "training step"
  python benchmarks/training_step.py --output "$OUT/training_step_cuda.json" > "$OUT/training_step.log" 2>&1
  tail -8 "$OUT/training_step.log"
fi
python -m mcnet_rt info --kernels > "$OUT/info_kernels.txt" 2>&1
step done
