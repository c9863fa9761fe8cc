// CPU twin of kernels/warp.cu: the same per-pixel, per-channel-chunk math, run serially in float32 or float64.
#include "mcnet_rt/detail/warp_math.h"

namespace mcnet_rt {
namespace {

template <typename T>
void forward(const WarpShape& s, const T* features, const T* deformation, const T* occlusion, T* out) {
  const long long samples = static_cast<long long>(s.batch) * s.grids;
  const int chunks = detail::warp_channel_chunks(s.channels);
  for (long long n = 0; n < samples; ++n)
    for (int chunk = 0; chunk < chunks; ++chunk)
      for (int y = 0; y < s.height; ++y)
        for (int x = 0; x < s.width; ++x)
          detail::warp_forward_pixel<T, T>(s, n, chunk, y, x, features, deformation, occlusion, out);
}

template <typename T>
void backward(const WarpShape& s, const T* features, const T* deformation, const T* occlusion, const T* grad_out,
              T* grad_features, T* grad_deformation, T* grad_occlusion) {
  const auto add = [](T* target, T value) { *target += value; };
  const long long samples = static_cast<long long>(s.batch) * s.grids;
  const int chunks = detail::warp_channel_chunks(s.channels);
  for (long long n = 0; n < samples; ++n)
    for (int chunk = 0; chunk < chunks; ++chunk)
      for (int y = 0; y < s.height; ++y)
        for (int x = 0; x < s.width; ++x)
          detail::warp_backward_pixel<T, T>(s, n, chunk, y, x, features, deformation, occlusion, grad_out,
                                            grad_features, grad_deformation, grad_occlusion, add);
}

}  // namespace

int warp_forward_cpu(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                     const void* occlusion, void* out) {
  switch (dtype) {
    case DType::Float32:
      forward(s, static_cast<const float*>(features), static_cast<const float*>(deformation),
              static_cast<const float*>(occlusion), static_cast<float*>(out));
      return 0;
    case DType::Float64:
      forward(s, static_cast<const double*>(features), static_cast<const double*>(deformation),
              static_cast<const double*>(occlusion), static_cast<double*>(out));
      return 0;
    default:
      return kUnsupported;
  }
}

int warp_backward_cpu(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                      const void* occlusion, const void* grad_out, void* grad_features, void* grad_deformation,
                      void* grad_occlusion) {
  switch (dtype) {
    case DType::Float32:
      backward(s, static_cast<const float*>(features), static_cast<const float*>(deformation),
               static_cast<const float*>(occlusion), static_cast<const float*>(grad_out),
               static_cast<float*>(grad_features), static_cast<float*>(grad_deformation),
               static_cast<float*>(grad_occlusion));
      return 0;
    case DType::Float64:
      backward(s, static_cast<const double*>(features), static_cast<const double*>(deformation),
               static_cast<const double*>(occlusion), static_cast<const double*>(grad_out),
               static_cast<double*>(grad_features), static_cast<double*>(grad_deformation),
               static_cast<double*>(grad_occlusion));
      return 0;
    default:
      return kUnsupported;
  }
}

}  // namespace mcnet_rt
