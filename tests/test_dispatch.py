"""What impl="auto" runs: the static checks for GPUs and drivers that do not exist here (mocked answers of the
machine interface), and the self-test, timing and on-disk cache exercised with the CPU twins."""
import json
import logging
import time
from types import SimpleNamespace

import pytest
import torch

from mcnet_rt.cli import main
from mcnet_rt.ops import _native, dispatch, warp
from mcnet_rt.ops.machine import Build, DeviceFacts, Machine, use_machine

CURRENT = Build((75, 80, 86, 90, 100, 120), 90, 13000, "current")
BEFORE_ISSUE_10 = Build((80, 86, 89, 90), 90, 13000, "before")  # the build of csrc/build.json until issue 10
T4 = DeviceFacts("Tesla T4", (7, 5), 13000, 1)
RTX_5090 = DeviceFacts("NVIDIA GeForce RTX 5090", (12, 0), 13000, 1)
V100 = DeviceFacts("Tesla V100-SXM2-16GB", (7, 0), 13000, 1)
# PyTorch cu12.8 runs on this driver; the CUDA 13 runtime of mcnet_rt's build cannot (cudaErrorInsufficientDriver = 35).
A10_OLD_DRIVER = DeviceFacts("NVIDIA A10", (8, 6), 12080, -35)
CPU = DeviceFacts("test cpu", (0, 0), 0, 0)
CUDA = torch.device("cuda", 0)


class FakeMachine(Machine):
    def __init__(self, facts: DeviceFacts, build: Build | None = CURRENT, measure_cpu: bool = False):
        self.facts, self.built, self.measure_cpu = facts, build, measure_cpu

    def build(self):
        return self.built

    def device(self, device):
        return self.facts


@pytest.fixture
def fresh_dispatch(tmp_path, monkeypatch):
    """An empty decision cache in tmp_path and no decisions or notes from earlier tests."""
    monkeypatch.setenv("MCNET_RT_DISPATCH_CACHE", str(tmp_path / "dispatch.json"))
    monkeypatch.setattr(dispatch, "_decided", {})
    monkeypatch.setattr(dispatch, "_noted", set())
    return tmp_path / "dispatch.json"


def problem(facts, build=CURRENT, dtype=torch.float16):
    with use_machine(FakeMachine(facts, build)):
        return dispatch.missing_device_kernel(CUDA, dtype)


def test_sm75_runs_the_kernels_now_and_fell_back_before():
    assert problem(T4) is None
    assert problem(T4, dtype=torch.bfloat16) is None  # the sm_75 image runs bfloat16 on the FMA units
    before = problem(T4, BEFORE_ISSUE_10)
    assert "Tesla T4 (sm_75)" in before and "MCNET_RT_CUDA_ARCHS=75" in before
    assert "sm_70" in problem(V100)  # compute_90 PTX cannot be compiled down to Volta


def test_sm120_has_machine_code_and_ptx_covers_it_on_older_builds():
    assert problem(RTX_5090) is None
    assert problem(RTX_5090, BEFORE_ISSUE_10) is None  # the driver JIT-compiles the compute_90 PTX
    assert problem(DeviceFacts("NVIDIA Jetson Thor", (11, 0), 13000, 1)) is None


def test_old_driver_falls_back_with_the_reason():
    reason = problem(A10_OLD_DRIVER)
    assert "supports CUDA up to 12.8" in reason and "CUDA 13.0 runtime" in reason
    assert "cannot use this machine's driver (cudaError 100)" in problem(DeviceFacts("NVIDIA A10", (8, 6), 13000, -100))
    assert "no NVIDIA driver" in problem(DeviceFacts("no CUDA device", (0, 0), 0, -35))
    assert "float64" in problem(RTX_5090, dtype=torch.float64)
    assert "built without CUDA" in problem(RTX_5090, build=None)


def test_info_kernels_reports_each_family(capsys):
    main(["info", "--kernels"])
    out = capsys.readouterr().out
    for family in ("warp:", "memory_attention:", "modulated_conv:"):
        assert family in out
    if not torch.cuda.is_available():
        assert "auto -> reference" in out and "CUDA kernels on this machine: " in out
    main(["info", "--kernels", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report["auto"]) == {"warp", "memory_attention", "modulated_conv"}


def warp_inputs(requires_grad=False):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    deformation = torch.rand(1, 8, 8, 2, generator=g, dtype=torch.float64) * 2 - 1
    return features.requires_grad_(requires_grad), deformation.requires_grad_(requires_grad), None


def counted(fn, calls):
    def wrapper(*args):
        calls.append(fn)
        return fn(*args)
    return wrapper


def auto(inputs, kernel, reference=warp.warp_features_reference, machine=None):
    with use_machine(machine or FakeMachine(CPU, measure_cpu=True)):
        return dispatch.run("auto", "warp_features", inputs, kernel, reference)


def stored(cache):
    ((key, entries),) = json.loads(cache.read_text()).items()
    ((name, decision),) = entries.items()
    return key, name, decision


def test_self_test_runs_the_twin_and_caches_its_decision(fresh_dispatch):
    inputs = warp_inputs()
    with use_machine(FakeMachine(CPU, measure_cpu=True)):
        out = warp.warp_features(*inputs)
    assert torch.allclose(out, warp.warp_features_reference(*inputs), rtol=0, atol=1e-12)
    key, name, decision = stored(fresh_dispatch)
    assert key == "test cpu | sm_00 | driver 0 | _ops.so current"
    assert name == "warp_features float64 1x4x8x8,1x8x8x2 inference"
    assert decision["error"] <= 1e-12 and set(decision["ms"]) == {"kernel", "reference"}
    assert decision["use"] in ("kernel", "reference")


def test_a_kernel_that_disagrees_falls_back_with_one_note(fresh_dispatch, caplog):
    inputs = warp_inputs()
    wrong = lambda f, d, o: 1.5 * warp.warp_features_reference(f, d, o)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="mcnet_rt.ops"):
        for _ in range(2):
            assert torch.equal(auto(inputs, wrong), warp.warp_features_reference(*inputs))
    assert stored(fresh_dispatch)[2]["use"] == "reference"
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "disagrees with the reference (relative error 0.5 " in notes[0]


