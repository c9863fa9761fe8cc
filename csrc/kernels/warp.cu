// Fused warp: deformation resize + grid sample + occlusion multiply, one thread per output pixel and chunk of
// channels (the resized grid and occlusion are computed per pixel and never stored). Consecutive threads take
// consecutive pixels of one chunk, so reads of the grid and writes of each channel plane are coalesced.
#include "cuda_types.cuh"
#include "mcnet_rt/detail/warp_math.h"

namespace mcnet_rt {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void warp_forward_kernel(WarpShape s, const T* __restrict__ features,
                                    const float* __restrict__ deformation, const float* __restrict__ occlusion,
                                    T* __restrict__ out) {
  const long long items = detail::warp_items(s);
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    detail::warp_forward_item<T, float>(s, detail::warp_item(s, i), features, deformation, occlusion, out);
  }
}

struct AtomicAdd {
  __device__ void operator()(float* target, float value) const { atomicAdd(target, value); }
};

template <typename T>
__global__ void warp_backward_kernel(WarpShape s, const T* __restrict__ features,
                                     const float* __restrict__ deformation, const float* __restrict__ occlusion,
                                     const T* __restrict__ grad_out, float* grad_features, float* grad_deformation,
                                     float* grad_occlusion) {
  const long long items = detail::warp_items(s);
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    detail::warp_backward_item<T, float>(s, detail::warp_item(s, i), features, deformation, occlusion, grad_out,
                                         grad_features, grad_deformation, grad_occlusion, AtomicAdd{});
  }
}

}  // namespace

int warp_forward_cuda(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                      const void* occlusion, void* out, Stream stream) {
  const long long total = detail::warp_items(s);
  if (total == 0) return 0;
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    warp_forward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        s, static_cast<const T*>(features), static_cast<const float*>(deformation),
        static_cast<const float*>(occlusion), static_cast<T*>(out));
    return static_cast<int>(cudaGetLastError());
  });
}

int warp_backward_cuda(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                       const void* occlusion, const void* grad_out, void* grad_features, void* grad_deformation,
                       void* grad_occlusion, Stream stream) {
  const long long total = detail::warp_items(s);
  if (total == 0) return 0;
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    warp_backward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        s, static_cast<const T*>(features), static_cast<const float*>(deformation),
        static_cast<const float*>(occlusion), static_cast<const T*>(grad_out), static_cast<float*>(grad_features),
        static_cast<float*>(grad_deformation), static_cast<float*>(grad_occlusion));
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace mcnet_rt
