// mcnet_rt::modulated_conv2d, dynamic_conv2d (public; and their `_into` forms) and persample_conv2d,
// persample_conv2d_weight_grad, demodulation, demodulation_backward (private) over the launchers of
// mcnet_rt/modulated_conv.h. The rules are those of mcnet_rt/ops/modulated_conv.py's fakes.
#include "mcnet_rt/modulated_conv.h"

#include <array>
#include <tuple>

#include "op_support.h"

namespace mcnet_rt::ops {
namespace {

using OptionalTensor = std::optional<Tensor>;

// One packed (C,H,W) map expanded over the batch (the memory): the kernels read it with stride 0.
bool shares_one_sample(const Tensor& x) {
  return x.dim() == 4 && x.size(0) > 1 && x.stride(0) == 0 && torch::stable::select(x, 0, 0).is_contiguous();
}

// x (B,C,H,W) of a kernel dtype, packed, or one packed sample expanded over the batch; returns the element
// stride between samples.
int64_t check_samples(const char* op, const char* operand, Tensor x) {
  const bool shared = shares_one_sample(x);
  check_tensor(op, operand, shared ? torch::stable::narrow(x, 0, 0, 1) : x, kernel_dtypes(x.device()), x.device(),
               4);
  return shared ? 0 : x.size(1) * x.size(2) * x.size(3);
}

// Per-sample operands (B, n) in the accumulation dtype, packed.
void check_per_sample(const char* op, const char* operand, const OptionalTensor& t, const Tensor& x, int64_t batch,
                      int64_t n) {
  if (!t) return;
  check_tensor(op, operand, *t, {accumulation_dtype(x.scalar_type())}, x.device(), 2);
  check_size(op, operand, *t, 0, batch, "the batch of x");
  check_size(op, operand, *t, 1, n, "one value per channel or expert");
}

void check_taps(const char* op, const char* operand, const Tensor& weight) {
  const int64_t d = weight.dim();
  check((d == 4 || d == 5) && weight.size(d - 2) == 3 && weight.size(d - 1) == 3,
        std::string(op) + ": " + operand + " must hold 3×3 taps, not " + shape(weight));
}

// The forward conv launch (or its input gradient when `transposed`) over `batch` samples of x, which are
// x_batch_stride elements apart (0: one sample for all); weight (K,Cout,Cin,3,3); into `out` (batch, Cout or Cin
// when transposed, H, W).
void launch_conv(const char* op, const Tensor& x, int64_t batch, int64_t x_batch_stride, const Tensor& weight,
                 const OptionalTensor& mix, const OptionalTensor& in_scale, const OptionalTensor& out_scale,
                 const OptionalTensor& bias, bool transposed, const Tensor& out) {
  const int64_t experts = weight.size(0), c_out = weight.size(1), c_in = weight.size(2);
  const PerSampleConvShape s{int(batch), int(c_in), int(c_out), int(x.size(2)), int(x.size(3)), int(experts),
                             x_batch_stride};
  const DType t = dtype_code(x.scalar_type());
  run(op, x, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(persample_conv2d_cuda(t, s, transposed, x.data_ptr(), weight.data_ptr(),
                                                           data(mix), data(in_scale), data(out_scale), data(bias),
                                                           out.data_ptr(), stream))
                : persample_conv2d_cpu(t, s, transposed, x.data_ptr(), weight.data_ptr(), data(mix), data(in_scale),
                                       data(out_scale), data(bias), out.data_ptr());
  });
}

Tensor persample_conv2d(Tensor x, Tensor weight, OptionalTensor mix, OptionalTensor in_scale,
                        OptionalTensor out_scale, OptionalTensor bias, bool transposed) {
  const char* op = "persample_conv2d";
  const int64_t stride = check_samples(op, "x", x);
  check_tensor(op, "weight", weight, {x.scalar_type()}, x.device(), 5);
  check_taps(op, "weight", weight);
  const int64_t experts = weight.size(0), c_out = weight.size(1), c_in = weight.size(2);
  check_size(op, "x", x, 1, transposed ? c_out : c_in, "the input channels of weight");
  check(mix || experts == 1, std::string(op) + ": " + std::to_string(experts) + " experts need a mix");
  const int64_t batch = x.size(0);
  check_per_sample(op, "mix", mix, x, batch, experts);
  check_per_sample(op, "in_scale", in_scale, x, batch, c_in);
  check_per_sample(op, "out_scale", out_scale, x, batch, c_out);
  check_per_sample(op, "bias", bias, x, batch, c_out);
  Tensor out = torch::stable::new_empty(x, {batch, transposed ? c_in : c_out, x.size(2), x.size(3)});
  launch_conv(op, x, batch, stride, weight, mix, in_scale, out_scale, bias, transposed, out);
  return out;
}

Tensor persample_conv2d_weight_grad(Tensor image, Tensor rows) {
  const char* op = "persample_conv2d_weight_grad";
  const int64_t stride = check_samples(op, "image", image);
  check(rows.scalar_type() == image.scalar_type() && rows.device() == image.device() && rows.dim() == 4,
        std::string(op) + ": rows (" + name(rows.scalar_type()) + ", " + name(rows.device()) + ", " + shape(rows) +
            ") must be a 4-D map like image");
  check_size(op, "rows", rows, 0, image.size(0), "the batch of image");
  check_size(op, "rows", rows, 2, image.size(2), "the height of image");
  check_size(op, "rows", rows, 3, image.size(3), "the width of image");
  rows = torch::stable::contiguous(rows);
  const int64_t b = image.size(0), c_in = image.size(1), c_out = rows.size(1);
  Tensor grad = torch::stable::new_empty(image, {b, c_out, c_in, 3, 3}, accumulation_dtype(image.scalar_type()));
  const PerSampleConvShape s{int(b), int(c_in), int(c_out), int(image.size(2)), int(image.size(3)), 1, stride};
  const DType t = dtype_code(image.scalar_type());
  run(op, image, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(persample_conv2d_weight_grad_cuda(t, s, image.data_ptr(), rows.data_ptr(),
                                                                       grad.data_ptr(), stream))
                : persample_conv2d_weight_grad_cpu(t, s, image.data_ptr(), rows.data_ptr(), grad.data_ptr());
  });
  return grad;
}

