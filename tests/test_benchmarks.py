"""The benchmark scripts run and write their JSON (tiny CPU settings: this checks the scripts, not speed)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
pytestmark = pytest.mark.slow  # each runs a benchmark script as a process


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
    assert [r["impl"] for r in runs] == ["reference", "kernel"] and "speedup_vs_fp32_reference_eager" in runs[1]
    run("frame_latency.py", "--device", "cpu", "--preset", "small", "--batches", "1", "--warmup", "0",
        "--iterations", "1", "--precisions", "bf16", "--backend", "eager", "onnxruntime", "--output", str(latency))
    eager, onnxruntime = json.loads(latency.read_text())["runs"]
    assert eager["stages"]["end_to_end"]["max_abs_diff_vs_fp32_eager"] > 0  # bf16 is not fp32
    assert "fp32 or fp16 graphs" in onnxruntime["skipped"]  # refused before any build
    run("training_step.py", "--device", "cpu", "--preset", "small", "--image-size", "64", "--batch", "1", "--amp",
        "none", "--steps", "1", "--warmup", "0", "--impls", "reference", "kernel", "--output", str(training))
    rows = json.loads(training.read_text())["results"]
    assert [r["ops"] for r in rows] == ["reference", "kernel"] and rows[1]["speedup_vs_reference"] > 0


def test_face_stack_benchmark_times_every_stage(tmp_path):
    output = tmp_path / "faces.json"
    run("faces.py", "--frames", "5", "--size", "64", "--cases", "3", "--output", str(output))
    report = json.loads(output.read_text())
    assert report["frame_size"] == [640, 360] and report["frames_with_face"] >= 1
    assert all(report[k]["iterations"] == 5 for k in ("detector", "tracker_update", "crop", "paste_back"))
    assert report["tracker_side_by_side"]["baseline"]["iterations"] == 5
    stills = report["stills"]
    assert len(stills["current"]["cases"]) == len(stills["baseline"]["cases"]) >= 3
    assert {c["outcome"] for c in stills["current"]["cases"]} <= {"right", "wrong", "missed", "refused"}


def test_roll_tolerance_benchmark_measures_drift_against_roll(tmp_path):
    output = tmp_path / "roll.json"
    run("roll_tolerance.py", "--angles", "30", "--frames", "3", "--output", str(output))
    report = json.loads(output.read_text())
    drift = report["drift_px_by_roll_degrees"]
    assert set(drift) == {"0", "30", "-30"} and drift["0"] == 0 and drift["30"] > 0
    assert report["frame_to_frame_motion_px"] > 0 and report["tolerated_roll_degrees"] in (0, 30)


def test_live_benchmark_reports_latency_percentiles_and_drops(tmp_path):
    output = tmp_path / "live.json"
    run("live.py", "--frames", "4", "--animate-frames", "0", "--output", str(output))
    report = json.loads(output.read_text())
    assert report["live"]["frames_captured"] == 4 and report["input_size"] == [640, 360]
    assert {"p50_ms", "p99_ms"} <= report["live"]["latency"].keys() and report["dtype"] == "float32"


def test_serve_benchmark_runs_both_scheduler_modes(tmp_path):
    output = tmp_path / "serve.json"
    run("serve.py", "--streams", "2", "--seconds", "2", "--output", str(output))
    results = json.loads(output.read_text())["results"]
    assert [(r["mode"], r["streams"], len(r["per_stream"])) for r in results] == \
        [("batched", 2, 2), ("one_at_a_time", 2, 2)]
    assert all(r["total_fps"] > 0 for r in results)


def test_training_loop_compares_persistent_workers(prepared, tmp_path):
    output = tmp_path / "loop.json"
    run("training_loop.py", "--data", str(prepared[0]), "--image-size", "64", "--batch", "2", "--workers", "1",
        "--repeats", "2", "--steps", "3", "--threads", "1", "--output", str(output))
    rows = json.loads(output.read_text())["results"]
    assert [r["persistent_workers"] for r in rows] == [False, True] and all(r["steps_per_s"] > 0 for r in rows)
