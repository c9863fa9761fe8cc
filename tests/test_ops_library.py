"""The ops library mcnet_rt/_ops.so on its own: a process that never imports mcnet_rt loads it with
`torch.ops.load_library` (as a C++ caller links or dlopens it) and runs the public ops on CPU tensors (the twins),
directly and inside an AOTInductor package exported with the ops as kernels."""
import subprocess
import sys

import pytest
import torch

from mcnet_rt.ops import (_native, dynamic_conv2d_reference, memory_attention, memory_attention_reference,
                          modulated_conv2d_reference, sparse_warp_reference, warp_features, warp_features_reference)

pytestmark = pytest.mark.skipif(not _native.ops_loaded(), reason="mcnet_rt/_ops.so is not built")


def rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def public_cases():
    """op name -> (operands, the reference's output)."""
    features, occlusion = rand(2, 4, 8, 8, seed=1), rand(2, 1, 5, 5, seed=3)
    deformation = rand(2, 5, 5, 2, seed=2) * 2 - 1
    image, motions = rand(2, 3, 8, 8, seed=4), rand(2, 3, 8, 8, 2, seed=5) * 2.2 - 1.1
    x, weight, styles = rand(1, 4, 6, 6, seed=6), rand(5, 4, 3, 3, seed=7) / 6, rand(3, 4, seed=8) + 0.5
    dx, experts, expert_bias = rand(3, 4, 6, 6, seed=9), rand(2, 5, 4, 3, 3, seed=10) / 6, rand(2, 5, seed=11)
    gate = rand(3, 2, seed=12).softmax(1)
    q, k, v = rand(2, 8, 6, 6, seed=13), rand(2, 8, 3, 3, seed=14), rand(2, 8, 3, 3, seed=15)
    return {
        "warp_features": ((features, deformation, occlusion),
                          warp_features_reference(features, deformation, occlusion)),
        "sparse_warp": ((image, motions), sparse_warp_reference(image, motions)),
        "modulated_conv2d": ((x, weight, styles, True, 1e-8),
                             modulated_conv2d_reference(x, weight, styles, True, 1e-8)),
        "dynamic_conv2d": ((dx, experts, expert_bias, gate), dynamic_conv2d_reference(dx, experts, expert_bias, gate)),
        "memory_attention": ((q, k, v, 0.25), memory_attention_reference(q, k, v, 0.25)),
    }


def run_without_mcnet_rt(script: str) -> str:
    """Run `script` in a new interpreter with the ops library loaded and mcnet_rt never imported."""
    prelude = f"import sys, torch\ntorch.ops.load_library({str(_native.OPS_LIBRARY)!r})\n"
    check = "\nassert not any(m.split('.')[0] == 'mcnet_rt' for m in sys.modules), 'mcnet_rt was imported'\n"
    result = subprocess.run([sys.executable, "-c", prelude + script + check], capture_output=True, text=True,
                            timeout=600, cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_process_without_mcnet_rt_runs_the_public_ops(tmp_path):
    torch.save(public_cases(), tmp_path / "cases.pt")
    out = run_without_mcnet_rt(f"""
for name, (operands, expected) in torch.load({str(tmp_path / 'cases.pt')!r}).items():
    error = (getattr(torch.ops.mcnet_rt, name)(*operands) - expected).abs().max().item()
    print(name, error)
""")
    errors = dict(line.split() for line in out.strip().splitlines())
    assert set(errors) == set(public_cases())
    assert all(float(e) <= 1e-5 for e in errors.values()), errors


class WarpThenAttend(torch.nn.Module):
    """Two public ops in one graph, the way the render half uses them."""

    def forward(self, features, deformation, occlusion, key, value):
        warped = warp_features(features, deformation, occlusion, impl="kernel")
        return memory_attention(warped, key, value, 0.25, impl="kernel")


def tiny_inputs(batch: int):
    return (rand(batch, 8, 6, 6, seed=1), rand(batch, 4, 4, 2, seed=2) * 2 - 1, rand(batch, 1, 4, 4, seed=3),
            rand(batch, 8, 3, 3, seed=4), rand(batch, 8, 3, 3, seed=5))


@pytest.mark.slow  # an AOTInductor compile
def test_an_aoti_package_with_the_ops_as_kernels_runs_without_mcnet_rt(tmp_path):
    """Exported with a dynamic batch (the fakes see a symbolic size), run at another batch than the example's."""
    batch = torch.export.Dim("batch", min=1, max=8)
    with torch.no_grad():
        program = torch.export.export(WarpThenAttend(), tiny_inputs(2), dynamic_shapes=[{0: batch}] * 5)
        targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
        assert {"mcnet_rt.warp_features.default", "mcnet_rt.memory_attention.default"} <= targets
        package = torch._inductor.aoti_compile_and_package(
            program, package_path=str(tmp_path / "tiny.pt2"),
            inductor_configs={"aot_inductor.compile_wrapper_opt_level": "O0"})
    inputs = tiny_inputs(3)
    features, deformation, occlusion, key, value = inputs
    expected = memory_attention_reference(warp_features_reference(features, deformation, occlusion), key, value)
    torch.save({"inputs": inputs, "expected": expected}, tmp_path / "case.pt")
    out = run_without_mcnet_rt(f"""
case = torch.load({str(tmp_path / 'case.pt')!r})
run = torch._inductor.aoti_load_package({package!r})
print((run(*case["inputs"]) - case["expected"]).abs().max().item())
""")
    assert float(out.strip().splitlines()[-1]) <= 1e-5
