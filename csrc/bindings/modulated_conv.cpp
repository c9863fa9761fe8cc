#include "binding.h"
#include "mcnet_rt/modulated_conv.h"

namespace py = pybind11;
using mcnet_rt::pointer;
using std::uintptr_t;

namespace {

mcnet_rt::PerSampleConvShape make_shape(const py::tuple& t) {
  if (t.size() != 7) throw py::value_error("persample conv shape: expected 7 values");
  return {t[0].cast<int>(), t[1].cast<int>(), t[2].cast<int>(), t[3].cast<int>(),
          t[4].cast<int>(), t[5].cast<int>(), t[6].cast<long long>()};
}

mcnet_rt::DemodulationShape make_demod_shape(const py::tuple& t) {
  if (t.size() != 4) throw py::value_error("demodulation shape: expected 4 values");
  return {t[0].cast<int>(), t[1].cast<int>(), t[2].cast<int>(), t[3].cast<int>()};
}

}  // namespace

MCNET_RT_BINDING(modulated_conv) {
  m.def(
      "persample_conv2d",
      [](bool cuda, int dtype, py::tuple shape, bool transposed, uintptr_t x, uintptr_t weight, uintptr_t mix,
         uintptr_t in_scale, uintptr_t out_scale, uintptr_t bias, uintptr_t out, uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::persample_conv2d_cuda(
                       t, s, transposed, pointer(x), pointer(weight), pointer(mix), pointer(in_scale),
                       pointer(out_scale), pointer(bias), pointer(out), pointer(stream)))
                 : mcnet_rt::persample_conv2d_cpu(t, s, transposed, pointer(x), pointer(weight), pointer(mix),
                                                  pointer(in_scale), pointer(out_scale), pointer(bias),
                                                  pointer(out));
        mcnet_rt::check_status(status, "persample_conv2d", cuda);
      },
      "shape = (batch, in_channels, out_channels, height, width, experts, x_batch_stride); transposed runs the "
      "input gradient; pointers as integers, 0 for an absent mix, scale or bias");
  m.def(
      "persample_conv2d_weight_grad",
      [](bool cuda, int dtype, py::tuple shape, uintptr_t x, uintptr_t grad_out, uintptr_t grad_weight,
         uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::persample_conv2d_weight_grad_cuda(
                       t, s, pointer(x), pointer(grad_out), pointer(grad_weight), pointer(stream)))
                 : mcnet_rt::persample_conv2d_weight_grad_cpu(t, s, pointer(x), pointer(grad_out),
                                                              pointer(grad_weight));
        mcnet_rt::check_status(status, "persample_conv2d_weight_grad", cuda);
      },
      "grad_weight (batch, out_channels, in_channels, 3, 3) float, written");
  m.def(
      "demodulation_forward",
      [](bool cuda, int dtype, py::tuple shape, uintptr_t weight, uintptr_t styles, double eps, uintptr_t demod,
         uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_demod_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::demodulation_forward_cuda(t, s, pointer(weight), pointer(styles),
                                                                          eps, pointer(demod), pointer(stream)))
                 : mcnet_rt::demodulation_forward_cpu(t, s, pointer(weight), pointer(styles), eps, pointer(demod));
        mcnet_rt::check_status(status, "demodulation_forward", cuda);
      },
      "shape = (batch, in_channels, out_channels, taps)");
  m.def(
      "demodulation_backward",
      [](bool cuda, int dtype, py::tuple shape, uintptr_t weight, uintptr_t styles, uintptr_t demod,
         uintptr_t grad_demod, uintptr_t grad_weight, uintptr_t grad_styles, uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_demod_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::demodulation_backward_cuda(
                       t, s, pointer(weight), pointer(styles), pointer(demod), pointer(grad_demod),
                       pointer(grad_weight), pointer(grad_styles), pointer(stream)))
                 : mcnet_rt::demodulation_backward_cpu(t, s, pointer(weight), pointer(styles), pointer(demod),
                                                       pointer(grad_demod), pointer(grad_weight),
                                                       pointer(grad_styles));
        mcnet_rt::check_status(status, "demodulation_backward", cuda);
      },
      "gradients written as float, 0 for one not needed");
}
