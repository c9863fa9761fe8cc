// CUDA runtime queries the bindings need, behind torch- and CUDA-free declarations.
#pragma once

namespace mcnet_rt {

// Message of a cudaError_t returned by a launcher.
const char* cuda_error_string(int code);

// Visible CUDA devices; -cudaError_t when the runtime cannot talk to a driver (e.g. no GPU on this machine).
int cuda_device_count();

}  // namespace mcnet_rt
