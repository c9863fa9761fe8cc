"""The flash-style memory-attention kernel (CPU twin always, CUDA where a device exists) against the reference.

The twin runs the kernels' tiles (32 queries × 64 keys forward, 16 rows × 64 items backward) and online softmax,
so the shapes below cross tile edges on every side: partial query and key tiles, several key tiles (the online
rescaling), odd channel counts (the CUDA kernels pad channels to 16) and the full 512-channel head."""
import math

import pytest
import torch
import torch.nn.functional as F

from mcnet_rt.ops import memory_attention, memory_attention_reference, use_impl



def inputs(batch, channels, query_size, key_size, dtype=torch.float64, device="cpu", spread=1.0, seed=0):
    """q, k, v maps; `spread` scales q and k, so logits grow with spread² (extreme softmax when large)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, channels, *query_size, generator=g, dtype=dtype) * spread
    k = torch.randn(batch, channels, *key_size, generator=g, dtype=dtype) * spread
    v = torch.randn(batch, channels, *key_size, generator=g, dtype=dtype)
    return [t.to(device).requires_grad_() for t in (q, k, v)]


def grads(out, tensors, seed=1):
    """Gradients for one upstream gradient, drawn in float64 so that every precision sees the same one."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g = g.to(out.device, out.dtype)
    return torch.autograd.grad(out, tensors, g)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1)).item()


# (batch, channels, query map, key map): partial tiles everywhere, batch 1 and 5, the small preset's memory
# (16×16 keys, 4 key tiles), several query tiles, and one full 512-wide head.
CASES = [
    (1, 3, (7, 9), (5, 5)),
    (5, 40, (7, 9), (4, 4)),
    (2, 64, (9, 13), (16, 16)),
    (1, 512, (5, 7), (9, 9)),
]


@pytest.mark.parametrize("case", CASES)
def test_twin_matches_reference(case):
    """float64: agreement to rounding; float32: no more than twice PyTorch's own float32 error (both vs float64)."""
    exact = inputs(*case)
    ref = memory_attention_reference(*exact)
    out = memory_attention(*exact, impl="kernel")
    assert out.dtype == torch.float64 and out.shape == ref.shape
    assert relative_error(out, ref) <= 1e-12
    ref_grads = grads(ref, exact)
    for got, want in zip(grads(out, exact), ref_grads):
        assert got.dtype == torch.float64 and relative_error(got, want) <= 1e-11
    single = [t.detach().float().requires_grad_() for t in exact]
    ours, torch_own = memory_attention(*single, impl="kernel"), memory_attention_reference(*single)
    assert ours.dtype == torch.float32
    assert relative_error(ours, ref) <= 2 * relative_error(torch_own, ref) + 1e-6
    for got, own, want in zip(grads(ours, single), grads(torch_own, single), ref_grads):
        assert got.dtype == torch.float32
        assert relative_error(got, want) <= 2 * relative_error(own, want) + 1e-6


def test_gradcheck_float64():
    q, k, v = inputs(2, 5, (3, 4), (2, 3))
    assert torch.autograd.gradcheck(lambda *t: memory_attention(*t, scale=0.7, impl="kernel"), (q, k, v))


def test_lse_is_the_log_sum_exp_of_the_scores():
    q, k, v = (t.detach().flatten(2) for t in inputs(2, 7, (6, 6), (10, 10)))
    _, lse2 = torch.ops.mcnet_rt.memory_attention_forward(q, k, v, 0.25)  # in base 2: log2 Σ exp(s)
    assert torch.allclose(lse2 * math.log(2), torch.logsumexp(0.25 * q.transpose(1, 2) @ k, dim=-1), rtol=0,
                          atol=1e-12)


def test_extreme_logits_stay_finite_and_correct():
    """Logits in the thousands (one key wins per query, exp would overflow without the running maximum)."""
    exact = inputs(2, 16, (9, 7), (10, 10), spread=12.0)
    ref = memory_attention_reference(*exact)
    out = memory_attention(*exact, impl="kernel")
    assert torch.isfinite(out).all() and relative_error(out, ref) <= 1e-12
    ref_grads = grads(ref, exact)
    for got, want in zip(grads(out, exact), ref_grads):
        assert torch.isfinite(got).all() and relative_error(got, want) <= 1e-9
    single = [t.detach().float().requires_grad_() for t in exact]
    out32, torch32 = memory_attention(*single, impl="kernel"), memory_attention_reference(*single)
    assert torch.isfinite(out32).all()
    # The base-2 log-sum-exp keeps P's exponent exact enough: at logits up to ~700 the float32 gradients stay
    # within twice PyTorch's own float32 error (the natural-log one doubled the query gradient's error).
    for got, own, want in zip(grads(out32, single), grads(torch32, single), ref_grads):
        assert torch.isfinite(got).all() and relative_error(got, want) <= 2 * relative_error(own, want) + 1e-6


