// Element types of the CUDA kernels and the DType -> C++ type dispatch shared by every launcher.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <type_traits>

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

// Whether the architecture being compiled has WMMA 16×16×16 for element type T: half from sm_70, bfloat16 from
// sm_80 (float runs on the FMA units). Kernels pick a SIMT body where it is false, so that the sm_75 image of a
// bfloat16 kernel works (slowly: Turing has no bfloat16 arithmetic). The host pass answers for sm_80 and newer:
// host code must not size anything by it without covering the SIMT body too.
template <typename T>
constexpr bool has_tensor_cores() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  return std::is_same<T, __half>::value;
#else
  return std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value;
#endif
}

// Raises `kernel`'s dynamic shared-memory limit to at least `bytes` on the current device. The attribute is
// per device; it is set once per (kernel, device) and again only for a larger request (runtime.cu).
cudaError_t reserve_shared_memory(const void* kernel, size_t bytes);

inline int blocks_for(long long items, int threads) {
  const long long blocks = (items + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 32 ? blocks : 65535 * 32);
}

}  // namespace mcnet_rt