def test_a_wrong_gradient_or_a_failing_kernel_loses(fresh_dispatch):
    inputs = warp_inputs(requires_grad=True)
    detached_motion = lambda f, d, o: warp.warp_features_reference(f, d.detach(), o)  # noqa: E731
    auto(inputs, detached_motion)
    key, name, decision = stored(fresh_dispatch)
    assert name.endswith(" train") and "disagrees" in decision["why"]

    def no_image(*args):
        raise RuntimeError("warp_forward: CUDA error: no kernel image is available for execution on the device")

    assert torch.equal(auto(warp_inputs(), no_image), warp.warp_features_reference(*warp_inputs()))
    decision = json.loads(fresh_dispatch.read_text())[key]["warp_features float64 1x4x8x8,1x8x8x2 inference"]
    assert decision["use"] == "reference" and "failed its self-test: warp_forward: CUDA error: no kernel" in \
        decision["why"]


def slow(fn, seconds=0.05):
    def wrapper(*args):
        time.sleep(seconds)
        return fn(*args)
    return wrapper


def test_the_kernel_runs_only_where_it_is_faster(fresh_dispatch):
    reference = warp.warp_features_reference
    auto(warp_inputs(), reference, reference=slow(reference))
    assert stored(fresh_dispatch)[2]["use"] == "kernel"
    fresh_dispatch.unlink()
    dispatch._decided.clear()
    auto(warp_inputs(), slow(reference))
    decision = stored(fresh_dispatch)[2]
    assert decision["use"] == "reference" and "reference is faster" in decision["why"]


def test_cached_decisions_are_reused_until_a_rebuild(fresh_dispatch):
    calls = []
    kernel = counted(warp.warp_features_reference, calls)
    auto(warp_inputs(), kernel)
    measured = len(calls)
    assert measured > 1  # the trial and the timed runs
    dispatch._decided.clear()  # a new process: the decision comes from disk
    auto(warp_inputs(), kernel)
    assert len(calls) - measured <= 1  # at most the run itself, no new self-test
    rebuilt = Build(CURRENT.sass_archs, CURRENT.ptx_arch, CURRENT.runtime_version, "rebuilt")
    before = len(calls)
    auto(warp_inputs(), kernel, machine=FakeMachine(CPU, rebuilt, measure_cpu=True))
    assert len(calls) - before > 1  # measured again under the new build's key
    assert set(json.loads(fresh_dispatch.read_text())) == {"test cpu | sm_00 | driver 0 | _ops.so current",
                                                           "test cpu | sm_00 | driver 0 | _ops.so rebuilt"}


def test_the_build_hash_is_that_of_the_ops_library_whose_kernels_run(tmp_path, monkeypatch):
    """The kernels live in `_ops.so`, so its bytes key the decisions; without it there is no CUDA build to run."""
    facts = SimpleNamespace(with_cuda=True, cuda_archs=(90,), ptx_arch=90, cuda_runtime_version=13000)
    monkeypatch.setattr(_native, "native", lambda: facts)
    hashes = []
    for name, content in (("a", b"kernels"), ("b", b"kernels"), ("c", b"rebuilt kernels")):
        library = tmp_path / name / "_ops.so"
        library.parent.mkdir()
        library.write_bytes(content)
        monkeypatch.setattr(_native, "OPS_LIBRARY", library)
        build = Machine().build()
        assert (build.sass_archs, build.ptx_arch, build.runtime_version) == ((90,), 90, 13000)
        hashes.append(build.build_hash)
    assert hashes[0] == hashes[1] != hashes[2]
    monkeypatch.setattr(_native, "OPS_LIBRARY", tmp_path / "missing" / "_ops.so")
    assert Machine().build() is None


def test_forced_impls_skip_the_self_test(fresh_dispatch):
    calls = []
    kernel = counted(warp.warp_features_reference, calls)
    with use_machine(FakeMachine(CPU, measure_cpu=True)):
        dispatch.run("kernel", "warp_features", warp_inputs(), kernel, warp.warp_features_reference)
        dispatch.run("reference", "warp_features", warp_inputs(), kernel, warp.warp_features_reference)
    assert len(calls) == 1 and not fresh_dispatch.exists()


def test_a_decision_write_cut_short_leaves_the_cache_as_it_was(fresh_dispatch, monkeypatch):
    """The cache file is replaced whole or not at all: a write that fails half-way (a full disk) keeps the earlier
    decisions readable and leaves no temporary beside them."""
    from pathlib import Path

    from mcnet_rt.ops import decisions
    from mcnet_rt.ops.selftest import Decision

    decisions.store("machine", "warp_features", Decision("kernel", "faster"))
    before = fresh_dispatch.read_text()
    write_text = Path.write_text

    def disk_full(path, text, *args, **kwargs):
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", disk_full)
        decisions.store("machine", "sparse_warp", Decision("reference", "slower"))
    assert fresh_dispatch.read_text() == before
    assert set(decisions.load("machine")) == {"warp_features"}
    assert [p.name for p in fresh_dispatch.parent.iterdir()] == [fresh_dispatch.name]
