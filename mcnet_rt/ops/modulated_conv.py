"""Per-sample convolutions of the memory: StyleGAN2 modulated conv (IICM) and the expert-mixture dynamic conv (MCM).

Both apply a different kernel to every sample. The references build the per-sample weights and run one grouped
convolution with groups = batch, as the released code does. The fused kernels (`csrc/kernels/modulated_conv.cu`)
run one per-sample implicit-GEMM conv for both and build each sample's kernel as they load it: expert mixing,
modulation and demodulation happen in registers, and no (B,Cout,Cin,3,3) weight tensor exists in the forward.
The backward runs the same conv transposed for the input gradient; the per-sample kernel gradient (B,Cout,Cin,3,3)
comes from a reduction kernel and is chained to the weight bank, scales and mix with a few tensor ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _native, dispatch


def _grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Convolve sample i of `x` (B,Cin,H,W) with `weight[i]` (B,Cout,Cin,k,k) and `bias[i]` (B,Cout)."""
    b, c_in, h, w = x.shape
    c_out = weight.shape[1]
    out = F.conv2d(x.reshape(1, b * c_in, h, w), weight.reshape(b * c_out, *weight.shape[2:]),
                   None if bias is None else bias.reshape(-1), padding=padding, groups=b)
    return out.view(b, c_out, out.shape[-2], out.shape[-1])


def modulated_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                               demodulate: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 conv: `weight` (Cout,Cin,k,k), already scaled by 1/sqrt(Cin·k²), times per-sample input-channel
    `styles` (B,Cin), demodulated per output channel with rsqrt(Σw² + eps); 'same' padding, no bias."""
    w = weight.unsqueeze(0) * styles[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + eps)[:, :, None, None, None]
    return _grouped_conv(x, w, None, padding=weight.shape[-1] // 2)


def dynamic_conv2d_reference(x: torch.Tensor, expert_weight: torch.Tensor, expert_bias: torch.Tensor,
                             gate: torch.Tensor) -> torch.Tensor:
    """Conv of `x` (B,Cin,H,W) with the per-sample mixture Σₖ gate[b,k]·expert_weight[k] (K,Cout,Cin,k,k) and
    Σₖ gate[b,k]·expert_bias[k] (K,Cout); `gate` is (B,K); 'same' padding."""
    k = expert_weight.shape[0]
    weight = torch.mm(gate, expert_weight.reshape(k, -1)).view(gate.shape[0], *expert_weight.shape[1:])
    bias = torch.mm(gate, expert_bias)
    return _grouped_conv(x, weight, bias, padding=expert_weight.shape[-1] // 2)


def _shares_one_sample(x: torch.Tensor) -> bool:
    """x is one (C,H,W) map expanded over the batch (the memory), so the kernels can read it with stride 0."""
    return x.shape[0] > 1 and x.stride(0) == 0 and x[0].is_contiguous()


def _batch_view(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """x as the kernels read it (contiguous samples) and the element stride between samples."""
    if _shares_one_sample(x):
        return x, 0
    x = x.contiguous()
    return x, x[0].numel()


def _to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast that keeps an expanded batch expanded instead of materialising B copies."""
    if x.dtype == dtype:
        return x
    if _shares_one_sample(x):
        return x[:1].to(dtype).expand_as(x)
    return x.to(dtype)


def _conv_shape(weight: torch.Tensor, x: torch.Tensor, x_batch_stride: int) -> tuple:
    experts, c_out, c_in = weight.shape[:3]
    return (x.shape[0], c_in, c_out, x.shape[2], x.shape[3], experts, x_batch_stride)


@torch.library.custom_op("mcnet_rt::persample_conv2d", mutates_args=())
def _persample_conv2d(x: torch.Tensor, weight: torch.Tensor, mix: torch.Tensor | None,
                      in_scale: torch.Tensor | None, out_scale: torch.Tensor | None, bias: torch.Tensor | None,
                      transposed: bool) -> torch.Tensor:
    """3×3 'same' conv of x with w_b = (Σₖ mix[b,k]·weight[k]) · in_scale[b,i] · out_scale[b,o] (+ bias[b,o]);
    `transposed` runs its input gradient instead. weight (K,Cout,Cin,3,3) in x's dtype; mix, scales and bias
    contiguous in the accumulation dtype."""
    x, stride = _batch_view(x)
    weight, mix, in_scale, out_scale, bias = (None if t is None else t.contiguous()
                                              for t in (weight, mix, in_scale, out_scale, bias))
    rows = weight.shape[2] if transposed else weight.shape[1]
    out = x.new_empty((x.shape[0], rows, x.shape[2], x.shape[3]))
    cuda, stream = _native.launch_args(x)
    address = _native.address
    _native.native().persample_conv2d(cuda, _native.dtype_code(x.dtype), _conv_shape(weight, x, stride), transposed,
                                      x.data_ptr(), weight.data_ptr(), address(mix), address(in_scale),
                                      address(out_scale), address(bias), out.data_ptr(), stream)
    return out


@_persample_conv2d.register_fake
def _(x, weight, mix, in_scale, out_scale, bias, transposed):
    rows = weight.shape[2] if transposed else weight.shape[1]
    return x.new_empty((x.shape[0], rows, x.shape[2], x.shape[3]))