void check_demodulation(const char* op, const Tensor& weight, const Tensor& styles) {
  check_tensor(op, "weight", weight, kernel_dtypes(weight.device()), weight.device(), 4);
  check_tensor(op, "styles", styles, {accumulation_dtype(weight.scalar_type())}, weight.device(), 2);
  check_size(op, "styles", styles, 1, weight.size(1), "the input channels of weight");
}

DemodulationShape demodulation_shape(const Tensor& weight, const Tensor& styles) {
  return {int(styles.size(0)), int(weight.size(1)), int(weight.size(0)), int(weight.size(2) * weight.size(3))};
}

// Into `demod` (B, Cout) in the styles' dtype.
void launch_demodulation(const char* op, const Tensor& weight, const Tensor& styles, double eps,
                         const Tensor& demod) {
  const DemodulationShape s = demodulation_shape(weight, styles);
  const DType t = dtype_code(weight.scalar_type());
  run(op, weight, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(demodulation_forward_cuda(t, s, weight.data_ptr(), styles.data_ptr(), eps,
                                                               demod.data_ptr(), stream))
                : demodulation_forward_cpu(t, s, weight.data_ptr(), styles.data_ptr(), eps, demod.data_ptr());
  });
}

Tensor demodulation(Tensor weight, Tensor styles, double eps) {
  check_demodulation("demodulation", weight, styles);
  Tensor demod = torch::stable::new_empty(styles, {styles.size(0), weight.size(0)});
  launch_demodulation("demodulation", weight, styles, eps, demod);
  return demod;
}

