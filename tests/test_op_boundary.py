"""The custom ops' boundary: every operand is checked (dtype, device, shape, contiguity) with an error naming it,
in the op (C++, csrc/torch) and in its fake (meta) implementation alike, before anything reaches a launcher; and
every op passes torch.library.opcheck (schema, autograd registration, fake tensors, AOT dispatch)."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mcnet_rt.ops
from mcnet_rt.ops import _native

ops = torch.ops.mcnet_rt
needs_native = pytest.mark.skipif(_native.native() is None, reason="mcnet_rt._C is not built")


def rand(*shape, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(len(shape)), dtype=dtype)


def strided(t):
    """Same values, not packed."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


# op, valid operands (then non-tensor arguments), and the operands to spoil
CASES = {
    "warp_features": (ops.warp_features, lambda: [rand(2, 4, 8, 8), rand(2, 5, 5, 2) * 2 - 1, rand(2, 1, 5, 5)],
                      ("features", "deformation", "occlusion")),
    "sparse_warp": (ops.sparse_warp, lambda: [rand(2, 3, 8, 8), rand(2, 3, 8, 8, 2) * 2 - 1], ("image", "motions")),
    "modulated_conv2d": (ops.modulated_conv2d, lambda: [rand(1, 4, 6, 6), rand(5, 4, 3, 3), rand(2, 4), True, 1e-8],
                         ("x", "weight", "styles")),
    "dynamic_conv2d": (ops.dynamic_conv2d,
                       lambda: [rand(2, 4, 6, 6), rand(3, 5, 4, 3, 3), rand(3, 5), rand(2, 3).softmax(1)],
                       ("x", "expert_weight", "expert_bias", "gate")),
    "memory_attention": (ops.memory_attention, lambda: [rand(2, 4, 6, 6), rand(2, 4, 3, 3), rand(2, 4, 3, 3), 0.25],
                         ("query", "key", "value")),
    "warp": (ops.warp, lambda: [rand(2, 4, 8, 8), rand(6, 5, 5, 2), None, 3, False], ("features", "deformation")),
    "memory_attention_forward": (ops.memory_attention_forward, lambda: [rand(2, 4, 9), rand(2, 4, 5), rand(2, 4, 5),
                                                                        0.25], ("query", "key", "value")),
    "persample_conv2d": (ops.persample_conv2d, lambda: [rand(2, 4, 6, 6), rand(3, 5, 4, 3, 3), rand(2, 3), rand(2, 4),
                                                        rand(2, 5), rand(2, 5), False],
                         ("x", "weight", "mix", "in_scale", "out_scale", "bias")),
    "demodulation": (ops.demodulation, lambda: [rand(5, 4, 3, 3), rand(2, 4), 1e-8], ("weight", "styles")),
}
SPOILERS = {
    "dtype": (lambda t: t.half(), "must be"),  # no CPU kernel runs float16
    "device": (lambda t: t.to("meta"), "is on"),
    "shape": (lambda t: t[..., :-1] if t.shape[-1] > 2 else t[:1, ..., :1], "must|dim"),
    "contiguity": (strided, "contiguous"),
}


def run(op, args, fake: bool):
    if not fake:
        return op(*args)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        return op(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) and a.device.type != "meta" else a
                    for a in args))


@needs_native
@pytest.mark.parametrize("name", sorted(CASES))
def test_valid_operands_run_and_fake_gives_the_real_shape(name):
    op, make, _ = CASES[name]
    real = run(op, make(), fake=False)
    fake = run(op, make(), fake=True)
    for r, f in zip(*(t if isinstance(t, tuple) else (t,) for t in (real, fake))):
        assert r.shape == f.shape and r.dtype == f.dtype


