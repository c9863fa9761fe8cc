// What every mcnet_rt torch op needs around a launcher, on PyTorch's stable ABI (torch/csrc/stable, built with
// TORCH_TARGET_VERSION = 2.11, so one build loads in torch 2.11 and newer): operand checks with errors that name
// the op and the operand (the rules of mcnet_rt/ops/_checks.py, which the fake implementations run), the dtype
// table of mcnet_rt/limits.h, and a launch on the operands' device (device guard, current stream).
#pragma once

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mcnet_rt/common.h"
#include "mcnet_rt/runtime.h"

namespace mcnet_rt::ops {

using torch::stable::Device;
using torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using Dtypes = std::vector<ScalarType>;
using Library = torch::stable::detail::StableLibrary;

// Raises the error that reaches Python as RuntimeError (and C++ callers as std::runtime_error).
[[noreturn]] void fail(const std::string& message);
inline void check(bool condition, const std::string& message) {
  if (!condition) fail(message);
}

std::string name(ScalarType dtype);
std::string name(const Device& device);
std::string shape(const Tensor& t);

// The element types the launchers run on `device` (the table in mcnet_rt/limits.h).
Dtypes kernel_dtypes(const Device& device);
DType dtype_code(ScalarType dtype);
// Kernels accumulate in float32 (float64 for the float64 twins): sampling grids, scales and gradients use it.
ScalarType accumulation_dtype(ScalarType dtype);

// `t` is a packed `ndim`-D tensor of one of `dtypes` on `device`, small enough for 32-bit indexing.
void check_tensor(const char* op, const char* operand, const Tensor& t, const Dtypes& dtypes, const Device& device,
                  int64_t ndim);
// t.size(dim) == expected, a relation to another operand described by `what`.
void check_size(const char* op, const char* operand, const Tensor& t, int64_t dim, int64_t expected,
                const char* what);

// `out` is a packed tensor of `like`'s dtype and device with the shape `sizes` (an `_into` op's output).
void check_out(const char* op, const Tensor& out, const Tensor& like, const std::vector<int64_t>& sizes);
// The first rows × cols elements of a 1-D packed `workspace` in `dtype` on `device`, as a (rows, cols) tensor: an
// `_into` op's temporaries live there. An error names the op and the elements needed when it is too small.
Tensor workspace_rows(const char* op, Tensor workspace, int64_t rows, int64_t cols, ScalarType dtype,
                      const Device& device);
// A fresh 1-D workspace of `elements` in `dtype` on `like`'s device (the allocating public ops).
Tensor new_workspace(const Tensor& like, int64_t elements, ScalarType dtype);

// A launcher's optional operand: its data, or null when absent.
inline void* data(const std::optional<Tensor>& t) { return t ? t->data_ptr() : nullptr; }

// PyTorch's current CUDA stream on the device (the torch shim of the CUDA build), null for CPU tensors.
Stream current_stream(const Tensor& on);

// Turns a launcher's status into an error naming the op.
void check_status(int status, const char* op, bool cuda);

// Runs launch(cuda, stream) -> status on `on`'s device: the CPU twin, or the CUDA launcher with the device made
// current (the launchers take no device) on PyTorch's current stream.
template <class Launch>
void run(const char* op, const Tensor& on, Launch&& launch) {
  const bool cuda = on.is_cuda();
  if (!cuda) return check_status(launch(false, Stream{}), op, false);
  torch::stable::accelerator::DeviceGuard guard(on.get_device_index());
  check_status(launch(true, current_stream(on)), op, true);
}

}  // namespace mcnet_rt::ops

// Registers a family's implementations (`register_fn(m)`) for CPU tensors (the twins) and, in a CUDA build, for
// CUDA tensors (the kernels): one function per op serves both, `run` picks the launcher.
#ifdef MCNET_RT_WITH_CUDA
#define MCNET_RT_REGISTER_IMPLS(register_fn)                       \
  STABLE_TORCH_LIBRARY_IMPL(mcnet_rt, CPU, m) { register_fn(m); } \
  STABLE_TORCH_LIBRARY_IMPL(mcnet_rt, CUDA, m) { register_fn(m); }
#else
#define MCNET_RT_REGISTER_IMPLS(register_fn) \
  STABLE_TORCH_LIBRARY_IMPL(mcnet_rt, CPU, m) { register_fn(m); }
#endif
