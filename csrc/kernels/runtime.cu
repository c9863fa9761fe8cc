#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <utility>

#include "cuda_types.cuh"
#include "mcnet_rt/runtime.h"

namespace mcnet_rt {

const char* cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

int cuda_device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  return status == cudaSuccess ? count : -static_cast<int>(status);
}

int cuda_driver_version() {
  int version = 0;
  return cudaDriverGetVersion(&version) == cudaSuccess ? version : 0;
}

int cuda_runtime_version() { return CUDART_VERSION; }

std::vector<int> cuda_sass_archs() { return {MCNET_RT_SASS_ARCHS}; }

int cuda_ptx_arch() { return MCNET_RT_PTX_ARCH; }

cudaError_t reserve_shared_memory(const void* kernel, size_t bytes) {
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> reserved;
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& granted = reserved[{kernel, device}];
  if (granted >= bytes) return cudaSuccess;
  status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (status == cudaSuccess) granted = bytes;
  return status;
}

}  // namespace mcnet_rt
