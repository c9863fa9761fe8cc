#include "op_support.h"

#include <sstream>
#include <stdexcept>

#include "mcnet_rt/limits.h"

#ifdef MCNET_RT_WITH_CUDA
#include <dlfcn.h>
#endif

namespace mcnet_rt::ops {

void fail(const std::string& message) { throw std::runtime_error(message); }

std::string name(ScalarType dtype) {
  switch (dtype) {
    case ScalarType::Float: return "float32";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Double: return "float64";
    default: return "scalar type " + std::to_string(static_cast<int>(dtype));
  }
}

std::string name(const Device& device) {
  using torch::headeronly::DeviceType;
  std::string type = device.type() == DeviceType::CPU    ? "cpu"
                     : device.type() == DeviceType::CUDA ? "cuda"
                     : device.type() == DeviceType::Meta ? "meta"
                                                         : "device type " + std::to_string(int(device.type()));
  return device.has_index() && device.type() != DeviceType::CPU ? type + ":" + std::to_string(device.index())
                                                                 : type;
}

std::string shape(const Tensor& t) {
  std::ostringstream out;
  out << "(";
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.size(d);
  out << (t.dim() == 1 ? ",)" : ")");
  return out.str();
}

namespace {

ScalarType scalar_type(DType code) {
  switch (code) {
    case DType::Float32: return ScalarType::Float;
    case DType::Float16: return ScalarType::Half;
    case DType::BFloat16: return ScalarType::BFloat16;
    case DType::Float64: return ScalarType::Double;
  }
  fail("mcnet_rt: unknown dtype code");
}

}  // namespace

Dtypes kernel_dtypes(const Device& device) {
  Dtypes dtypes;
  for (const DTypeInfo& t : kDTypes) {
    if ((device.is_cuda() && t.cuda) || (device.is_cpu() && t.cpu)) dtypes.push_back(scalar_type(t.code));
  }
  return dtypes;
}

DType dtype_code(ScalarType dtype) {
  for (const DTypeInfo& t : kDTypes) {
    if (scalar_type(t.code) == dtype) return t.code;
  }
  fail("mcnet_rt: no kernel runs " + name(dtype));
}

ScalarType accumulation_dtype(ScalarType dtype) {
  return dtype == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

void check_tensor(const char* op, const char* operand, const Tensor& t, const Dtypes& dtypes, const Device& device,
                  int64_t ndim) {
  const std::string who = std::string(op) + ": " + operand;
  bool known = false;
  std::string names;
  for (ScalarType d : dtypes) {
    known = known || d == t.scalar_type();
    names += (names.empty() ? "" : " or ") + name(d);
  }
  check(known, who + " must be " + (names.empty() ? "of a type with a kernel on " + name(device) : names) +
                   ", not " + name(t.scalar_type()));
  check(t.device() == device, who + " is on " + name(t.device()) + ", the op runs on " + name(device));
  check(t.dim() == ndim, who + " must be " + std::to_string(ndim) + "-D, not " + shape(t));
  check(t.is_contiguous(), who + " must be contiguous");
  check(t.numel() <= kMaxElements, who + " has " + std::to_string(t.numel()) + " elements, the kernels index at most " +
                                       std::to_string(kMaxElements));
}

void check_size(const char* op, const char* operand, const Tensor& t, int64_t dim, int64_t expected,
                const char* what) {
  check(t.size(dim) == expected, std::string(op) + ": " + operand + " must have " + what + " (" +
                                     std::to_string(expected) + ") in dim " + std::to_string(dim) + ", not " +
                                     shape(t));
}

void check_out(const char* op, const Tensor& out, const Tensor& like, const std::vector<int64_t>& sizes) {
  bool same = out.dim() == int64_t(sizes.size());
  for (size_t d = 0; same && d < sizes.size(); ++d) same = out.size(int64_t(d)) == sizes[d];
  std::string expected = "(";
  for (size_t d = 0; d < sizes.size(); ++d) expected += (d ? ", " : "") + std::to_string(sizes[d]);
  check(same, std::string(op) + ": out has shape " + shape(out) + ", the output's is " + expected + ")");
  check(out.scalar_type() == like.scalar_type() && out.device() == like.device(),
        std::string(op) + ": out (" + name(out.scalar_type()) + ", " + name(out.device()) + ") must be " +
            name(like.scalar_type()) + " on " + name(like.device()));
  check(out.is_contiguous(), std::string(op) + ": out must be contiguous");
}

Tensor workspace_rows(const char* op, Tensor workspace, int64_t rows, int64_t cols, ScalarType dtype,
                      const Device& device) {
  const std::string who = std::string(op) + ": workspace";
  check(workspace.scalar_type() == dtype && workspace.device() == device && workspace.dim() == 1 &&
            workspace.is_contiguous(),
        who + " must be a packed 1-D " + name(dtype) + " tensor on " + name(device) + ", not " +
            name(workspace.scalar_type()) + " " + shape(workspace) + " on " + name(workspace.device()));
  check(workspace.numel() >= rows * cols, who + " has " + std::to_string(workspace.numel()) + " elements, needs " +
                                              std::to_string(rows * cols));
  return torch::stable::view(torch::stable::narrow(workspace, 0, 0, rows * cols), {rows, cols});
}

Tensor new_workspace(const Tensor& like, int64_t elements, ScalarType dtype) {
  return torch::stable::new_empty(like, {elements}, dtype);
}

Stream current_stream(const Tensor& on) {
#ifdef MCNET_RT_WITH_CUDA
  // aoti_torch_get_current_cuda_stream lives in libtorch_cuda (torch/csrc/inductor/aoti_torch/c/shim.h, under
  // USE_CUDA; the stable accelerator API has a native stream handle only from 2.13). Looked up in the loaded
  // libtorch_cuda rather than linked: the library also loads into CPU-only torch, where no CUDA tensor exists.
  using GetStream = AOTITorchError (*)(int32_t, void**);
  static const GetStream get_stream = [] {
    void* torch_cuda = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_NOLOAD);
    return torch_cuda ? reinterpret_cast<GetStream>(dlsym(torch_cuda, "aoti_torch_get_current_cuda_stream"))
                      : nullptr;
  }();
  check(get_stream != nullptr, "mcnet_rt: libtorch_cuda is not loaded (a CUDA tensor without CUDA torch?)");
  void* stream = nullptr;
  check(get_stream(on.get_device_index(), &stream) == AOTI_TORCH_SUCCESS,
        "mcnet_rt: could not get PyTorch's current CUDA stream");
  return stream;
#else
  fail("the mcnet_rt ops library was built without CUDA (no nvcc at build time); got a tensor on " +
       name(on.device()));
#endif
}

void check_status(int status, const char* op, bool cuda) {
  if (status == 0) return;
  if (status == kUnsupported) fail(std::string(op) + ": the launcher rejected the element type or shape");
#ifdef MCNET_RT_WITH_CUDA
  if (cuda) fail(std::string(op) + ": CUDA error: " + cuda_error_string(status));
#endif
  fail(std::string(op) + ": failed with status " + std::to_string(status));
}

}  // namespace mcnet_rt::ops