std::tuple<Tensor, Tensor> demodulation_backward(Tensor grad_demod, Tensor weight, Tensor styles, Tensor demod) {
  const char* op = "demodulation_backward";
  grad_demod = torch::stable::contiguous(grad_demod);
  weight = torch::stable::contiguous(weight);
  styles = torch::stable::contiguous(styles);
  demod = torch::stable::contiguous(demod);
  check_demodulation(op, weight, styles);
  for (const auto& [operand, t] : {std::pair<const char*, const Tensor&>{"grad_demod", grad_demod},
                                   std::pair<const char*, const Tensor&>{"demod", demod}}) {
    check(t.scalar_type() == styles.scalar_type() && t.device() == styles.device() && t.dim() == 2 &&
              t.size(0) == styles.size(0) && t.size(1) == weight.size(0),
          std::string(op) + ": " + operand + " (" + name(t.scalar_type()) + ", " + shape(t) +
              ") must be (B, Cout) like styles");
  }
  Tensor grad_weight = torch::stable::new_empty(
      weight, {weight.size(0), weight.size(1), weight.size(2), weight.size(3)}, styles.scalar_type());
  Tensor grad_styles = torch::stable::empty_like(styles);
  const DemodulationShape s = demodulation_shape(weight, styles);
  const DType t = dtype_code(weight.scalar_type());
  run(op, weight, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(demodulation_backward_cuda(t, s, weight.data_ptr(), styles.data_ptr(),
                                                                demod.data_ptr(), grad_demod.data_ptr(),
                                                                grad_weight.data_ptr(), grad_styles.data_ptr(), stream))
                : demodulation_backward_cpu(t, s, weight.data_ptr(), styles.data_ptr(), demod.data_ptr(),
                                            grad_demod.data_ptr(), grad_weight.data_ptr(), grad_styles.data_ptr());
  });
  return {grad_weight, grad_styles};
}

// The public ops' contract: x (1 or B,Cin,H,W) packed (a batch-shared input comes with batch 1, never as a
// stride-0 view), weight (...,Cin,3,3) in x's dtype, the per-sample operand (B, n) in the accumulation dtype.
void check_public(const char* op, const Tensor& x, const char* weight_name, const Tensor& weight,
                  const char* per_sample_name, const Tensor& per_sample, int64_t n) {
  check_tensor(op, "x", x, kernel_dtypes(x.device()), x.device(), 4);
  check_tensor(op, weight_name, weight, {x.scalar_type()}, x.device(), weight.dim());
  check_taps(op, weight_name, weight);
  const std::string channels = "the input channels of " + std::string(weight_name);
  check_size(op, "x", x, 1, weight.size(weight.dim() - 3), channels.c_str());
  const int64_t batch = per_sample.dim() > 0 ? per_sample.size(0) : 0;
  check(x.size(0) == 1 || x.size(0) == batch, std::string(op) + ": x has batch " + std::to_string(x.size(0)) +
                                                  ", it must be 1 (shared) or " + std::to_string(batch));
  check_per_sample(op, per_sample_name, per_sample, x, batch, n);
}

// The element stride between the `batch` samples of a public op's x: 0 when its one sample serves them all.
int64_t public_x_stride(const Tensor& x, int64_t batch) {
  return x.size(0) == 1 && batch > 1 ? 0 : x.size(1) * x.size(2) * x.size(3);
}

// The public ops' output (B from the per-sample operand, Cout, H, W).
std::vector<int64_t> public_out_sizes(const Tensor& x, const Tensor& per_sample, int64_t c_out) {
  return {per_sample.size(0), c_out, x.size(2), x.size(3)};
}

void check_modulated(const char* op, const Tensor& x, const Tensor& weight, const Tensor& styles) {
  check_public(op, x, "weight", weight, "styles", styles, weight.dim() > 1 ? weight.size(1) : 0);
  check(weight.dim() == 4, std::string(op) + ": weight must be 4-D (Cout,Cin,3,3), not " + shape(weight));
}

// The checked modulated conv into `out`; the demodulation (B, Cout) lives in `workspace`.
void launch_modulated(const char* op, const Tensor& x, const Tensor& weight, const Tensor& styles, bool demodulate,
                      double eps, const Tensor& out, const Tensor& workspace) {
  const int64_t batch = styles.size(0);
  const OptionalTensor demod =
      demodulate ? OptionalTensor(workspace_rows(op, workspace, batch, weight.size(0), styles.scalar_type(),
                                                 x.device()))
                 : std::nullopt;
  if (demod) launch_demodulation(op, weight, styles, eps, *demod);
  const Tensor bank = torch::stable::view(weight, {1, weight.size(0), weight.size(1), 3, 3});
  launch_conv(op, x, batch, public_x_stride(x, batch), bank, std::nullopt, styles, demod, std::nullopt, false, out);
}

Tensor modulated_conv2d(Tensor x, Tensor weight, Tensor styles, bool demodulate, double eps) {
  const char* op = "modulated_conv2d";
  check_modulated(op, x, weight, styles);
  Tensor out = torch::stable::new_empty(x, public_out_sizes(x, styles, weight.size(0)));
  const int64_t demod_elements = demodulate ? styles.size(0) * weight.size(0) : 0;
  launch_modulated(op, x, weight, styles, demodulate, eps, out,
                   new_workspace(styles, demod_elements, styles.scalar_type()));
  return out;
}