def test_equal_keys_average_the_values_and_give_no_query_gradient():
    q, _, v = inputs(1, 8, (5, 5), (6, 6))
    k = torch.randn(1, 8, 1, 1, dtype=torch.float64).expand(1, 8, 6, 6).contiguous().requires_grad_()
    out = memory_attention(q, k, v, impl="kernel")
    assert torch.allclose(out, v.mean(dim=(2, 3), keepdim=True).expand_as(out), atol=1e-13)
    grad_q, grad_k, grad_v = grads(out, [q, k, v])
    assert grad_q.abs().max() <= 1e-13
    for got, want in zip((grad_k, grad_v), grads(memory_attention_reference(q, k, v), [k, v])):
        assert relative_error(got, want) <= 1e-12


def test_impl_switch():
    q, k, v = (t.detach().float() for t in inputs(1, 4, (4, 4), (3, 3)))
    # "auto" leaves CPU tensors to the reference; the whole-model switch forces the twin.
    assert torch.equal(memory_attention(q, k, v), memory_attention_reference(q, k, v))
    with use_impl("kernel"):
        assert (memory_attention(q, k, v) - memory_attention_reference(q, k, v)).abs().max() <= 1e-6
    with pytest.raises(RuntimeError, match="kernels run cpu tensors in float32, float64, not torch.float16"):
        memory_attention(q.half(), k.half(), v.half(), impl="kernel")


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES + [(2, 512, (32, 32), (32, 32))])
def test_cuda_float32_matches_reference(case):
    tensors = inputs(*case, dtype=torch.float32, device="cuda")
    ref = memory_attention_reference(*tensors)
    out = memory_attention(*tensors, impl="kernel")
    assert relative_error(out, ref) <= 1e-5
    for got, want in zip(grads(out, tensors), grads(ref, tensors)):
        assert relative_error(got, want) <= 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [(2, 64, (33, 31), (16, 16)), (1, 512, (64, 64), (32, 32))])
def test_cuda_low_precision_within_twice_pytorch_error(dtype, case):
    """Flash-attention's rule: error vs a float64 oracle at most twice PyTorch's own in `dtype` (plus a little)."""
    f64 = inputs(*case, device="cuda")
    oracle = memory_attention_reference(*f64)
    oracle_grads = grads(oracle, f64)
    low = [t.detach().to(dtype).requires_grad_() for t in f64]
    ours, torch_low = memory_attention(*low, impl="kernel"), memory_attention_reference(*low)
    assert ours.dtype == dtype
    assert relative_error(ours, oracle) <= 2 * relative_error(torch_low, oracle) + 1e-3
    for got, own, want in zip(grads(ours, low), grads(torch_low, low), oracle_grads):
        assert relative_error(got, want) <= 2 * relative_error(own, want) + 1e-3


@pytest.mark.cuda
def test_cuda_memory_does_not_hold_the_score_matrix():
    """At 128×128 queries over 1024 keys, forward + backward allocate what they must hold and less than half of
    one 16384×1024 half-precision score matrix on top of it."""
    q, k, v = inputs(1, 512, (128, 128), (32, 32), dtype=torch.float16, device="cuda")
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = memory_attention(q, k, v, impl="kernel")
    grads(out, [q, k, v])
    torch.cuda.synchronize()
    # Alive together at the end of the backward: out and the upstream gradient (half), the float32 gradients the
    # kernel writes and their half copies returned to autograd.
    half_bytes = q.numel() * 2 + k.numel() * 2 + v.numel() * 2
    must_hold = out.numel() * 2 + out.numel() * 2 + 2 * half_bytes + half_bytes
    score_bytes = 128 * 128 * 1024 * 2
    assert torch.cuda.max_memory_allocated() - baseline < must_hold + score_bytes / 2


@pytest.mark.cuda
def test_cuda_matches_sdpa_at_the_released_shape():
    q, k, v = (t.detach() for t in inputs(1, 512, (64, 64), (32, 32), dtype=torch.float32, device="cuda"))
    tokens = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    sdpa = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v), scale=0.25)
    out = memory_attention(q, k, v, impl="kernel")
    assert relative_error(out, sdpa.transpose(1, 2).reshape(out.shape)) <= 1e-5
