// The pybind11 module mcnet_rt._C: the launchers of every op family, CPU twins always, CUDA kernels when the
// module was built with nvcc.
#include <stdexcept>
#include <string>
#include <vector>

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
#else
  m.attr("with_cuda") = false;
  m.def("cuda_device_count", []() { return 0; }, "visible CUDA devices (this build has no CUDA)");
#endif
  for (mcnet_rt::Binder bind : mcnet_rt::binders()) bind(m);
}
