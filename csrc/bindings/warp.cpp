#include "binding.h"
#include "mcnet_rt/warp.h"

namespace py = pybind11;
using mcnet_rt::pointer;
using std::uintptr_t;

namespace {

mcnet_rt::WarpShape make_shape(const py::tuple& t) {
  if (t.size() != 10) throw py::value_error("warp shape: expected 10 values");
  return {t[0].cast<int>(), t[1].cast<int>(), t[2].cast<int>(), t[3].cast<int>(), t[4].cast<int>(),
          t[5].cast<int>(), t[6].cast<int>(), t[7].cast<int>(), t[8].cast<int>(), t[9].cast<bool>()};
}

}  // namespace

MCNET_RT_BINDING(warp) {
  m.def(
      "warp_forward",
      [](bool cuda, int dtype, py::tuple shape, uintptr_t features, uintptr_t deformation, uintptr_t occlusion,
         uintptr_t out, uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::warp_forward_cuda(t, s, pointer(features), pointer(deformation),
                                                                  pointer(occlusion), pointer(out), pointer(stream)))
                 : mcnet_rt::warp_forward_cpu(t, s, pointer(features), pointer(deformation), pointer(occlusion),
                                              pointer(out));
        mcnet_rt::check_status(status, "warp_forward", cuda);
      },
      "shape = (batch, grids, channels, height, width, grid_h, grid_w, occ_h, occ_w, align_corners); "
      "pointers as integers, 0 for no occlusion map");
  m.def(
      "warp_backward",
      [](bool cuda, int dtype, py::tuple shape, uintptr_t features, uintptr_t deformation, uintptr_t occlusion,
         uintptr_t grad_out, uintptr_t grad_features, uintptr_t grad_deformation, uintptr_t grad_occlusion,
         uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::warp_backward_cuda(
                       t, s, pointer(features), pointer(deformation), pointer(occlusion), pointer(grad_out),
                       pointer(grad_features), pointer(grad_deformation), pointer(grad_occlusion), pointer(stream)))
                 : mcnet_rt::warp_backward_cpu(t, s, pointer(features), pointer(deformation), pointer(occlusion),
                                               pointer(grad_out), pointer(grad_features), pointer(grad_deformation),
                                               pointer(grad_occlusion));
        mcnet_rt::check_status(status, "warp_backward", cuda);
      },
      "gradients accumulate into zeroed float buffers; 0 for a gradient not needed");
}
