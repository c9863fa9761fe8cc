"""The custom ops' boundary: every operand is checked (dtype, device, shape, contiguity) with an error naming it,
in the op body and in its fake (meta) implementation alike, before anything reaches a launcher."""
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


@needs_native
def test_public_modulated_conv_takes_the_shared_input_with_batch_one():
    x, weight, styles = rand(1, 4, 6, 6), rand(5, 4, 3, 3), rand(3, 4)
    expected = mcnet_rt.ops.modulated_conv2d_reference(x.expand(3, -1, -1, -1), weight, styles)
    torch.testing.assert_close(ops.modulated_conv2d(x, weight, styles, True, 1e-8), expected, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="x has batch 2, it must be 1"):
        ops.modulated_conv2d(rand(2, 4, 6, 6), weight, styles, True, 1e-8)


def test_launches_run_under_the_operands_cuda_device():
    """The guard itself (entering it needs a GPU, not here): it names the operands' device, not the current one."""
    assert _native.device_guard(torch.device("cuda", 1)).idx == 1
    assert not isinstance(_native.device_guard(torch.device("cpu")), torch.cuda.device)
