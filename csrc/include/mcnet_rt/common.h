// Shared vocabulary of the torch-free launchers: element types and streams as plain values, so that the
// kernels, their CPU twins, the pybind11 module and any other host (C++ tests, TensorRT plugins) agree on them
// without including torch or CUDA headers.
#pragma once

#include <cstdint>

namespace mcnet_rt {

// Element type of a launcher's tensors; the numbering is part of the Python binding's contract.
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

// A cudaStream_t passed through code that must not see CUDA headers.
using Stream = void*;

// CUDA launchers return a cudaError_t as int (0 on success); CPU twins return 0 or kUnsupported.
constexpr int kUnsupported = -1;

}  // namespace mcnet_rt
