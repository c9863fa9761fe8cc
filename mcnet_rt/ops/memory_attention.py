"""Memory cross-attention of the MCM: every feature position queries the 32×32 identity-conditioned memory.

The released code uses a fixed 1/4 softmax scale (not 1/sqrt(d)) with 512-wide heads and materialises the
(H·W)×1024 score matrix. The kernel (`csrc/kernels/memory_attention.cu`) is flash-style: it streams the keys
through an online softmax and keeps only the per-query log-sum-exp, from which the backward recomputes the
probabilities tile by tile. It reads and writes the channel-major maps directly (no transposes here).

The query ReLU (`relu(conv1x1(projected))` in the MCM) is not fused: applying it while staging the query tile is
cheap, but the backward would then need the pre-activation query and a second gradient path through the kernel,
for a saving of one elementwise pass over a map that the 1×1 conv writes anyway.

The ops (public memory_attention; private memory_attention_forward, memory_attention_backward) are defined in C++
(csrc/torch/memory_attention.cpp); here are their fake implementations, their autograd and the models' entry point.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks, _native, dispatch
from ._native import accumulation_dtype


def memory_attention_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               scale: float = 0.25) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v with q (B,C,H,W) and k, v (B,C,h,w) as maps; returns (B,C,H,W)."""
    b, c, h, w = query.shape
    v = value.flatten(2).transpose(1, 2)
    return torch.bmm(attention_weights(query, key, scale), v).transpose(1, 2).reshape(b, c, h, w)


def attention_weights(query: torch.Tensor, key: torch.Tensor, scale: float = 0.25) -> torch.Tensor:
    """softmax(q·kᵀ·scale): (B, H·W, h·w), each query position's weights over the key positions."""
    q = query.flatten(2).transpose(1, 2)
    k = key.flatten(2).transpose(1, 2)
    return torch.softmax(torch.bmm(q, k.transpose(1, 2)) * scale, dim=-1)


def _check(op: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ndim: int = 3) -> None:
    """The launchers' contract (csrc/include/mcnet_rt/memory_attention.h): query (B,C,Nq), key and value
    (B,C,Nk) of one kernel dtype on one device, packed, with at least one key; at most `_C`'s
    max_attention_channels on CUDA. `ndim` 4 checks the maps of the public op, (B,C,H,W) and (B,C,h,w)."""
    dtypes = _checks.kernel_dtypes(query.device)
    _checks.tensor(op, "query", query, dtype=dtypes, device=query.device, ndim=ndim)
    for name, t in (("key", key), ("value", value)):
        _checks.tensor(op, name, t, dtype=query.dtype, device=query.device, ndim=ndim)
        _checks.size(op, name, t, 0, query.shape[0], "the batch of query")
        _checks.size(op, name, t, 1, query.shape[1], "the channels of query")
    torch._check(value.shape == key.shape,
                 lambda: f"{op}: value {tuple(value.shape)} must have the shape of key {tuple(key.shape)}")
    torch._check(key[0, 0].numel() > 0, lambda: f"{op}: key has no positions")
    if query.device.type == "cuda":
        most = _native.limit("max_attention_channels")
        torch._check(query.shape[1] <= most,
                     lambda: f"{op}: the CUDA kernel supports up to {most} channels, not {query.shape[1]}")


@_native.register_fake("memory_attention_forward")
def _(query, key, value, scale):
    _check("memory_attention_forward", query, key, value)
    return torch.empty_like(query), query.new_empty((query.shape[0], query.shape[2]),
                                                    dtype=accumulation_dtype(query.dtype))


