"""The modulated-conv kernels against the PyTorch references: the CPU twins always (values, gradients, gradcheck,
odd shapes; opcheck: test_op_boundary.py), the CUDA kernels where a device exists (fp16/bf16 within twice PyTorch's own error)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from mcnet_rt.ops import _native
from mcnet_rt.ops.modulated_conv import (dynamic_conv2d, dynamic_conv2d_reference, modulated_conv2d,
                                         modulated_conv2d_reference)

pytestmark = pytest.mark.skipif(_native.native() is None, reason="mcnet_rt._C is not built")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# (batch, Cin, Cout, H, W): odd sizes, channels off multiples of 32 and of the twin's tile, a single pixel.
SHAPES = [(1, 5, 7, 7, 5), (5, 33, 17, 4, 6), (2, 3, 9, 1, 1)]
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def make(*shape, dtype, seed, scale=1.0, offset=0.0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(*shape, generator=g, dtype=torch.float64) - 0.5) * scale + offset).to(device, dtype)


def modulated_inputs(b, c_in, c_out, h, w, dtype, device="cpu"):
    x = make(b, c_in, h, w, dtype=dtype, seed=1, scale=2, device=device)
    weight = make(c_out, c_in, 3, 3, dtype=dtype, seed=2, scale=2 / (c_in * 9) ** 0.5, device=device)
    styles = make(b, c_in, dtype=dtype, seed=3, offset=1.0, device=device)
    return x, weight, styles


def dynamic_inputs(b, c_in, c_out, h, w, dtype, device="cpu"):
    x = make(b, c_in, h, w, dtype=dtype, seed=4, scale=2, device=device)
    weight = make(4, c_out, c_in, 3, 3, dtype=dtype, seed=5, scale=2 / (c_in * 9) ** 0.5, device=device)
    bias = make(4, c_out, dtype=dtype, seed=6, device=device)
    gate = torch.softmax(make(b, 4, dtype=dtype, seed=7, scale=4, device=device), dim=1)
    return x, weight, bias, gate


def outputs_and_grads(fn, inputs, seed=8):
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = fn(*inputs)
    grad_out = make(*out.shape, dtype=out.dtype, seed=seed, device=out.device)
    return [out.detach(), *torch.autograd.grad(out, inputs, grad_out)]


def assert_close_all(ours, theirs, names, **tol):
    for name, a, b in zip(names, ours, theirs):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_modulated_conv_twin_matches_reference(shape, dtype):
    inputs = modulated_inputs(*shape, dtype)
    ours = outputs_and_grads(lambda x, w, s: modulated_conv2d(x, w, s, impl="kernel"), inputs)
    theirs = outputs_and_grads(modulated_conv2d_reference, inputs)
    assert_close_all(ours, theirs, ["out", "grad x", "grad weight", "grad styles"], **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_dynamic_conv_twin_matches_reference(shape, dtype):
    inputs = dynamic_inputs(*shape, dtype)
    ours = outputs_and_grads(lambda *a: dynamic_conv2d(*a, impl="kernel"), inputs)
    theirs = outputs_and_grads(dynamic_conv2d_reference, inputs)
    assert_close_all(ours, theirs, ["out", "grad x", "grad experts", "grad bias", "grad gate"], **TOL[dtype])


def test_modulated_conv_without_demodulation():
    inputs = modulated_inputs(3, 6, 10, 5, 5, torch.float64)
    ours = outputs_and_grads(lambda x, w, s: modulated_conv2d(x, w, s, demodulate=False, impl="kernel"), inputs)
    theirs = outputs_and_grads(lambda x, w, s: modulated_conv2d_reference(x, w, s, demodulate=False), inputs)
    assert_close_all(ours, theirs, ["out", "grad x", "grad weight", "grad styles"], **TOL[torch.float64])


def test_zero_styles_take_the_eps_path():
    """A sample whose styles are all zero has Σw² = 0: d = rsqrt(eps) = 1e4 and the kernel is exactly zero."""
    x, weight, styles = modulated_inputs(3, 6, 4, 5, 4, torch.float64)
    styles[1] = 0
    styles[2, ::2] = 0
    ours = outputs_and_grads(lambda x, w, s: modulated_conv2d(x, w, s, impl="kernel"), (x, weight, styles))
    theirs = outputs_and_grads(modulated_conv2d_reference, (x, weight, styles))
    assert torch.equal(ours[0][1], torch.zeros_like(ours[0][1]))
    assert all(torch.isfinite(t).all() for t in ours)
    assert_close_all(ours, theirs, ["out", "grad x", "grad weight", "grad styles"], **TOL[torch.float64])


def test_expanded_memory_is_read_without_a_copy():
    """The model's memory is one map expanded over the batch: the kernel reads it with batch stride 0 and its
    gradient sums over the samples, as for the reference."""
    memory, weight, styles = modulated_inputs(1, 7, 5, 6, 6, torch.float64)
    styles = make(4, 7, dtype=torch.float64, seed=9, offset=1.0)

    def run(fn):
        return outputs_and_grads(lambda m, w, s: fn(m.expand(4, -1, -1, -1), w, s), (memory, weight, styles))

    ours = run(lambda x, w, s: modulated_conv2d(x, w, s, impl="kernel"))
    assert_close_all(ours, run(modulated_conv2d_reference), ["out", "grad memory", "grad weight", "grad styles"],
                     **TOL[torch.float64])


def test_extreme_values_stay_finite_and_match():
    x, weight, bias, gate = dynamic_inputs(2, 5, 6, 3, 4, torch.float64)
    x = x * 1e6
    gate = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    ours = dynamic_conv2d(x, weight, bias, gate, impl="kernel")
    torch.testing.assert_close(ours, dynamic_conv2d_reference(x, weight, bias, gate), rtol=1e-10, atol=1e-6)


def test_gradcheck_float64():
    x, weight, styles = modulated_inputs(2, 3, 4, 4, 3, torch.float64)
    assert torch.autograd.gradcheck(lambda *a: modulated_conv2d(*a, impl="kernel"),
                                    [t.requires_grad_() for t in (x, weight, styles)])
    inputs = [t.requires_grad_() for t in dynamic_inputs(2, 3, 4, 3, 4, torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: dynamic_conv2d(*a, impl="kernel"), inputs, fast_mode=True)


def test_input_gradient_is_twice_differentiable():
    """The input gradient is the same custom op, transposed, with its own gradient (the weight gradient has none:
    second derivatives reach x and grad_out only)."""
    x, weight, styles = modulated_inputs(2, 3, 4, 3, 3, torch.float64)
    out_scale = make(2, 4, dtype=torch.float64, seed=10, offset=1.0)
    def conv(x):
        return torch.ops.mcnet_rt.persample_conv2d(x, weight.unsqueeze(0), None, styles, out_scale, None, False)

    assert torch.autograd.gradgradcheck(conv, [x.requires_grad_()])


def test_auto_leaves_cpu_to_the_reference_and_kernel_refuses_half_on_cpu():
    x, weight, styles = modulated_inputs(1, 3, 3, 3, 3, torch.float32)
    torch.testing.assert_close(modulated_conv2d(x, weight, styles, impl="auto"),
                               modulated_conv2d_reference(x, weight, styles))
    with pytest.raises(RuntimeError, match="modulated_conv2d: no kernel"):
        modulated_conv2d(x.half(), weight.half(), styles.half(), impl="kernel")


def low_precision_rule(fn, reference, inputs, dtype):
    """Kernel error ≤ 2× PyTorch's own error in `dtype` + a small absolute slack, both against float64."""
    exact = outputs_and_grads(reference, [t.double() for t in inputs])
    torch_low = outputs_and_grads(reference, [t.to(dtype) for t in inputs])
    ours = outputs_and_grads(fn, [t.to(dtype) for t in inputs])
    for name, e, t, o in zip(["out", *[f"grad {i}" for i in range(len(inputs))]], exact, torch_low, ours):
        torch_error = (t.double() - e).abs().max().item()
        our_error = (o.double() - e).abs().max().item()
        assert our_error <= 2 * torch_error + 1e-3 * e.abs().max().item(), (name, our_error, torch_error)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_modulated_conv(dtype):
    inputs = modulated_inputs(3, 40, 72, 9, 7, torch.float32, device="cuda")
    low_precision_rule(lambda *a: modulated_conv2d(*a, impl="kernel"), modulated_conv2d_reference, inputs, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_dynamic_conv(dtype):
    inputs = dynamic_inputs(2, 40, 72, 9, 7, torch.float32, device="cuda")
    low_precision_rule(lambda *a: dynamic_conv2d(*a, impl="kernel"), dynamic_conv2d_reference, inputs, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("op", ["modulated", "modulated_expanded", "dynamic"])
def test_cuda_matches_cpu_twin(op):
    if op == "dynamic":
        inputs, fn = dynamic_inputs(2, 33, 65, 5, 6, torch.float32), lambda *a: dynamic_conv2d(*a, impl="kernel")
    else:
        inputs = list(modulated_inputs(3, 33, 65, 5, 6, torch.float32))
        if op == "modulated_expanded":
            inputs[0] = inputs[0][:1]
        fn = lambda x, *a: modulated_conv2d(x.expand(3, -1, -1, -1), *a, impl="kernel")  # noqa: E731
    cpu = outputs_and_grads(fn, inputs)
    cuda = outputs_and_grads(fn, [t.cuda() for t in inputs])
    assert_close_all([t.cpu() for t in cuda], cpu, [f"{op} {i}" for i in range(len(cpu))], rtol=1e-4, atol=1e-5)


def test_kernel_refuses_other_kernel_sizes():
    x, weight, styles = modulated_inputs(1, 3, 3, 5, 5, torch.float32)
    with pytest.raises(ValueError, match="3×3"):
        modulated_conv2d(x, weight[..., :1, :1].contiguous(), styles, impl="kernel")


def test_benchmark_variants_compute_the_released_op(monkeypatch):
    """The benchmark's native alternatives (fold path, expert stack) and the kernel compute the released op, and
    its CPU smoke run times every variant."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("ops_modulated_conv", BENCHMARKS / "ops_modulated_conv.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(torch.device("cpu"), ["fp32"], [2], repeats=1, warmup=0, channels=6, kv_channels=10, memory=5)
    natives = {"modulated_conv": "native_fold", "dynamic_conv": "native_experts"}
    assert {(r["case"].split()[0], r["variant"], r["mode"]) for r in rows} == {
        (case, variant, mode) for case, native in natives.items()
        for variant in ("released", native, "kernel") for mode in ("forward", "forward+backward")}
    assert all(r["max_abs_diff_vs_released"] < 1e-5 and r["p50_ms"] > 0 for r in rows)


@pytest.mark.parametrize("op", ["modulated", "dynamic"])
def test_float32_twin_is_as_accurate_as_pytorch(op):
    """Against float64, over long reductions (Cin·9 = 2304 terms): within 2× PyTorch's own float32 error."""
    inputs = (modulated_inputs if op == "modulated" else dynamic_inputs)(2, 256, 24, 8, 8, torch.float64)
    reference = modulated_conv2d_reference if op == "modulated" else dynamic_conv2d_reference
    kernel = modulated_conv2d if op == "modulated" else dynamic_conv2d
    exact = outputs_and_grads(reference, inputs)
    torch32 = outputs_and_grads(reference, [t.float() for t in inputs])
    ours = outputs_and_grads(lambda *a: kernel(*a, impl="kernel"), [t.float() for t in inputs])
    for e, t, o in zip(exact, torch32, ours):
        assert (o.double() - e).abs().max() <= 2 * (t.double() - e).abs().max() + 1e-7
