"""The benchmark scripts run and write their JSON (tiny CPU settings: this checks the scripts, not speed)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script, *args):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                            cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_ops_benchmark_compares_kernels_with_the_released_path(tmp_path):
    output = tmp_path / "ops.json"
    run("ops.py", "--device", "cpu", "--families", "warp", "--batches", "1", "--warmup", "0", "--iterations", "1",
        "--output", str(output))
    report = json.loads(output.read_text())
    assert report["device_type"] == "cpu" and report["commit"] and report["command"]
    variants = {(r["case"], r["mode"], r["variant"]) for r in report["results"]}
    assert ("sparse_warps_16@64", "forward+backward", "kernel") in variants
    assert all("kernel_speedup" in r for r in report["results"] if r["variant"] == "released")


@pytest.mark.parametrize("script", ["ops_memory_attention.py", "ops_modulated_conv.py"])
def test_family_benchmarks_cpu_smoke(script):
    assert run(script, "--cpu-smoke").strip()


def test_frame_latency_and_training_step_compare_impls(tmp_path):
    latency, training = tmp_path / "latency.json", tmp_path / "training.json"
    run("frame_latency.py", "--device", "cpu", "--preset", "small", "--batches", "1", "--warmup", "0",
        "--iterations", "1", "--impls", "reference", "kernel", "--output", str(latency))
    runs = json.loads(latency.read_text())["runs"]
    assert [r["impl"] for r in runs] == ["reference", "kernel"] and "speedup_vs_reference" in runs[1]
    run("training_step.py", "--device", "cpu", "--preset", "small", "--image-size", "64", "--batch", "1", "--amp",
        "none", "--steps", "1", "--warmup", "0", "--impls", "reference", "kernel", "--output", str(training))
    rows = json.loads(training.read_text())["results"]
    assert [r["ops"] for r in rows] == ["reference", "kernel"] and rows[1]["speedup_vs_reference"] > 0


def test_face_stack_benchmark_times_every_stage(tmp_path):
    output = tmp_path / "faces.json"
    run("faces.py", "--frames", "5", "--size", "64", "--output", str(output))
    report = json.loads(output.read_text())
    assert report["frame_size"] == [640, 360] and report["frames_with_face"] >= 1
    assert all(report[k]["iterations"] == 5 for k in ("detector", "tracker_update", "crop", "paste_back"))