void modulated_conv2d_into(Tensor x, Tensor weight, Tensor styles, bool demodulate, double eps, Tensor out,
                           Tensor workspace) {
  const char* op = "modulated_conv2d_into";
  check_modulated(op, x, weight, styles);
  check_out(op, out, x, public_out_sizes(x, styles, weight.size(0)));
  launch_modulated(op, x, weight, styles, demodulate, eps, out, workspace);
}

void check_dynamic(const char* op, const Tensor& x, const Tensor& expert_weight, const Tensor& expert_bias,
                   const Tensor& gate) {
  check(expert_weight.dim() == 5,
        std::string(op) + ": expert_weight must be 5-D (K,Cout,Cin,3,3), not " + shape(expert_weight));
  const int64_t experts = expert_weight.size(0), c_out = expert_weight.size(1);
  check_public(op, x, "expert_weight", expert_weight, "gate", gate, experts);
  check_tensor(op, "expert_bias", expert_bias, {gate.scalar_type()}, x.device(), 2);
  check(expert_bias.size(0) == experts && expert_bias.size(1) == c_out,
        std::string(op) + ": expert_bias must be (K,Cout) = (" + std::to_string(experts) + ", " +
            std::to_string(c_out) + "), not " + shape(expert_bias));
}

// The checked dynamic conv into `out`; the per-sample mixture of biases (B, Cout) = gate · expert_bias is
// computed into `workspace`.
void launch_dynamic(const char* op, const Tensor& x, const Tensor& expert_weight, const Tensor& expert_bias,
                    const Tensor& gate, const Tensor& out, const Tensor& workspace) {
  const int64_t batch = gate.size(0);
  const Tensor bias =
      workspace_rows(op, workspace, batch, expert_weight.size(1), gate.scalar_type(), x.device());
  std::array<StableIValue, 3> stack{torch::stable::detail::from(gate), torch::stable::detail::from(expert_bias),
                                    torch::stable::detail::from(bias)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::mm", "out", stack.data(), TORCH_ABI_VERSION));
  (void)torch::stable::detail::to<Tensor>(stack[0]);  // releases the returned handle (bias itself)
  launch_conv(op, x, batch, public_x_stride(x, batch), expert_weight, gate, std::nullopt, std::nullopt, bias, false,
              out);
}

Tensor dynamic_conv2d(Tensor x, Tensor expert_weight, Tensor expert_bias, Tensor gate) {
  const char* op = "dynamic_conv2d";
  check_dynamic(op, x, expert_weight, expert_bias, gate);
  const int64_t c_out = expert_weight.size(1);
  Tensor out = torch::stable::new_empty(x, public_out_sizes(x, gate, c_out));
  launch_dynamic(op, x, expert_weight, expert_bias, gate, out,
                 new_workspace(gate, gate.size(0) * c_out, gate.scalar_type()));
  return out;
}

void dynamic_conv2d_into(Tensor x, Tensor expert_weight, Tensor expert_bias, Tensor gate, Tensor out,
                         Tensor workspace) {
  const char* op = "dynamic_conv2d_into";
  check_dynamic(op, x, expert_weight, expert_bias, gate);
  check_out(op, out, x, public_out_sizes(x, gate, expert_weight.size(1)));
  launch_dynamic(op, x, expert_weight, expert_bias, gate, out, workspace);
}

}  // namespace

void register_modulated_conv(Library& m) {
  m.impl("persample_conv2d", TORCH_BOX(&persample_conv2d));
  m.impl("persample_conv2d_weight_grad", TORCH_BOX(&persample_conv2d_weight_grad));
  m.impl("demodulation", TORCH_BOX(&demodulation));
  m.impl("demodulation_backward", TORCH_BOX(&demodulation_backward));
  m.impl("modulated_conv2d", TORCH_BOX(&modulated_conv2d));
  m.impl("dynamic_conv2d", TORCH_BOX(&dynamic_conv2d));
  m.impl("modulated_conv2d_into", TORCH_BOX(&modulated_conv2d_into));
  m.impl("dynamic_conv2d_into", TORCH_BOX(&dynamic_conv2d_into));
}

}  // namespace mcnet_rt::ops

MCNET_RT_REGISTER_IMPLS(mcnet_rt::ops::register_modulated_conv)
