"""One GPU session that cannot be wasted: the checks and benchmarks in order of value, each under its own time
limit, within one time budget, with everything written to $OUT after every step as two files: summary.json (the
environment, every step's status, duration, command, log tail and numbers) and logs.tar.gz (every log and result).
A step that the budget no longer fits is skipped with the reason, not failed; a run killed midway still leaves the
steps that finished. benchmarks/README.md says how to run it on the GPU machine and commit its results.

    OUT=/path/to/out bash benchmarks/gpu_session.sh                # on the GPU machine, from the repository root
    REHEARSAL=1 OUT=/tmp/out bash benchmarks/gpu_session.sh        # the same steps on the CPU, at tiny sizes

Environment: OUT (required), BUDGET_S (seconds for all steps, default 510), PYTHON (default python3), REHEARSAL=1,
MCNET_RT_COMMIT (the commit, recorded where the tree travels without .git).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 510  # 8.5 minutes: the device tool's 9-minute call with room to pack and return
MIN_STEP_S = 15  # a step given less than this is skipped: it could not finish anything worth having
TAIL_LINES = 25
CUDA_BIN = "/usr/local/cuda/bin"  # where the CUDA toolkit keeps compute-sanitizer when PATH lacks it
SETTINGS = ("REHEARSAL", "BUDGET_S", "MCNET_RT_COMMIT")  # the environment that shapes a run, kept in its command
# Installed packages the summary reports, so a first run says what the image holds (requirements.txt's names).
PACKAGES = ("torch", "triton", "numpy", "av", "pillow", "safetensors", "PyYAML", "tqdm", "scipy", "scikit-image",
            "opencv-python-headless", "mediapipe", "dlib-bin", "onnx", "onnxscript", "onnxruntime",
            "onnxruntime-extensions", "tensorrt-cu13", "tensorrt-rtx-cu13", "cupy-cuda13x", "aiohttp", "aiortc",
            "tensorboard", "pybind11", "ninja", "pytest")


@dataclass
class Session:
    out: Path
    work: Path  # logs/ and results/ here, packed into $OUT/logs.tar.gz after every step
    python: str
    rehearsal: bool
    budget_s: float
    gpu: dict[str, str] = field(default_factory=dict)  # nvidia-smi's answer; empty without a GPU


@dataclass
class Step:
    """`plan(session, output)` gives the command, or a string: the reason the step is skipped. `results` is the
    suffix ("json", or "xml" for pytest's JUnit XML) of the file `output` the command writes, folded into the
    summary; `stdout_results` makes stdout that file."""
    name: str
    what: str
    limit_s: int
    plan: Callable[[Session, Path], list[str] | str]
    env: Callable[[Session], dict[str, str]] = lambda session: {}
    results: str | None = None
    stdout_results: bool = False

    def output(self, s: Session) -> Path:
        return s.work / "results" / f"{self.name}.{self.results or 'out'}"


def plan_build(s: Session, output: Path) -> list[str] | str:
    if s.rehearsal:
        return "rehearsal: uses the native libraries already built in this tree (a rebuild costs minutes on 2 cores)"
    return [s.python, "setup.py", "build_ext", "--inplace"]


def build_env(s: Session) -> dict[str, str]:
    """nvcc required; the architectures are MCNET_RT_CUDA_ARCHS, set for the whole session (a test reads it)."""
    return {"MCNET_RT_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 1)}


def plan_pytest(*selection: str) -> Callable[[Session, Path], list[str]]:
    """pytest with JUnit XML for the counts; the rehearsal only collects (make test runs these tests anyway)."""
    def plan(s: Session, output: Path) -> list[str]:
        command = [s.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", f"--junitxml={output}",
                   *selection]
        return [*command, "--collect-only"] if s.rehearsal else command
    return plan


def plan_sanitizer(tool: str) -> Callable[[Session, Path], list[str] | str]:
    def plan(s: Session, output: Path) -> list[str] | str:
        case = [s.python, "benchmarks/sanitize_case.py", "warp", "modulated_conv", "memory_attention"]
        if s.rehearsal:  # the workload through the CPU twins, once: compute-sanitizer needs a GPU
            return [*case, "--device", "cpu"] if tool == "memcheck" else "rehearsal: memcheck ran this workload"
        sanitizer = shutil.which("compute-sanitizer") or shutil.which("compute-sanitizer", path=CUDA_BIN)
        if sanitizer is None:
            return f"compute-sanitizer is neither on PATH nor in {CUDA_BIN}"
        return [sanitizer, "--tool", tool, "--error-exitcode", "1", *case]
    return plan


def plan_ops(s: Session, output: Path) -> list[str]:
    # The rehearsal times the warps only: the attention at the model's shapes takes seconds a call on the CPU.
    sizes = (["--device", "cpu", "--families", "warp", "--dtypes", "fp32", "--batches", "1", "--warmup", "0",
              "--iterations", "1"] if s.rehearsal else ["--warmup", "10", "--iterations", "50"])
    return [s.python, "benchmarks/ops.py", *sizes, "--output", str(output)]


def plan_frame_latency(backend: str, precisions: tuple[str, ...], impls: tuple[str, ...]):
    """vox-256 at batch 1 and 8 on the GPU; the rehearsal times the small preset, fp32, batch 1, once."""
    def plan(s: Session, output: Path) -> list[str] | str:
        if s.rehearsal:
            if backend == "compiled":
                return "rehearsal: torch.compile of the model costs minutes on 2 cores"
            sizes = ["--device", "cpu", "--preset", "small", "--precisions", "fp32", "--batches", "1",
                     "--impls", "reference", "--warmup", "0", "--iterations", "1"]
        else:
            sizes = ["--preset", "vox-256", "--precisions", *precisions, "--batches", "1", "8", "--impls", *impls,
                     "--warmup", "10", "--iterations", "100"]
        return [s.python, "benchmarks/frame_latency.py", *sizes, "--backend", backend, "--output", str(output)]
    return plan


def plan_training(s: Session, output: Path) -> list[str]:
    sizes = (["--device", "cpu", "--preset", "small", "--image-size", "64", "--batch", "1", "--amp", "none",
              "--impls", "reference", "--steps", "1", "--warmup", "0"] if s.rehearsal
             else ["--preset", "vox-256", "--batch", "8", "--amp", "bf16", "--steps", "10", "--warmup", "2"])
    return [s.python, "benchmarks/training_step.py", *sizes, "--output", str(output)]


# In order of value: what a short session must not miss comes first.
STEPS = [
    Step("environment", "Python, torch, CUDA, GPU and the packages installed", 60,
         lambda s, output: [s.python, "benchmarks/gpu_session.py", "--probe", str(output)], results="json"),
    Step("build", "mcnet_rt._C and mcnet_rt/_ops.so with machine code for this GPU only", 240, plan_build,
         env=build_env),
    Step("kernels", "mcnet-rt info --kernels: the architectures built and what auto runs", 60,
         lambda s, output: [s.python, "-m", "mcnet_rt", "info", "--kernels", "--json"], results="json",
         stdout_results=True),
    Step("tests_cuda", "pytest -m cuda", 180, plan_pytest("-m", "cuda", "tests"), results="xml"),
    Step("tests_dispatch", "the native build, dispatch and ops-library tests", 120,
         plan_pytest("tests/test_native_build.py", "tests/test_dispatch.py", "tests/test_ops_library.py"),
         results="xml"),
    Step("sanitizer_memcheck", "compute-sanitizer memcheck, one small case per op family, every dtype", 120,
         plan_sanitizer("memcheck")),
    Step("sanitizer_racecheck", "compute-sanitizer racecheck, the same cases", 120, plan_sanitizer("racecheck")),
    Step("ops", "op benchmarks: kernel vs released PyTorch path vs native alternative, fp32/fp16/bf16, batch 1 and 8",
         150, plan_ops, results="json"),
    Step("frame_latency_eager", "per-frame step, eager: released fp32 path vs fp16 with the kernels", 150,
         plan_frame_latency("eager", ("fp32", "fp16"), ("reference", "auto")), results="json"),
    Step("frame_latency_compiled", "per-frame step, torch.compile (CUDA graphs) fp16 with the kernels", 200,
         plan_frame_latency("compiled", ("fp16",), ("auto",)), results="json"),
    Step("training_step", "training step, vox-256 batch 8 bf16: reference ops vs kernels", 150, plan_training,
         results="json"),
]


def nvidia_smi() -> dict[str, str]:
    """The first GPU's name, compute capability, driver and memory; empty where no GPU answers."""
    fields = ("name", "compute_cap", "driver_version", "memory.total")
    try:
        answer = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    lines = answer.stdout.strip().splitlines()
    if answer.returncode != 0 or not lines:
        return {}
    return dict(zip(fields, (value.strip() for value in lines[0].split(","))))


def probe(output: Path) -> None:
    """The environment as the benchmarks see it (run as the first step, in its own process: torch is imported
    here only)."""
    from importlib import metadata

    import torch

    from timing import stamp

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    report = {
        **stamp(device),
        "python": sys.version.split()[0],
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "nvcc": shutil.which("nvcc"),
        "compute_sanitizer": shutil.which("compute-sanitizer"),
        "packages": {},
    }
    for name in PACKAGES:
        try:
            report["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            report["packages"][name] = None
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def read_results(path: Path) -> object:
    """The step's numbers: its JSON, or the counts and failures of pytest's JUnit XML; None when it wrote none."""
    if not path.exists():
        return None
    if path.suffix == ".xml":
        try:
            suites = ElementTree.parse(path).getroot()
        except ElementTree.ParseError as error:
            return {"unreadable": str(error)}
        counts = {key: sum(int(suite.get(key, 0)) for suite in suites.iter("testsuite"))
                  for key in ("tests", "failures", "errors", "skipped")}
        failed = [f"{case.get('classname')}::{case.get('name')}: {(problem.get('message') or '')[:300]}"
                  for case in suites.iter("testcase") for problem in case if problem.tag in ("failure", "error")]
        return {**counts, "failed": failed}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return {"unreadable": str(error)}


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def run_step(step: Step, s: Session, left_s: float) -> dict:
    """Run one step under min(its limit, the time left); its whole process group is killed at the limit."""
    record = {"name": step.name, "what": step.what, "limit_s": step.limit_s}
    output = step.output(s)
    planned = step.plan(s, output)
    if isinstance(planned, str):
        return {**record, "status": "skipped", "reason": planned}
    if left_s < MIN_STEP_S:
        return {**record, "status": "skipped",
                "reason": f"time budget spent: {left_s:.0f} s left of BUDGET_S={s.budget_s:.0f}"}
    limit = min(step.limit_s, left_s)
    log = s.work / "logs" / f"{step.name}.log"
    extra_env = step.env(s)
    record.update(command=shlex.join(planned), env=extra_env, given_s=round(limit), log=f"logs/{log.name}")
    started = time.monotonic()
    with open(log, "w") as log_file:
        stdout = open(output, "w") if step.stdout_results else log_file
        with stdout:
            try:  # its own process group (killed whole at the limit), in the caller's session
                process = subprocess.Popen(planned, cwd=ROOT, env={**os.environ, **extra_env}, stdout=stdout,
                                           stderr=log_file, stdin=subprocess.DEVNULL, process_group=0)
            except OSError as error:
                process = None
                record.update(status="failed", reason=f"cannot start: {error}")
            try:
                if process is not None:
                    process.wait(timeout=limit)
                    record.update(status="passed" if process.returncode == 0 else "failed",
                                  returncode=process.returncode)
            except subprocess.TimeoutExpired:
                record.update(status="timeout", reason=f"still running after {limit:.0f} s: killed")
            finally:  # also when this process is stopped itself (SIGTERM): no step outlives the session
                if process is not None and process.poll() is None:
                    stop(process)
    record["seconds"] = round(time.monotonic() - started, 1)
    record["log_tail"] = tail(log)
    if step.results:
        record["results"] = read_results(output)
    return record


def stop(process: subprocess.Popen) -> None:
    """End the step's process group: SIGTERM, then SIGKILL after 5 s; what of the group outlives its leader (a
    child that was still starting, or one that ignores SIGTERM) is killed with it."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def write_out(summary: dict, s: Session) -> None:
    """summary.json and logs.tar.gz in $OUT, each replaced whole (a run killed while writing keeps the last)."""
    text = json.dumps(summary, indent=2) + "\n"
    (s.work / "summary.json").write_text(text)
    staged = s.out / "logs.tar.gz.part"
    with tarfile.open(staged, "w:gz") as archive:
        archive.add(s.work, arcname="gpu_session")
    os.replace(staged, s.out / "logs.tar.gz")
    staged = s.out / "summary.json.part"
    staged.write_text(text)
    os.replace(staged, s.out / "summary.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", type=Path, metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return 0
    if not os.environ.get("OUT"):
        print("gpu_session: set OUT to the folder that receives summary.json and logs.tar.gz", file=sys.stderr)
        return 2
    try:
        budget_s = float(os.environ.get("BUDGET_S", BUDGET_S))
    except ValueError:
        print(f"gpu_session: BUDGET_S must be a number of seconds, got {os.environ['BUDGET_S']!r}", file=sys.stderr)
        return 2
    out = Path(os.environ["OUT"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mcnet_rt_gpu_session_{os.getpid()}"
    for folder in ("logs", "results"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    session = Session(out=out, work=work, python=os.environ.get("PYTHON", "python3"),
                      rehearsal=os.environ.get("REHEARSAL", "0") == "1",
                      budget_s=budget_s, gpu=nvidia_smi())
    # The benchmarks import `timing` from benchmarks/; anything already on PYTHONPATH stays behind them.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "benchmarks"),
                                                             os.environ.get("PYTHONPATH")]))
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ["MCNET_RT_DISPATCH_CACHE"] = str(work / "results" / "dispatch.json")
    if session.gpu.get("compute_cap"):  # machine code for this GPU only: csrc/build.json's list costs minutes
        os.environ.setdefault("MCNET_RT_CUDA_ARCHS", session.gpu["compute_cap"].replace(".", ""))
    summary = {
        "session": {"command": " ".join([*(f"{name}={shlex.quote(os.environ[name])}" for name in SETTINGS
                                              if name in os.environ), shlex.join([session.python, *sys.argv])]),
                    "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "rehearsal": session.rehearsal, "budget_s": session.budget_s,
                    "cuda_archs": os.environ.get("MCNET_RT_CUDA_ARCHS"), "complete": False},
        "environment": {"nvidia_smi": session.gpu or None},
        "steps": [],
    }
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # ends the running step too
    start = time.monotonic()
    for step in STEPS:
        summary["steps"].append({"name": step.name, "what": step.what, "status": "running"})
        write_out(summary, session)  # a run killed here shows which step it was in
        record = run_step(step, session, session.budget_s - (time.monotonic() - start))
        summary["steps"][-1] = record
        if step.name == "environment" and isinstance(record.get("results"), dict):
            summary["environment"].update(record.pop("results"), command=summary["session"]["command"])
        summary["session"]["elapsed_s"] = round(time.monotonic() - start, 1)
        write_out(summary, session)
        print(f"{step.name:24s} {record['status']:8s} {record.get('seconds', 0):6.1f} s  "
              f"{record.get('reason', '')}", flush=True)
    summary["session"]["complete"] = True
    write_out(summary, session)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(step["status"] in ("passed", "skipped") for step in summary["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
