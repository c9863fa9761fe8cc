#include <cuda_runtime.h>

#include "mcnet_rt/runtime.h"

namespace mcnet_rt {

const char* cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

int cuda_device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  return status == cudaSuccess ? count : -static_cast<int>(status);
}

}  // namespace mcnet_rt
