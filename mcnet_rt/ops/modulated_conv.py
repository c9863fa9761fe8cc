"""Per-sample convolutions of the memory: StyleGAN2 modulated conv (IICM) and the expert-mixture dynamic conv (MCM).

Both apply a different kernel to every sample. The references compute the released code's sums in forms that take
any batch in an exported graph: the modulated conv modulates the input and demodulates the output (StyleGAN2's
non-fused path, also faster in eager than building (B,Cout,Cin,3,3) weights); the dynamic conv runs one grouped
convolution with groups = batch, as the released code does, or im2col and a batched matmul when the batch is
symbolic (ONNX Conv takes `group` as a constant). The fused kernels (`csrc/kernels/modulated_conv.cu`)
run one per-sample implicit-GEMM conv for both and build each sample's kernel as they load it: expert mixing,
modulation and demodulation happen in registers, and no (B,Cout,Cin,3,3) weight tensor exists in the forward.
The backward runs the same conv transposed for the input gradient; the per-sample kernel gradient (B,Cout,Cin,3,3)
comes from a reduction kernel and is chained to the weight bank, scales and mix with a few tensor ops.
The ops (public modulated_conv2d, dynamic_conv2d; private persample_conv2d, persample_conv2d_weight_grad,
demodulation, demodulation_backward) are defined in C++ (csrc/torch/modulated_conv.cpp); here are their fake
implementations, their autograd and the models' entry points.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks, _native, dispatch


def _per_sample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """Convolve sample i of `x` (B,Cin,H,W) with `weight[i]` (B,Cout,Cin,k,k) and add `bias[i]` (B,Cout). A batch
    that is a number runs one grouped convolution with groups = batch (the fastest in eager); a symbolic batch (a
    graph exported for any batch, where a convolution's group count must be a constant) runs the same sum as im2col
    and a batched matmul."""
    b, c_in, h, w = x.shape
    c_out = weight.shape[1]
    if isinstance(b, torch.SymInt):
        columns = F.unfold(x, weight.shape[-1], padding=padding)  # (B, Cin·k², H·W)
        out = torch.bmm(weight.reshape(b, c_out, -1), columns) + bias[:, :, None]
        return out.view(b, c_out, h, w)
    out = F.conv2d(x.reshape(1, b * c_in, h, w), weight.reshape(b * c_out, *weight.shape[2:]), bias.reshape(-1),
                   padding=padding, groups=b)
    return out.view(b, c_out, out.shape[-2], out.shape[-1])


def modulated_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                               demodulate: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 conv: `weight` (Cout,Cin,k,k), already scaled by 1/sqrt(Cin·k²), times per-sample input-channel
    `styles` (B,Cin), demodulated per output channel with rsqrt(Σw² + eps); 'same' padding, no bias. x (1,Cin,H,W)
    is shared by every sample. Computed as conv(x·styles, weight)·demodulation, the same sum as the released
    per-sample weights; the demodulation in the type of weight·styles, as the released code computes it."""
    styles = styles.to(torch.promote_types(styles.dtype, weight.dtype))
    out = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
    if not demodulate:
        return out
    power = (styles.square()[:, None, :] * weight.square().sum(dim=(2, 3))).sum(dim=2)  # Σ_{i,t} (w[o,i,t]·s[b,i])²
    return out * torch.rsqrt(power + eps).to(out.dtype)[:, :, None, None]


def dynamic_conv2d_reference(x: torch.Tensor, expert_weight: torch.Tensor, expert_bias: torch.Tensor,
                             gate: torch.Tensor) -> torch.Tensor:
    """Conv of `x` (B,Cin,H,W) with the per-sample mixture Σₖ gate[b,k]·expert_weight[k] (K,Cout,Cin,k,k) and
    Σₖ gate[b,k]·expert_bias[k] (K,Cout); `gate` is (B,K); 'same' padding."""
    k = expert_weight.shape[0]
    weight = torch.mm(gate, expert_weight.reshape(k, -1)).view(gate.shape[0], *expert_weight.shape[1:])
    bias = torch.mm(gate, expert_bias)
    return _per_sample_conv(x, weight, bias, padding=expert_weight.shape[-1] // 2)


def _shares_one_sample(x: torch.Tensor) -> bool:
    """x is one (C,H,W) map expanded over the batch (the memory), so the kernels can read it with stride 0."""
    return x.shape[0] > 1 and x.stride(0) == 0 and x[0].is_contiguous()


def _packed_samples(x: torch.Tensor) -> torch.Tensor:
    """x as the kernels read it: contiguous samples, or one packed sample expanded over the batch."""
    return x if _shares_one_sample(x) else x.contiguous()


def _to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast that keeps an expanded batch expanded instead of materialising B copies."""
    if x.dtype == dtype:
        return x
    if _shares_one_sample(x):
        return x[:1].to(dtype).expand_as(x)
    return x.to(dtype)


def _check_samples(op: str, name: str, x: torch.Tensor) -> None:
    """x (B,C,H,W) of a kernel dtype, packed, or one packed sample expanded over the batch (stride 0)."""
    _checks.tensor(op, name, x[:1] if _shares_one_sample(x) else x, dtype=_checks.kernel_dtypes(x.device),
                   device=x.device, ndim=4)


def _check_per_sample(op: str, x: torch.Tensor, **operands: tuple[torch.Tensor | None, int]) -> None:
    """Per-sample operands (B, n) in the accumulation dtype, packed; `operands` maps names to (tensor, n)."""
    acc = _native.accumulation_dtype(x.dtype)
    for name, (t, n) in operands.items():
        if t is not None:
            _checks.tensor(op, name, t, dtype=acc, device=x.device, ndim=2)
            _checks.size(op, name, t, 0, x.shape[0], "the batch of x")
            _checks.size(op, name, t, 1, n, "one value per channel or expert")


def _check_conv(x, weight, mix, in_scale, out_scale, bias, transposed) -> None:
    op = "persample_conv2d"
    _check_samples(op, "x", x)
    _checks.tensor(op, "weight", weight, dtype=x.dtype, device=x.device, ndim=5)
    torch._check(tuple(weight.shape[3:]) == (3, 3), lambda: f"{op}: weight must hold 3×3 taps, not "
                                                           f"{tuple(weight.shape)}")
    experts, c_out, c_in = weight.shape[:3]
    _checks.size(op, "x", x, 1, c_out if transposed else c_in, "the input channels of weight")
    torch._check(mix is not None or experts == 1, lambda: f"{op}: {experts} experts need a mix")
    _check_per_sample(op, x, mix=(mix, experts), in_scale=(in_scale, c_in), out_scale=(out_scale, c_out),
                      bias=(bias, c_out))


@_native.register_fake("persample_conv2d")
def _(x, weight, mix, in_scale, out_scale, bias, transposed):
    _check_conv(x, weight, mix, in_scale, out_scale, bias, transposed)
    rows = weight.shape[2] if transposed else weight.shape[1]
    return x.new_empty((x.shape[0], rows, x.shape[2], x.shape[3]))


def _check_weight_grad(image: torch.Tensor, rows: torch.Tensor) -> None:
    op = "persample_conv2d_weight_grad"
    _check_samples(op, "image", image)
    torch._check(rows.dtype == image.dtype and rows.device == image.device and rows.dim() == 4,
                 lambda: f"{op}: rows ({rows.dtype}, {rows.device}, {tuple(rows.shape)}) must be a 4-D map like "
                         "image")
    for dim, what in ((0, "the batch"), (2, "the height"), (3, "the width")):
        _checks.size(op, "rows", rows, dim, image.shape[dim], what + " of image")


@_native.register_fake("persample_conv2d_weight_grad")
def _(image, rows):
    _check_weight_grad(image, rows)
    return image.new_empty((image.shape[0], rows.shape[1], image.shape[1], 3, 3),
                           dtype=_native.accumulation_dtype(image.dtype))


def _conv_setup_context(ctx, inputs, output):
    x, weight, mix, in_scale, out_scale, bias, transposed = inputs
    ctx.save_for_backward(x, weight, mix, in_scale, out_scale)
    ctx.transposed = transposed


def _conv_backward(ctx, grad_out):
    x, weight, mix, in_scale, out_scale = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grad_out = grad_out.contiguous()
    grad_x = grad_weight = grad_mix = grad_in_scale = grad_out_scale = grad_bias = None
    if needs[0]:
        grad_x = torch.ops.mcnet_rt.persample_conv2d(grad_out, weight, mix, in_scale, out_scale, None,
                                                     not ctx.transposed)
    if needs[5]:
        grad_bias = grad_out.sum(dim=(2, 3), dtype=_native.accumulation_dtype(grad_out.dtype))
    if any(needs[1:5]):
        # Gradient of each sample's effective kernel, then the chain rule through the mix and the two scales.
        weight_grad = torch.ops.mcnet_rt.persample_conv2d_weight_grad
        g = weight_grad(grad_out, x) if ctx.transposed else weight_grad(x, grad_out)
        g_out = g * out_scale[:, :, None, None, None] if out_scale is not None else g
        g_mixed = g_out * in_scale[:, None, :, None, None] if in_scale is not None else g_out
        bank = weight.to(g.dtype)
        if needs[1]:
            grad_weight = (g_mixed.sum(0, keepdim=True) if mix is None
                           else torch.einsum("bk,boihw->koihw", mix, g_mixed)).to(weight.dtype)
        if needs[2]:
            grad_mix = torch.einsum("koihw,boihw->bk", bank, g_mixed)
        if needs[3] or needs[4]:
            mixed = bank if mix is None else torch.einsum("bk,koihw->boihw", mix, bank)
            if needs[3]:
                grad_in_scale = (g_out * mixed).sum(dim=(1, 3, 4))
            if needs[4]:
                scaled = mixed * in_scale[:, None, :, None, None] if in_scale is not None else mixed
                grad_out_scale = (g * scaled).sum(dim=(2, 3, 4))
    return grad_x, grad_weight, grad_mix, grad_in_scale, grad_out_scale, grad_bias, None


_native.register_autograd("persample_conv2d", _conv_backward, _conv_setup_context)


def _check_demodulation(op: str, weight: torch.Tensor, styles: torch.Tensor) -> None:
    _checks.tensor(op, "weight", weight, dtype=_checks.kernel_dtypes(weight.device), device=weight.device, ndim=4)
    _checks.tensor(op, "styles", styles, dtype=_native.accumulation_dtype(weight.dtype), device=weight.device,
                   ndim=2)
    _checks.size(op, "styles", styles, 1, weight.shape[1], "the input channels of weight")


@_native.register_fake("demodulation")
def _(weight, styles, eps):
    _check_demodulation("demodulation", weight, styles)
    return styles.new_empty((styles.shape[0], weight.shape[0]))


def _check_demodulation_backward(grad_demod, weight, styles, demod) -> None:
    op = "demodulation_backward"
    _check_demodulation(op, weight, styles)
    for name, t in (("grad_demod", grad_demod), ("demod", demod)):
        torch._check(t.dtype == styles.dtype and t.device == styles.device
                     and t.shape == (styles.shape[0], weight.shape[0]),
                     lambda: f"{op}: {name} ({t.dtype}, {tuple(t.shape)}) must be (B, Cout) like styles")


@_native.register_fake("demodulation_backward")
def _(grad_demod, weight, styles, demod):
    _check_demodulation_backward(grad_demod, weight, styles, demod)
    return weight.new_empty(weight.shape, dtype=styles.dtype), torch.empty_like(styles)


def _demodulation_setup_context(ctx, inputs, output):
    weight, styles, eps = inputs
    ctx.save_for_backward(weight, styles, output)


def _demodulation_backward_rule(ctx, grad_demod):
    weight, styles, demod = ctx.saved_tensors
    grad_weight, grad_styles = torch.ops.mcnet_rt.demodulation_backward(grad_demod, weight, styles, demod)
    return grad_weight.to(weight.dtype), grad_styles, None


_native.register_autograd("demodulation", _demodulation_backward_rule, _demodulation_setup_context)


def _check_taps(op: str, weight: torch.Tensor) -> None:
    if tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(f"{op}: the kernels run 3×3 convolutions, not {tuple(weight.shape[-2:])}; use "
                         "impl='reference'")


def _kernel_dtype(x: torch.Tensor) -> torch.dtype:
    """The element type the kernel runs in: autocast's where it is on (as F.conv2d would), else x's; the choice
    of kernel or reference is made for this type."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _modulated_kernel(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, eps: float,
                      dtype: torch.dtype) -> torch.Tensor:
    """The kernel path, with autograd (the private ops): x (1 or B,Cin,H,W) is read once per sample, not copied."""
    acc = _native.accumulation_dtype(dtype)
    weight = weight.to(dtype).contiguous()
    styles = styles.to(acc).contiguous()
    demod = torch.ops.mcnet_rt.demodulation(weight, styles, eps) if demodulate else None
    x = _packed_samples(_to(x, dtype).expand(styles.shape[0], -1, -1, -1))
    return torch.ops.mcnet_rt.persample_conv2d(x, weight.unsqueeze(0), None, styles, demod, None, False)


def _dynamic_kernel(x: torch.Tensor, expert_weight: torch.Tensor, expert_bias: torch.Tensor, gate: torch.Tensor,
                    dtype: torch.dtype) -> torch.Tensor:
    acc = _native.accumulation_dtype(dtype)
    gate = gate.to(acc).contiguous()
    bias = torch.mm(gate, expert_bias.to(acc))
    x = _packed_samples(_to(x, dtype).expand(gate.shape[0], -1, -1, -1))
    return torch.ops.mcnet_rt.persample_conv2d(x, expert_weight.to(dtype).contiguous(), gate, None, None, bias,
                                               False)


def _check_public(op: str, x: torch.Tensor, weight_name: str, weight: torch.Tensor,
                  **per_sample: tuple[torch.Tensor, int]) -> None:
    """The public ops' contract: x (1 or B,Cin,H,W) packed — a batch-shared input is passed with batch 1, never
    as a stride-0 view —, weight (...,Cin,3,3) in x's dtype, per-sample operands (B,n) in the accumulation dtype
    (`per_sample` maps names to (tensor, n); the first one gives B)."""
    _checks.tensor(op, "x", x, dtype=_checks.kernel_dtypes(x.device), device=x.device, ndim=4)
    _checks.tensor(op, weight_name, weight, dtype=x.dtype, device=x.device, ndim=weight.dim())
    torch._check(weight.dim() in (4, 5) and tuple(weight.shape[-2:]) == (3, 3),
                 lambda: f"{op}: {weight_name} must hold 3×3 taps, not {tuple(weight.shape)}")
    _checks.size(op, "x", x, 1, weight.shape[-3], f"the input channels of {weight_name}")
    batch = next(iter(per_sample.values()))[0].shape[0]
    torch._check(x.shape[0] == 1 or x.shape[0] == batch,
                 lambda: f"{op}: x has batch {x.shape[0]}, it must be 1 (shared) or {batch}")
    _check_per_sample(op, x.expand(batch, -1, -1, -1), **per_sample)


@_native.register_fake("modulated_conv2d")
def _(x, weight, styles, demodulate, eps):
    _check_public("modulated_conv2d", x, "weight", weight, styles=(styles, weight.shape[1]))
    torch._check(weight.dim() == 4,
                 lambda: f"modulated_conv2d: weight must be 4-D (Cout,Cin,3,3), not {tuple(weight.shape)}")
    return x.new_empty((styles.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


def _check_dynamic(x, expert_weight, expert_bias, gate) -> None:
    torch._check(expert_weight.dim() == 5, lambda: f"dynamic_conv2d: expert_weight must be 5-D (K,Cout,Cin,3,3), "
                                                   f"not {tuple(expert_weight.shape)}")
    experts, c_out = expert_weight.shape[:2]
    _check_public("dynamic_conv2d", x, "expert_weight", expert_weight, gate=(gate, experts))
    _checks.tensor("dynamic_conv2d", "expert_bias", expert_bias, dtype=gate.dtype, device=x.device, ndim=2)
    torch._check(expert_bias.shape == (experts, c_out), lambda: f"dynamic_conv2d: expert_bias must be (K,Cout) = "
                 f"{(experts, c_out)}, not {tuple(expert_bias.shape)}")


@_native.register_fake("dynamic_conv2d")
def _(x, expert_weight, expert_bias, gate):
    _check_dynamic(x, expert_weight, expert_bias, gate)
    return x.new_empty((gate.shape[0], expert_weight.shape[1], x.shape[2], x.shape[3]))


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     eps: float = 1e-8, impl: str | None = None) -> torch.Tensor:
    """The models' modulated conv (see `modulated_conv2d_reference`; x may have batch 1, shared by every sample);
    the kernel modulates and demodulates the shared weight as it loads it, with no per-sample weight tensor."""
    dtype = _kernel_dtype(x)

    def kernel(x, weight, styles):
        _check_taps("modulated_conv2d", weight)
        if _native.differentiable(x, weight, styles):
            return _modulated_kernel(x, weight, styles, demodulate, eps, dtype)
        acc = _native.accumulation_dtype(dtype)
        return torch.ops.mcnet_rt.modulated_conv2d(x.to(dtype).contiguous(), weight.to(dtype).contiguous(),
                                                   styles.to(acc).contiguous(), demodulate, eps)

    return dispatch.run(impl, "modulated_conv2d", (x, weight, styles), kernel,
                        lambda x, weight, styles: modulated_conv2d_reference(x, weight, styles, demodulate, eps),
                        dtype=dtype)


def dynamic_conv2d(x: torch.Tensor, expert_weight: torch.Tensor, expert_bias: torch.Tensor, gate: torch.Tensor,
                   impl: str | None = None) -> torch.Tensor:
    """The models' expert-mixture conv (see `dynamic_conv2d_reference`); the kernel mixes the experts as it loads
    them, with no per-sample weight tensor."""
    dtype = _kernel_dtype(x)

    def kernel(x, expert_weight, expert_bias, gate):
        _check_taps("dynamic_conv2d", expert_weight)
        if _native.differentiable(x, expert_weight, expert_bias, gate):
            return _dynamic_kernel(x, expert_weight, expert_bias, gate, dtype)
        acc = _native.accumulation_dtype(dtype)
        return torch.ops.mcnet_rt.dynamic_conv2d(x.to(dtype).contiguous(), expert_weight.to(dtype).contiguous(),
                                                 expert_bias.to(acc).contiguous(), gate.to(acc).contiguous())

    return dispatch.run(impl, "dynamic_conv2d", (x, expert_weight, expert_bias, gate), kernel,
                        dynamic_conv2d_reference, dtype=dtype)