def _check_backward(grad_out, query, key, value, out, lse) -> None:
    op = "memory_attention_backward"
    _check(op, query, key, value)
    for name, t in (("grad_out", grad_out), ("out", out)):
        torch._check(t.dtype == query.dtype and t.device == query.device and t.shape == query.shape,
                     lambda: f"{op}: {name} ({t.dtype}, {t.device}, {tuple(t.shape)}) must be like query")
    _checks.tensor(op, "out", out, dtype=query.dtype, device=query.device, ndim=3)
    _checks.tensor(op, "lse", lse, dtype=accumulation_dtype(query.dtype), device=query.device, ndim=2)
    torch._check(lse.shape == (query.shape[0], query.shape[2]),
                 lambda: f"{op}: lse must be (B,Nq) = {(query.shape[0], query.shape[2])}, not {tuple(lse.shape)}")


@_native.register_fake("memory_attention_backward")
def _(grad_out, query, key, value, out, lse, scale):
    _check_backward(grad_out, query, key, value, out, lse)
    acc = accumulation_dtype(query.dtype)
    return (query.new_empty(query.shape, dtype=acc), key.new_empty(key.shape, dtype=acc),
            value.new_empty(value.shape, dtype=acc))


def _setup_context(ctx, inputs, output):
    query, key, value, scale = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse)
    ctx.scale = scale


def _backward(ctx, grad_out, grad_lse):
    query, key, value, out, lse = ctx.saved_tensors
    grads = torch.ops.mcnet_rt.memory_attention_backward(grad_out, query, key, value, out, lse, ctx.scale)
    return (*(g.to(t.dtype) for g, t in zip(grads, (query, key, value))), None)


_native.register_autograd("memory_attention_forward", _backward, _setup_context)


def _kernel_fits(query: torch.Tensor, key: torch.Tensor, impl: str | None) -> bool:
    """Whether the kernel's limits admit these maps (raising for impl="kernel" where they do not)."""
    if key.shape[2] * key.shape[3] == 0:
        return False  # no keys: the reference's empty softmax gives zeros, the kernel would divide by 0
    most = _native.limit("max_attention_channels") if query.is_cuda and _native.native() is not None else None
    if most is not None and query.shape[1] > most:
        if _native.resolve_impl(impl) == "kernel":
            raise RuntimeError(f"memory_attention: the CUDA kernel supports up to {most} channels, "
                               f"not {query.shape[1]}")
        return False
    return True


def _attention_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """The kernel path with autograd (the private ops)."""
    tokens = [t.flatten(2).contiguous() for t in (query, key, value)]
    out, _ = torch.ops.mcnet_rt.memory_attention_forward(*tokens, float(scale))
    return out.view(query.shape)


@_native.register_fake("memory_attention")
def _(query, key, value, scale):
    _check("memory_attention", query, key, value, ndim=4)
    return torch.empty_like(query)


def _memory_attention_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             scale: float) -> torch.Tensor:
    """The public op, or the private ops when autograd records the call."""
    if _native.differentiable(query, key, value):
        return _attention_kernel(query, key, value, scale)
    return torch.ops.mcnet_rt.memory_attention(query.contiguous(), key.contiguous(), value.contiguous(),
                                               float(scale))


def memory_attention_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          scale: float = 0.25) -> torch.Tensor:
    """The same attention through PyTorch's fused `scaled_dot_product_attention`: the native alternative the
    kernel has to beat on CUDA."""
    b, c, h, w = query.shape
    q, k, v = (t.flatten(2).transpose(1, 2) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.transpose(1, 2).reshape(b, c, h, w)


def memory_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float = 0.25,
                     impl: str | None = None) -> torch.Tensor:
    """The models' entry point (see `memory_attention_reference`), through the flash-style kernel when `impl`
    allows. The kernel does not differentiate through the log-sum-exp (it is not returned here)."""
    if not _kernel_fits(query, key, impl):
        return memory_attention_reference(query, key, value, scale)
    alternatives = {"sdpa": lambda q, k, v: memory_attention_sdpa(q, k, v, scale)} if query.is_cuda else None
    return dispatch.run(impl, "memory_attention", (query, key, value),
                        lambda q, k, v: _memory_attention_kernel(q, k, v, scale),
                        lambda q, k, v: memory_attention_reference(q, k, v, scale), alternatives=alternatives)
