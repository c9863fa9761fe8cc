#include "binding.h"
#include "mcnet_rt/memory_attention.h"

namespace py = pybind11;
using mcnet_rt::pointer;
using std::uintptr_t;

namespace {

mcnet_rt::AttentionShape make_shape(const py::tuple& t) {
  if (t.size() != 5) throw py::value_error("memory attention shape: expected 5 values");
  return {t[0].cast<int>(), t[1].cast<int>(), t[2].cast<int>(), t[3].cast<int>(), t[4].cast<float>()};
}

}  // namespace

MCNET_RT_BINDING(memory_attention) {
  m.def(
      "memory_attention_forward",
      [](bool cuda, int dtype, py::tuple shape, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse,
         uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::memory_attention_forward_cuda(
                       t, s, pointer(q), pointer(k), pointer(v), pointer(out), pointer(lse), pointer(stream)))
                 : mcnet_rt::memory_attention_forward_cpu(t, s, pointer(q), pointer(k), pointer(v), pointer(out),
                                                          pointer(lse));
        mcnet_rt::check_status(status, "memory_attention_forward", cuda);
      },
      "shape = (batch, channels, queries, keys, scale); pointers as integers");
  m.def(
      "memory_attention_backward",
      [](bool cuda, int dtype, py::tuple shape, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse,
         uintptr_t grad_out, uintptr_t delta, uintptr_t grad_q, uintptr_t grad_k, uintptr_t grad_v,
         uintptr_t stream) {
        const auto t = static_cast<mcnet_rt::DType>(dtype);
        const auto s = make_shape(shape);
        const int status =
            cuda ? MCNET_RT_CUDA_CALL(mcnet_rt::memory_attention_backward_cuda(
                       t, s, pointer(q), pointer(k), pointer(v), pointer(out), pointer(lse), pointer(grad_out),
                       pointer(delta), pointer(grad_q), pointer(grad_k), pointer(grad_v), pointer(stream)))
                 : mcnet_rt::memory_attention_backward_cpu(t, s, pointer(q), pointer(k), pointer(v), pointer(out),
                                                           pointer(lse), pointer(grad_out), pointer(delta),
                                                           pointer(grad_q), pointer(grad_k), pointer(grad_v));
        mcnet_rt::check_status(status, "memory_attention_backward", cuda);
      },
      "delta (batch, queries) is scratch; gradients are overwritten, in float32 (float64 for the float64 twin)");
}
