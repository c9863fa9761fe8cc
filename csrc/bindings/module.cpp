// The pybind11 module mcnet_rt._C: what the build holds (CUDA archs, runtime), what the machine has (devices,
// driver; through the build's own static CUDA runtime, so a driver too old for it is seen before any kernel runs)
// and the dtype/limits table. The ops themselves are the torch library mcnet_rt/_ops.so (csrc/torch).
#include <vector>

#include <pybind11/stl.h>

#include "binding.h"
#include "mcnet_rt/runtime.h"

namespace mcnet_rt {
namespace {

std::vector<Binder>& binders() {
  static std::vector<Binder> all;
  return all;
}

}  // namespace

int register_binder(Binder binder) {
  binders().push_back(binder);
  return static_cast<int>(binders().size());
}

}  // namespace mcnet_rt

PYBIND11_MODULE(_C, m) {
  m.doc() = "mcnet_rt native build facts: CUDA archs and runtime, devices, driver, dtype codes and limits";
#ifdef MCNET_RT_WITH_CUDA
  m.attr("with_cuda") = true;
  m.def("cuda_device_count", &mcnet_rt::cuda_device_count,
        "visible CUDA devices, or -cudaError_t when no driver answers");
  m.def("cuda_driver_version", &mcnet_rt::cuda_driver_version,
        "the driver's CUDA version (1000·major + 10·minor), 0 without a driver");
  m.attr("cuda_runtime_version") = mcnet_rt::cuda_runtime_version();
  m.attr("cuda_archs") = pybind11::tuple(pybind11::cast(mcnet_rt::cuda_sass_archs()));
  m.attr("ptx_arch") = mcnet_rt::cuda_ptx_arch();
#else
  m.attr("with_cuda") = false;
  m.def("cuda_device_count", []() { return 0; }, "visible CUDA devices (this build has no CUDA)");
  m.def("cuda_driver_version", []() { return 0; }, "the driver's CUDA version (this build has no CUDA)");
  m.attr("cuda_runtime_version") = 0;
  m.attr("cuda_archs") = pybind11::tuple();
  m.attr("ptx_arch") = 0;
#endif
  for (mcnet_rt::Binder bind : mcnet_rt::binders()) bind(m);
}