@torch.library.custom_op("mcnet_rt::persample_conv2d_weight_grad", mutates_args=())
def _persample_weight_grad(image: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """G[b,o,i,ty,tx] = Σ_{y,x} rows[b,o,y,x] · image[b,i,y+ty-1,x+tx-1], in the accumulation dtype: the
    gradient with respect to each sample's kernel when rows is the output gradient and image the input."""
    image, stride = _batch_view(image)
    rows = rows.contiguous()
    b, c_in, h, w = image.shape
    c_out = rows.shape[1]
    grad = image.new_empty((b, c_out, c_in, 3, 3), dtype=_native.accumulation_dtype(image.dtype))
    cuda, stream = _native.launch_args(image)
    _native.native().persample_conv2d_weight_grad(cuda, _native.dtype_code(image.dtype),
                                                  (b, c_in, c_out, h, w, 1, stride), image.data_ptr(),
                                                  rows.data_ptr(), grad.data_ptr(), stream)
    return grad


@_persample_weight_grad.register_fake
def _(image, rows):
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
        grad_x = _persample_conv2d(grad_out, weight, mix, in_scale, out_scale, None, not ctx.transposed)
    if needs[5]:
        grad_bias = grad_out.sum(dim=(2, 3), dtype=_native.accumulation_dtype(grad_out.dtype))
    if any(needs[1:5]):
        # Gradient of each sample's effective kernel, then the chain rule through the mix and the two scales.
        g = _persample_weight_grad(grad_out, x) if ctx.transposed else _persample_weight_grad(x, grad_out)
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


_persample_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)


@torch.library.custom_op("mcnet_rt::demodulation", mutates_args=())
def _demodulation(weight: torch.Tensor, styles: torch.Tensor, eps: float) -> torch.Tensor:
    """d[b,o] = rsqrt(Σ_{i,t} (weight[o,i,t]·styles[b,i])² + eps), weight (Cout,Cin,k,k) contiguous, styles (B,Cin)
    contiguous in the accumulation dtype."""
    weight, styles = weight.contiguous(), styles.contiguous()
    c_out, c_in = weight.shape[:2]
    demod = styles.new_empty((styles.shape[0], c_out))
    cuda, stream = _native.launch_args(weight)
    _native.native().demodulation_forward(cuda, _native.dtype_code(weight.dtype),
                                          (styles.shape[0], c_in, c_out, weight[0, 0].numel()), weight.data_ptr(),
                                          styles.data_ptr(), eps, demod.data_ptr(), stream)
    return demod


@_demodulation.register_fake
def _(weight, styles, eps):
    return styles.new_empty((styles.shape[0], weight.shape[0]))


@torch.library.custom_op("mcnet_rt::demodulation_backward", mutates_args=())
def _demodulation_backward(grad_demod: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                           demod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients for weight and styles, both in the accumulation dtype."""
    # Named, not temporaries: a tensor made only to take its data_ptr() would be freed before the launch.
    grad_demod, weight, styles, demod = (t.contiguous() for t in (grad_demod, weight, styles, demod))
    c_out, c_in = weight.shape[:2]
    grad_weight = weight.new_empty(weight.shape, dtype=styles.dtype)
    grad_styles = torch.empty_like(styles)
    cuda, stream = _native.launch_args(weight)
    _native.native().demodulation_backward(cuda, _native.dtype_code(weight.dtype),
                                           (styles.shape[0], c_in, c_out, weight[0, 0].numel()), weight.data_ptr(),
                                           styles.data_ptr(), demod.data_ptr(), grad_demod.data_ptr(),
                                           grad_weight.data_ptr(), grad_styles.data_ptr(), stream)
    return grad_weight, grad_styles


@_demodulation_backward.register_fake
def _(grad_demod, weight, styles, demod):
    return weight.new_empty(weight.shape, dtype=styles.dtype), torch.empty_like(styles)


def _demodulation_setup_context(ctx, inputs, output):
    weight, styles, eps = inputs
    ctx.save_for_backward(weight, styles, output)


def _demodulation_backward_rule(ctx, grad_demod):
    weight, styles, demod = ctx.saved_tensors
    grad_weight, grad_styles = _demodulation_backward(grad_demod, weight, styles, demod)
    return grad_weight.to(weight.dtype), grad_styles, None


_demodulation.register_autograd(_demodulation_backward_rule, setup_context=_demodulation_setup_context)


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


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     eps: float = 1e-8, impl: str | None = None) -> torch.Tensor:
    """The models' modulated conv (see `modulated_conv2d_reference`); the kernel modulates and demodulates the
    shared weight as it loads it, with no per-sample weight tensor, and reads an expanded x without copying it."""
    dtype = _kernel_dtype(x)

    def kernel(x, weight, styles):
        _check_taps("modulated_conv2d", weight)
        kernel_weight = weight.to(dtype).contiguous()
        kernel_styles = styles.to(_native.accumulation_dtype(dtype)).contiguous()
        demod = _demodulation(kernel_weight, kernel_styles, eps) if demodulate else None
        return _persample_conv2d(_to(x, dtype), kernel_weight.unsqueeze(0), None, kernel_styles, demod, None, False)

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
        acc = _native.accumulation_dtype(dtype)
        kernel_gate = gate.to(acc).contiguous()
        bias = torch.mm(kernel_gate, expert_bias.to(acc))
        return _persample_conv2d(_to(x, dtype), expert_weight.to(dtype).contiguous(), kernel_gate, None, None, bias,
                                 False)

    return dispatch.run(impl, "dynamic_conv2d", (x, expert_weight, expert_bias, gate), kernel,
                        dynamic_conv2d_reference, dtype=dtype)
