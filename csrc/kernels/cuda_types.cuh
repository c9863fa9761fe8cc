// Element types of the CUDA kernels and the DType -> C++ type dispatch shared by every launcher.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "mcnet_rt/common.h"

namespace mcnet_rt {

// Calls f(T{}) with T the element type named by `dtype`; returns kUnsupported for types without a kernel.
template <typename F>
int dispatch_cuda_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(float{});
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
    default: return kUnsupported;
  }
}

inline int blocks_for(long long items, int threads) {
  const long long blocks = (items + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 32 ? blocks : 65535 * 32);
}

}  // namespace mcnet_rt
