"""The ops' PyTorch references against independent formulations of the same math.

These references are the oracles the fused kernels will be tested against, so each is checked here by a
different route: SDPA for the attention, per-sample loops for the per-sample convolutions, hand-written
bilinear sampling for the warps.
"""
import torch
import torch.nn.functional as F

from mcnet_rt.ops import (dynamic_conv2d_reference, memory_attention_reference, modulated_conv2d_reference,
                          sparse_warp_reference, warp_features_reference)

g = torch.Generator().manual_seed(0)


def rand(*shape, dtype=torch.float64):
    return torch.rand(*shape, generator=g, dtype=dtype)


def test_memory_attention_matches_sdpa_with_fixed_scale():
    q, k, v = rand(2, 16, 5, 7), rand(2, 16, 4, 4), rand(2, 16, 4, 4)
    ours = memory_attention_reference(q, k, v, scale=0.25)
    tokens = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    sdpa = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v), scale=0.25)
    assert torch.allclose(ours, sdpa.transpose(1, 2).reshape(2, 16, 5, 7), atol=1e-12)


def test_modulated_conv_matches_per_sample_loop():
    x, weight, styles = rand(3, 6, 5, 5) - 0.5, rand(4, 6, 3, 3) - 0.5, rand(3, 6) + 0.5
    ours = modulated_conv2d_reference(x, weight, styles)
    for i in range(3):
        w = weight * styles[i].view(1, -1, 1, 1)
        w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        assert torch.allclose(ours[i:i + 1], F.conv2d(x[i:i + 1], w, padding=1), atol=1e-12)
    undemodulated = modulated_conv2d_reference(x, weight, styles, demodulate=False)
    assert torch.allclose(undemodulated[1:2], F.conv2d(x[1:2], weight * styles[1].view(1, -1, 1, 1), padding=1))


def test_dynamic_conv_is_the_gated_sum_of_expert_convs():
    """conv(x, Σ aₖWₖ) + Σ aₖbₖ = Σ aₖ (conv(x, Wₖ) + bₖ): the deployment reformulation of the reference notes."""
    x, weight, bias = rand(2, 5, 6, 6), rand(4, 7, 5, 3, 3) - 0.5, rand(4, 7)
    gate = torch.softmax(rand(2, 4), dim=1)
    ours = dynamic_conv2d_reference(x, weight, bias, gate)
    experts = torch.stack([F.conv2d(x, weight[k], bias[k], padding=1) for k in range(4)], dim=1)
    assert torch.allclose(ours, (gate[:, :, None, None, None] * experts).sum(1), atol=1e-12)


def bilinear_zero_pad(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample image (C,H,W) at pixel coordinates (x, y) with zero padding, by hand."""
    c, h, w = image.shape
    x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
    out = torch.zeros(c, dtype=image.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < w and 0 <= yi < h:
                out += weight * image[:, yi, xi]
    return out


def test_feature_warp_uses_align_corners_true_and_occlusion():
    features = rand(1, 3, 8, 8)
    deformation = rand(1, 4, 4, 2) * 2.4 - 1.2  # some points fall outside the image
    occlusion = rand(1, 1, 4, 4)
    out = warp_features_reference(features, deformation, occlusion)
    grid = F.interpolate(deformation.permute(0, 3, 1, 2), size=(8, 8), mode="bilinear", align_corners=True)
    occ = F.interpolate(occlusion, size=(8, 8), mode="bilinear", align_corners=True)
    for i, j in [(0, 0), (3, 5), (7, 7), (6, 1)]:
        gx, gy = grid[0, 0, i, j].item(), grid[0, 1, i, j].item()
        expected = bilinear_zero_pad(features[0], (gx + 1) / 2 * 7, (gy + 1) / 2 * 7) * occ[0, 0, i, j]
        assert torch.allclose(out[0, :, i, j], expected, atol=1e-12)


def test_sparse_warp_uses_align_corners_false():
    image = rand(2, 3, 6, 6)
    motions = rand(2, 4, 6, 6, 2) * 2.2 - 1.1
    out = sparse_warp_reference(image, motions)
    assert out.shape == (2, 4, 3, 6, 6)
    for b, k, i, j in [(0, 0, 0, 0), (1, 3, 2, 5), (1, 1, 5, 0)]:
        gx, gy = motions[b, k, i, j].tolist()
        expected = bilinear_zero_pad(image[b], ((gx + 1) * 6 - 1) / 2, ((gy + 1) * 6 - 1) / 2)
        assert torch.allclose(out[b, k, :, i, j], expected, atol=1e-12)
