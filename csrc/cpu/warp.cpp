// CPU twin of kernels/warp.cu: the same work items and math, run serially in float32 or float64.
#include "mcnet_rt/detail/warp_math.h"

namespace mcnet_rt {
namespace {

template <typename T>
void forward(const WarpShape& s, const T* features, const T* deformation, const T* occlusion, T* out) {
  for (long long i = 0, items = detail::warp_items(s); i < items; ++i)
    detail::warp_forward_item<T, T>(s, detail::warp_item(s, i), features, deformation, occlusion, out);
}

template <typename T>
void backward(const WarpShape& s, const T* features, const T* deformation, const T* occlusion, const T* grad_out,
              T* grad_features, T* grad_deformation, T* grad_occlusion) {
  const auto add = [](T* target, T value) { *target += value; };
  for (long long i = 0, items = detail::warp_items(s); i < items; ++i)
    detail::warp_backward_item<T, T>(s, detail::warp_item(s, i), features, deformation, occlusion, grad_out,
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
