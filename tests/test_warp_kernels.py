"""The fused warp kernel (CPU twin always, CUDA where a device exists) against the PyTorch reference."""
import pytest
import torch

from mcnet_rt.ops import use_impl, warp
from mcnet_rt.ops.dispatch import missing_kernel



def inputs(batch, channels, size, grid, occlusion, dtype=torch.float64, device="cpu", spread=1.2, seed=0):
    """Features, a deformation reaching `spread` beyond [-1,1] (samples outside the map), and an occlusion map."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, *size, generator=g, dtype=dtype)
    deformation = (torch.rand(batch, *grid, 2, generator=g, dtype=dtype) * 2 - 1) * spread
    occ = torch.rand(batch, 1, *occlusion, generator=g, dtype=dtype) if occlusion else None
    return [t if t is None else t.to(device).requires_grad_() for t in (features, deformation, occ)]


def grads(out, tensors, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g = g.to(out.device, out.dtype)  # the same upstream gradient for every dtype
    return torch.autograd.grad(out, [t for t in tensors if t is not None], g)


# (batch, channels, feature size, deformation size, occlusion size): odd sizes, batch 1 and 5, the real
# resolution ladder (64x64 deformation to 32/64/128 maps), equal sizes, no occlusion.
WARP_CASES = [
    (1, 3, (7, 5), (4, 3), (2, 2)),
    (5, 33, (13, 17), (13, 17), None),
    (2, 8, (32, 32), (64, 64), (64, 64)),
    (1, 4, (128, 96), (64, 64), (64, 64)),
    (1, 2, (1, 1), (3, 3), (1, 1)),
]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1)).item()


@pytest.mark.parametrize("case", WARP_CASES)
def test_warp_features_twin_matches_reference(case):
    """float64: agreement to rounding; float32: no more error than PyTorch's own float32 path (both vs float64).

    Upsampled deformations amplify coordinate rounding by the grid-to-pixel slope, so float32 is judged against
    PyTorch's own float32 error rather than a fixed bound."""
    exact = inputs(*case)
    ref = warp.warp_features_reference(*exact)
    out = warp.warp_features(*exact, impl="kernel")
    assert out.dtype == torch.float64 and out.shape == ref.shape
    assert relative_error(out, ref) <= 1e-10
    ref_grads = grads(ref, exact)
    for got, want in zip(grads(out, exact), ref_grads):
        assert relative_error(got, want) <= 1e-10
    single = [t if t is None else t.detach().float().requires_grad_() for t in exact]
    ours, torch_own = warp.warp_features(*single, impl="kernel"), warp.warp_features_reference(*single)
    assert ours.dtype == torch.float32
    assert relative_error(ours, ref) <= 2 * relative_error(torch_own, ref) + 1e-6
    for got, own, want in zip(grads(ours, single), grads(torch_own, single), ref_grads):
        assert relative_error(got, want) <= 2 * relative_error(own, want) + 1e-6


@pytest.mark.parametrize("batch,grids,size", [(1, 11, (9, 7)), (5, 3, (16, 16))])
def test_sparse_warp_twin_matches_reference(batch, grids, size):
    g = torch.Generator().manual_seed(3)
    image = torch.randn(batch, 3, *size, generator=g, dtype=torch.float64, requires_grad=True)
    motions = ((torch.rand(batch, grids, *size, 2, generator=g, dtype=torch.float64) * 2 - 1) * 1.3).requires_grad_()
    ref = warp.sparse_warp_reference(image, motions)
    out = warp.sparse_warp(image, motions, impl="kernel")
    assert out.shape == (batch, grids, 3, *size)
    assert (out - ref).abs().max() <= 1e-12
    for got, want in zip(grads(out, [image, motions]), grads(ref, [image, motions])):
        assert (got - want).abs().max() <= 1e-11


def test_grid_outside_and_zero_occlusion_give_zeros_and_finite_gradients():
    features, _, _ = inputs(2, 3, (6, 6), (3, 3), None)
    far = torch.full((2, 3, 3, 2), 5.0, dtype=torch.float64, requires_grad=True)
    huge = torch.full((2, 3, 3, 2), 1e30, dtype=torch.float64, requires_grad=True)
    zero_occ = torch.zeros(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    near = torch.zeros(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    for grid, occ in ((far, None), (huge, None), (near, zero_occ)):
        out = warp.warp_features(features, grid, occ, impl="kernel")
        assert out.abs().max() == 0
        tensors = [features, grid, occ]
        for got, want in zip(grads(out, tensors), grads(warp.warp_features_reference(*tensors), tensors)):
            assert torch.isfinite(got).all()
            if grid is not huge:
                assert (got - want).abs().max() <= 1e-12


def test_gradcheck_float64():
    features, deformation, occ = inputs(2, 2, (5, 4), (3, 3), (2, 3), spread=1.1)
    assert torch.autograd.gradcheck(lambda f, d, o: warp.warp_features(f, d, o, impl="kernel"),
                                    (features, deformation, occ))
    image = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    motions = (torch.rand(1, 3, 4, 5, 2, dtype=torch.float64) * 2.2 - 1.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, m: warp.sparse_warp(i, m, impl="kernel"), (image, motions))


def test_impl_switch():
    features, deformation, occ = inputs(1, 2, (4, 4), (4, 4), None, dtype=torch.float32)
    # "auto" leaves CPU tensors to the reference; the whole-model switch forces the twins.
    assert torch.equal(warp.warp_features(features, deformation),
                       warp.warp_features_reference(features, deformation))
    with use_impl("kernel"):
        assert (warp.warp_features(features, deformation) - warp.warp_features_reference(features, deformation)
                ).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match="kernels run cpu tensors in float32, float64, not torch.float16"):
        warp.warp_features(features.half(), deformation, impl="kernel")
    with pytest.raises(ValueError, match="impl must be one of"):
        warp.warp_features(features, deformation, impl="fast")
    assert missing_kernel(features) is None


@pytest.mark.cuda
@pytest.mark.parametrize("case", WARP_CASES)
def test_cuda_float32_matches_reference(case):
    """Judged against PyTorch's own float32 error vs float64, as the twin is: two correct float32 warps differ by
    their FMA contraction alone, up to 4.6e-5 at 128×96 from a 64×64 grid (kernel review, finding T2)."""
    exact = inputs(*case, device="cuda")
    oracle = warp.warp_features_reference(*exact)
    oracle_grads = grads(oracle, exact)
    single = [t if t is None else t.detach().float().requires_grad_() for t in exact]
    out, torch_own = warp.warp_features(*single, impl="kernel"), warp.warp_features_reference(*single)
    assert relative_error(out, oracle) <= 2 * relative_error(torch_own, oracle) + 1e-6
    for got, own, want in zip(grads(out, single), grads(torch_own, single), oracle_grads):
        assert relative_error(got, want) <= 2 * relative_error(own, want) + 1e-6


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_within_twice_pytorch_error(dtype):
    """Flash-attention's rule: error vs a float64 oracle at most about twice PyTorch's own in `dtype`."""
    f64 = inputs(4, 64, (64, 64), (64, 64), (64, 64), dtype=torch.float64, device="cuda")
    oracle = warp.warp_features_reference(*f64)
    features = f64[0].detach().to(dtype)
    ours = warp.warp_features(features, f64[1].detach().float(), f64[2].detach().float(), impl="kernel")
    torch_low = warp.warp_features_reference(features, f64[1].detach().to(dtype), f64[2].detach().to(dtype))
    torch_error = (torch_low.double() - oracle).abs().max().item()
    assert (ours.double() - oracle).abs().max().item() <= 2 * torch_error + 1e-3