@needs_native
@pytest.mark.parametrize("fake", [False, True], ids=["body", "fake"])
@pytest.mark.parametrize("spoil", sorted(SPOILERS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_operand_is_checked(name, spoil, fake):
    op, make, operands = CASES[name]
    change, message = SPOILERS[spoil]
    for index, operand in enumerate(operands):
        args = make()
        if spoil == "contiguity" and args[index].dim() < 2:
            continue
        args[index] = change(args[index])
        if spoil == "device" and index == 0:  # the first operand sets the device: the others are then wrong
            with pytest.raises(RuntimeError, match=f"{name}: .*is on"):
                run(op, args, fake)
            continue
        with pytest.raises(RuntimeError, match=f"{name}: {operand}.*({message})"):
            run(op, args, fake)


def half_operands(name):
    """CASES[name]'s operands as a float16 kernel takes them: data and weights float16, the rest float32."""
    op, make, operands = CASES[name]
    args = make()
    data = {"features", "image", "x", "weight", "expert_weight", "query", "key", "value"}
    return op, [a.half() if i < len(operands) and operands[i] in data else a for i, a in enumerate(args)]


@needs_native
@pytest.mark.parametrize("name", ["warp_features", "sparse_warp", "modulated_conv2d", "dynamic_conv2d",
                                  "memory_attention"])
def test_a_graph_traced_for_cuda_takes_the_cuda_kernels_types(name):
    """The plugin graph is traced on the CPU for the CUDA kernels (`_native.traced_for`): the fakes take float16
    there, while the CPU op itself still refuses it (only its twins would run)."""
    op, args = half_operands(name)
    with pytest.raises(RuntimeError, match="must be"):
        run(op, args, fake=True)
    with _native.traced_for("cuda"):
        assert run(op, args, fake=True).dtype == torch.float16
        with pytest.raises(RuntimeError, match="must be"):
            run(op, args, fake=False)


@needs_native
def test_public_modulated_conv_takes_the_shared_input_with_batch_one():
    x, weight, styles = rand(1, 4, 6, 6), rand(5, 4, 3, 3), rand(3, 4)
    expected = mcnet_rt.ops.modulated_conv2d_reference(x.expand(3, -1, -1, -1), weight, styles)
    torch.testing.assert_close(ops.modulated_conv2d(x, weight, styles, True, 1e-8), expected, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="x has batch 2, it must be 1"):
        ops.modulated_conv2d(rand(2, 4, 6, 6), weight, styles, True, 1e-8)



def opcheck_samples():
    """(op, args, differentiable): every op with the valid operands of CASES, then the private pieces' other uses:
    gradients through the forward ops, the backward ops, no occlusion, the transposed conv and the expanded
    (stride-0) memory."""
    samples = [(CASES[name][0], CASES[name][1](), False) for name in sorted(CASES)]
    f64 = torch.float64
    features, occlusion = rand(2, 3, 6, 5, dtype=f64), rand(2, 1, 3, 3, dtype=f64)
    deformation = rand(2, 4, 4, 2, dtype=f64) * 2 - 1
    q, k, v = rand(2, 6, 35), rand(2, 6, 9), rand(2, 6, 9) * 2
    out, lse = ops.memory_attention_forward(q, k, v, 0.25)
    x, weight, styles = rand(2, 4, 5, 3, dtype=f64), rand(5, 4, 3, 3, dtype=f64), rand(2, 4, dtype=f64)
    demod = rand(2, 5, dtype=f64) + 1
    grad = rand(2, 5, 5, 3, dtype=f64)
    gate = rand(2, 3, dtype=f64).softmax(1)
    samples += [
        (ops.warp, (features, deformation, occlusion, 1, True), True),
        (ops.warp, (features, deformation, None, 1, False), True),
        (ops.warp_backward, (rand(2, 3, 6, 5, dtype=f64), features, deformation, occlusion, 1, True), False),
        (ops.memory_attention_forward, (q, k, v, 0.25), True),
        (ops.memory_attention_backward, (torch.randn_like(out), q, k, v, out, lse, 0.25), False),
        (ops.persample_conv2d, (x, weight.unsqueeze(0), None, styles, demod, None, False), True),
        (ops.persample_conv2d, (x[:1].expand(2, -1, -1, -1), weight.unsqueeze(0), None, styles, demod, None, False),
         False),
        (ops.persample_conv2d, (grad, weight.unsqueeze(0), None, styles, demod, None, True), True),
        (ops.persample_conv2d, (x, rand(3, 5, 4, 3, 3, dtype=f64), gate, None, None, rand(2, 5, dtype=f64), False),
         True),
        (ops.persample_conv2d_weight_grad, (x, grad), False),
        (ops.demodulation, (weight, styles, 1e-8), True),
        (ops.demodulation_backward, (demod, weight, styles, demod), False),
    ]
    return samples


@needs_native
@pytest.mark.parametrize("index", range(len(CASES) + 12))
def test_opcheck(index):
    op, args, differentiable = opcheck_samples()[index]
    if differentiable:
        args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args)
