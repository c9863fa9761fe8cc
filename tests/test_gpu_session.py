"""The GPU session's rehearsal: benchmarks/gpu_session.sh on this CPU at tiny sizes, with the packages the GPU
machine's image lacks made unimportable, so that a GPU session's minutes go to measurements and not to an
ImportError, a hung step or results the device tool cannot bring back."""
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_session  # noqa: E402

pytestmark = pytest.mark.slow  # rehearses the whole GPU session script

# Not on the GPU machine's image (benchmarks/README.md). The blocker hides them from every finder, so that
# `import av` raises ModuleNotFoundError and importlib.util.find_spec("av") is None, as where they are not installed.
MISSING = ("av", "mediapipe", "tensorrt_rtx", "tensorrt", "aiortc", "pyvirtualcam", "dlib", "playwright",
           "onnxruntime_extensions", "face_recognition_models", "feat", "ray")
BLOCKER = f'''import sys

MISSING = {MISSING!r}


class Without:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in MISSING or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [Without(finder) for finder in sys.meta_path]
'''
# What the device tool brings back from $OUT.
MAX_FILES, MAX_BYTES, NAME = 8, 16 * 2**20, re.compile(r"[A-Za-z0-9._-]+")
# Steps the rehearsal must run, not skip (the build, racecheck and torch.compile are skipped with their reasons).
MUST_RUN = {"environment", "kernels", "tests_cuda", "tests_dispatch", "sanitizer_memcheck", "ops",
            "frame_latency_eager", "training_step"}


def rehearse(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(site),
                                            "TMPDIR": str(tmp_path), "REHEARSAL": "1", **env})


def test_the_blocker_hides_the_missing_packages_like_an_image_without_them(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    probe = ("import importlib.util\nassert importlib.util.find_spec('av') is None\n"
             "try:\n    import mediapipe\nexcept ModuleNotFoundError:\n    print('hidden')\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(site)})
    assert result.stdout.strip() == "hidden", result.stderr


def test_rehearsal_runs_or_skips_every_step_and_leaves_what_the_device_tool_returns(tmp_path):
    out = tmp_path / "out"
    result = rehearse(tmp_path, OUT=str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["logs.tar.gz", "summary.json"]
    assert len(files) <= MAX_FILES
    for path in files:
        parts = path.relative_to(out).parts
        assert len(parts) <= 3 and all(NAME.fullmatch(part) for part in parts), parts
        assert path.stat().st_size <= MAX_BYTES

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"session", "environment", "steps"}
    assert summary["session"]["complete"] and summary["session"]["rehearsal"]
    assert summary["session"]["command"].startswith("REHEARSAL=1 ")
    environment = summary["environment"]
    for key in ("date", "commit", "command", "device", "torch", "torch_cuda", "python", "nvidia_smi"):
        assert key in environment, key
    assert set(environment["packages"]) == set(gpu_session.PACKAGES)

    steps = {step["name"]: step for step in summary["steps"]}
    assert list(steps) == [step.name for step in gpu_session.STEPS]
    for name, step in steps.items():
        assert step["status"] in ("passed", "skipped"), (name, step)
        if step["status"] == "skipped":
            assert step["reason"], name
        else:
            assert step["seconds"] <= step["given_s"] + 5 and step["command"]
    assert {name for name, step in steps.items() if step["status"] == "passed"} == MUST_RUN
    # The numbers are in the summary itself, not only in the archive.
    assert steps["tests_cuda"]["results"]["errors"] == 0
    assert steps["kernels"]["results"]["device"]
    assert any(row["variant"] == "kernel" for row in steps["ops"]["results"]["results"])
    assert steps["frame_latency_eager"]["results"]["runs"][0]["stages"]["end_to_end"]["p50_ms"] > 0
    assert steps["training_step"]["results"]["results"][0]["it_per_s"] > 0

    with tarfile.open(out / "logs.tar.gz") as archive:
        names = archive.getnames()
        logs = {name: archive.extractfile(name).read().decode(errors="replace")
                for name in names if archive.getmember(name).isfile()}
    assert {f"gpu_session/logs/{name}.log" for name in MUST_RUN} <= set(logs)
    for name, text in logs.items():
        assert "ImportError" not in text and "ModuleNotFoundError" not in text, name


def test_a_step_past_the_budget_is_skipped_with_the_reason(tmp_path):
    out = tmp_path / "out"
    result = rehearse(tmp_path, OUT=str(out), BUDGET_S="0")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert all(step["status"] == "skipped" for step in steps)
    assert "time budget spent" in steps[0]["reason"]


def test_without_out_or_with_a_bad_budget_it_stops_and_says_why(tmp_path):
    result = rehearse(tmp_path, OUT="")
    assert result.returncode == 2 and "set OUT" in result.stderr
    result = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
                                 "BUDGET_S": "9 minutes"})
    assert result.returncode == 2 and "BUDGET_S must be a number" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_step_over_its_limit_is_killed_with_its_children_and_recorded_as_timeout(tmp_path):
    for folder in ("logs", "results"):
        (tmp_path / folder).mkdir()
    session = gpu_session.Session(out=tmp_path, work=tmp_path, python=sys.executable, rehearsal=True, budget_s=60)
    hang = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n")
    # 8 s: time for both to start on a loaded machine before the limit
    step = gpu_session.Step("hangs", "a step that never ends", 8, lambda s, output: [sys.executable, "-c", hang])
    record = gpu_session.run_step(step, session, left_s=60)
    assert record["status"] == "timeout" and "killed" in record["reason"] and record["seconds"] < 20
    child = Path(f"/proc/{record['log_tail'][0]}/stat")  # the step's own child went with it

    def gone() -> bool:
        try:
            return child.read_text().split(")")[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 5  # a killed process is gone once the kernel has run its exit
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()
