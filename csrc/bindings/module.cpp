// The pybind11 module mcnet_rt._C: the launchers of every op family, CPU twins always, CUDA kernels when the
// module was built with nvcc.
#include <stdexcept>
#include <string>
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

void check_status(int status, const char* op, bool cuda) {
  if (status == 0) return;
  if (status == kUnsupported) throw pybind11::type_error(std::string(op) + ": unsupported element type");
#ifdef MCNET_RT_WITH_CUDA
  if (cuda) throw std::runtime_error(std::string(op) + ": CUDA error: " + cuda_error_string(status));
#endif
  throw std::runtime_error(std::string(op) + ": failed with status " + std::to_string(status));
}

}  // namespace mcnet_rt

PYBIND11_MODULE(_C, m) {
  m.doc() = "mcnet_rt native kernels: torch-free launchers taking pointers, sizes and a stream";
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
