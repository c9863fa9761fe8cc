// CUDA runtime queries the bindings need, behind torch- and CUDA-free declarations.
#pragma once

#include <stdexcept>
#include <vector>

namespace mcnet_rt {

// Message of a cudaError_t returned by a launcher.
const char* cuda_error_string(int code);

// Visible CUDA devices; -cudaError_t when the runtime cannot talk to a driver (e.g. no GPU on this machine).
int cuda_device_count();

// The installed driver's CUDA version (1000·major + 10·minor, e.g. 12080), 0 without a driver.
int cuda_driver_version();

// The CUDA runtime linked into the module (same encoding): the driver must support at least its major version.
int cuda_runtime_version();

// Architectures with machine code in the module (e.g. 75, 80, ...) and the one whose PTX is embedded for
// JIT compilation on newer GPUs (csrc/build.json).
std::vector<int> cuda_sass_archs();
int cuda_ptx_arch();

}  // namespace mcnet_rt

// A CUDA launcher call from a host (the bindings, the torch ops); without a CUDA build it throws instead and
// references no CUDA symbol.
#ifdef MCNET_RT_WITH_CUDA
#define MCNET_RT_CUDA_CALL(call) (call)
#else
#define MCNET_RT_CUDA_CALL(call) \
  (throw std::runtime_error("mcnet_rt was built without CUDA (no nvcc at build time)"), 0)
#endif
