"""Every class of hostile input from the reliability trial (shared/reference/reviews/hostile_inputs.md), run through
the CLI: refused with exit 2 and one line naming the file and the problem, no traceback, nothing left in the
output folder, inputs untouched; or, where the input is legitimate, handled correctly."""
import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

av = pytest.importorskip("av", exc_type=ImportError)  # absent from some GPU images; the tests here read and write real video

import mcnet_rt
from mcnet_rt import checkpoint
from mcnet_rt.io.overlay import burn_label
from mcnet_rt.cli import main
from mcnet_rt.evaluation.protocols import read_pairs
from support.media_fixtures import latin1_title_video, undecodable_audio_video, write_image, write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    write_image(folder / "face.png")
    write_video(folder / "drive.mp4", frames=6, audio="aac")
    return folder


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    torch.manual_seed(0)
    mcnet_rt.save(mcnet_rt.build_model("small"), path)
    return path


def checksums(paths) -> dict:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if Path(p).is_file()}


def cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(argv, capsys, out_dir: Path, names: str, problem: str, inputs=()) -> str:
    """Run the CLI and check the refusal contract; returns the error line."""
    before, sums = sorted(out_dir.iterdir()), checksums(inputs)
    code, _, err = cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.startswith("mcnet-rt: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert names in lines[0] and problem in lines[0], lines[0]
    assert sorted(out_dir.iterdir()) == before, "something was left in the output folder"
    assert checksums(inputs) == sums, "an input was changed"
    return lines[0]


def animate_args(media, out, *extra, driving=None, source=None):
    # The synthetic media show no face: the centre crop, not the face search, is what these tests exercise.
    return ["animate", "--untrained", "small", "--quiet", "--crop", "centre", "--source",
            source or media / "face.png", "--driving", driving or media / "drive.mp4", "-o", out, *extra]


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [round(float(f.time), 3) for f in c.decode(video=0)]


# --- 1. data loss: outputs that are inputs, existing outputs -------------------------------------------------

@pytest.mark.parametrize("which", ["driving", "source"])
def test_output_that_is_an_input_is_refused(which, media, capsys):
    target = media / ("drive.mp4" if which == "driving" else "face.png")
    inputs = [media / "face.png", media / "drive.mp4"]
    refused(animate_args(media, target), capsys, media, str(target), "is an input of this run", inputs)


def test_existing_output_needs_overwrite(tmp_path, media, capsys):
    out = tmp_path / "old.mp4"
    out.write_bytes(b"earlier result")
    refused(animate_args(media, out), capsys, tmp_path, str(out), "already exists; set overwrite to replace it (see --overwrite)", [out])
    code, stdout, _ = cli(animate_args(media, out, "--overwrite"), capsys)
    assert code == 0 and "wrote" in stdout and len(frame_times(out)) == 6


def test_convert_refuses_its_input_as_output(small_file, capsys):
    refused(["convert", small_file, small_file], capsys, small_file.parent, str(small_file), "is an input",
            [small_file])


# --- 2. weights that run but give black frames ------------------------------------------------------------

def _tensors_and_meta(path: Path):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize(("change", "problem"), [
    ("nan", "holds NaN or infinite values"), ("inf", "holds NaN or infinite values"),
    ("int64", "is int64; model weights must be floating point"), ("bool", "is bool; model weights must be")])
def test_broken_weights_are_refused_naming_the_tensor(change, problem, tmp_path, small_file, media, capsys):
    tensors, meta = _tensors_and_meta(small_file)
    name = "generator.final.weight" if "generator.final.weight" in tensors else sorted(tensors)[-1]
    if change in ("nan", "inf"):
        tensors[name] = tensors[name].clone().fill_(float(change))
    else:
        tensors = {k: v.to(getattr(torch, change)) for k, v in tensors.items()}
    bad = tmp_path / f"{change}.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    line = refused(["animate", "--checkpoint", bad, "--source", media / "face.png", "--driving",
                    media / "drive.mp4", "-o", out_dir / "x.mp4", "--quiet"], capsys, out_dir, str(bad), problem,
                   [bad])
    assert "weight " in line


# --- 3. variable frame rate; 7. odd metadata and audio ------------------------------------------------------

def test_variable_frame_rate_keeps_timestamps(tmp_path, media, capsys):
    driving = write_video(tmp_path / "vfr.mp4", gaps_ms=[10, 40, 200] * 3, audio="aac")
    out = tmp_path / "out.mp4"
    assert cli(animate_args(media, out, driving=driving), capsys)[0] == 0
    assert frame_times(out) == frame_times(driving) == [0.0, 0.01, 0.05, 0.25, 0.26, 0.3, 0.5, 0.51, 0.55]


def test_latin1_metadata_is_read(tmp_path, media, capsys):
    driving = latin1_title_video(tmp_path / "latin1.mp4")
    assert cli(animate_args(media, tmp_path / "out.mp4", driving=driving), capsys)[0] == 0


def test_undecodable_audio_is_dropped_with_a_note(tmp_path, media, capsys):
    driving = undecodable_audio_video(tmp_path / "zzzz.mov")
    out = tmp_path / "out.mp4"
    code, _, err = cli(animate_args(media, out, driving=driving), capsys)
    assert code == 0 and "audio codec cannot be decoded; the output has no sound" in err
    with av.open(str(out)) as c:
        assert not c.streams.audio and c.streams.video[0].frames == 6


def test_8bit_mono_11khz_audio_is_resampled_for_aac(tmp_path, media, capsys):
    driving = write_video(tmp_path / "webcam.avi", audio="pcm_u8", audio_rate=11024)
    out = tmp_path / "out.mp4"
    assert cli(animate_args(media, out, driving=driving), capsys)[0] == 0
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        assert (audio.codec_context.name, audio.rate) == ("aac", 11025)
        assert sum(f.samples for f in c.decode(audio)) > 0


# --- 5. convert keeps the configuration; 11. file mode, interrupted convert --------------------------------

def test_convert_small_to_official_layout_round_trips(tmp_path, small_file, capsys):
    official = tmp_path / "small.pth.tar"
    assert cli(["convert", small_file, official], capsys)[0] == 0
    model, original = mcnet_rt.load(official), mcnet_rt.load(small_file)
    assert model.config == original.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values()))
    back = tmp_path / "back.safetensors"
    old_umask = os.umask(0o022)
    try:
        assert cli(["convert", official, back], capsys)[0] == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(back.stat().st_mode) == 0o644


def test_interrupted_convert_keeps_nothing_or_reports_success(tmp_path, small_file, capsys, monkeypatch):
    """Ctrl-C before the output is complete: exit 130, nothing written. After it was committed: exit 0."""
    real_save = checkpoint.save

    def interrupted_while_writing(model, path):
        with mcnet_rt.io.atomic.atomic_output(path) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt

    def interrupted_after_commit(model, path):
        real_save(model, path)
        raise KeyboardInterrupt

    out = tmp_path / "out.safetensors"
    monkeypatch.setattr(checkpoint, "save", interrupted_while_writing)
    code, _, err = cli(["convert", small_file, out], capsys)
    assert code == 130 and "interrupted" in err and sorted(tmp_path.iterdir()) == []
    monkeypatch.setattr(checkpoint, "save", interrupted_after_commit)
    code, _, err = cli(["convert", small_file, out], capsys)
    assert code == 0 and "it is kept" in err and mcnet_rt.load(out).config == mcnet_rt.load(small_file).config


# --- 6. the output stage --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["out.gif", "out.webm", "out.png", "out.jpg", "a" * 252 + ".mp4", "out"])
def test_unusable_output_names_are_refused_before_model_work(name, tmp_path, media, capsys):
    problem = "file name too long" if len(name) > 200 else "cannot write this file type"
    refused(animate_args(media, tmp_path / name), capsys, tmp_path, str(tmp_path), problem)


def test_longest_valid_name_works(tmp_path, media, capsys):
    out = tmp_path / ("a" * 251 + ".mp4")  # 255 bytes: the temporary name must fit too
    assert cli(animate_args(media, out, "--max-frames", "2"), capsys)[0] == 0 and out.is_file()


def test_output_folder_problems(tmp_path, media, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    refused(animate_args(media, a_file / "out.mp4"), capsys, tmp_path, "afile", "is a file, not a folder")
    refused(animate_args(media, tmp_path / "none" / "out.mp4"), capsys, tmp_path, "none",
            "output directory does not exist")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no write can go to: chmod for a normal user; root ignores modes, so a read-only tmpfs then."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("root without mount: cannot make a read-only folder")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_read_only_folder_is_refused_before_model_work(read_only_folder, media, small_file, capsys):
    out = read_only_folder / "out.mp4"
    refused(animate_args(media, out), capsys, read_only_folder, str(out), "cannot write in")
    refused(["convert", small_file, read_only_folder / "x.pth.tar"], capsys, read_only_folder, "x.pth.tar",
            "cannot write in")


@pytest.fixture
def full_folder(tmp_path):
    """A folder on a 200 kB file system (root can mount one; others skip): a full disk before the run starts."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs",
                                             str(folder)]).returncode != 0:
        pytest.skip("needs root with mount to make a small file system")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_is_refused_before_model_work(full_folder, media, capsys):
    out = full_folder / "out.mp4"
    refused(animate_args(media, out), capsys, full_folder, str(out), "no space left")


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes beyond `limit` bytes fail with EFBIG, as on a full disk (the signal that would kill us is ignored)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_write_failure_during_the_run_is_one_line(tmp_path, media, small_file, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with file_size_limit(3000):
        refused(animate_args(media, out_dir / "out.mp4"), capsys, out_dir, "out.mp4", "cannot write the output")
        for name in ("x.safetensors", "x.pth.tar"):
            refused(["convert", small_file, out_dir / name], capsys, out_dir, name, "cannot write the output")


# --- 8. malformed checkpoint contents ---------------------------------------------------------------------

def _official_small():
    torch.manual_seed(0)
    return checkpoint.official_state(mcnet_rt.build_model("small"))


@pytest.mark.parametrize(("case", "problem"), [
    ("kp_list", "'kp_detector' is a list, expected a dictionary"),
    ("int_keys", "'generator' holds 3: Tensor; expected weight names"),
    ("non_tensor", "'kp_detector' holds 'module.kp.weight': int; expected weight names"),
    ("zip_named_safetensors", "corrupt or truncated checkpoint"),
    ("huge_config", "generator.block_expansion = 1048576, expected an integer from 1 to 512"),
    ("text_config", "num_kp = 'fifteen', expected an integer"),
])
def test_malformed_checkpoints(case, problem, tmp_path, small_file, capsys):
    path = tmp_path / "bad.pth.tar"
    if case in ("kp_list", "int_keys", "non_tensor"):
        state = _official_small()
        if case == "kp_list":
            state["kp_detector"] = list(state["kp_detector"].values())
        elif case == "int_keys":
            state["generator"][3] = torch.zeros(1)
        else:
            state["kp_detector"]["module.kp.weight"] = 3
        torch.save(state, path)
    elif case == "zip_named_safetensors":
        path = tmp_path / "bad.safetensors"
        path.write_bytes(b"PK\x03\x04" + bytes(200))
    else:
        tensors, meta = _tensors_and_meta(small_file)
        config = json.loads(meta["config"])
        if case == "huge_config":
            config["generator"]["block_expansion"] = 2 ** 20
        else:
            config["num_kp"] = "fifteen"
        path = tmp_path / "bad.safetensors"
        save_file(tensors, str(path), metadata={**meta, "config": json.dumps(config)})
    refused(["info", path], capsys, tmp_path, str(path), problem, [path])


def test_torch_file_named_safetensors_loads(tmp_path):
    """torch.load hands *.safetensors paths to safetensors; our loader reads the content, whatever the name."""
    path = tmp_path / "official.safetensors"
    torch.manual_seed(0)
    mcnet_rt.save_official(mcnet_rt.build_model("small"), path)
    assert mcnet_rt.load(path).config == mcnet_rt.preset("small")


# --- 9. devices; 11. inputs that are not regular files, float TIFF, BOM CSV -----------------------------------

@pytest.mark.parametrize("device", ["foo", "CPU", "meta", "mps"])
def test_unknown_device(device, tmp_path, media, capsys):
    refused(animate_args(media, tmp_path / "o.mp4", "--device", device), capsys, tmp_path, f"--device {device}",
            "use auto, cpu, cuda or cuda:N")


@pytest.fixture
def odd_inputs(tmp_path) -> dict:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    return {"folder": (folder, "is a folder"), "fifo": (fifo, "is a FIFO"), "device": (Path("/dev/zero"), "is a device")}


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
@pytest.mark.parametrize("role", ["source", "driving"])
def test_inputs_that_are_not_files(kind, role, odd_inputs, tmp_path, media, capsys):
    path, problem = odd_inputs[kind]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = animate_args(media, out_dir / "o.mp4", **{role: path})
    refused(args, capsys, out_dir, str(path), problem)


def test_float_tiff_says_what_it_is(tmp_path, media, capsys):
    source = tmp_path / "float.tif"
    Image.fromarray(np.full((64, 64), 0.5, np.float32)).save(source)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    refused(animate_args(media, out_dir / "o.mp4", source=source), capsys, out_dir, str(source),
            "32-bit floating-point images are not supported")


def test_csv_with_utf8_bom_is_read(tmp_path, media):
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(f"\ufeffsource_frame,driving_video\n{media / 'face.png'},{media / 'drive.mp4'}\n".encode())
    kind, pairs = read_pairs(csv)
    assert kind == "video" and pairs[0].driving == media / "drive.mp4"


# --- 10. SIGTERM / SIGHUP leave nothing ------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_termination_signals_leave_no_temporary(sig, tmp_path, media):
    driving = write_video(tmp_path / "long.mp4", frames=400)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "mcnet_rt", *map(str, animate_args(
        media, out_dir / "o.mp4", "--batch-size", "1", driving=driving))], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(out_dir.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the temporary output appears once the model runs
    assert process.poll() is None, process.stderr.read()
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + sig and "mcnet-rt: interrupted" in err and "Traceback" not in err, err
    assert list(out_dir.iterdir()) == []


# --- 12. new-user friction ---------------------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and mcnet_rt.__version__ in capsys.readouterr().out


def test_convert_and_info_arguments_are_described(capsys):
    for command in ("convert", "info"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "official .pth.tar or mcnet_rt .safetensors" in text


@pytest.mark.parametrize(("option", "frames"), [(["--max-frames", "3"], 3), (["--max-seconds", "0.1"], 3)])
def test_frame_and_time_limits(option, frames, tmp_path, media, capsys):
    out = tmp_path / "o.mp4"
    assert cli(animate_args(media, out, *option), capsys)[0] == 0
    assert len(frame_times(out)) == frames


@pytest.mark.parametrize("option", [["--max-frames", "0"], ["--max-seconds", "nan"], ["--max-seconds", "-1"]])
def test_bad_limits(option, tmp_path, media, capsys):
    refused(animate_args(media, tmp_path / "o.mp4", *option), capsys, tmp_path, option[0], "")


def test_huge_batch_warns_and_progress_moves_per_frame(tmp_path, media, capsys):
    args = [a for a in animate_args(media, tmp_path / "o.mp4", "--batch-size", "100") if a != "--quiet"]
    code, _, err = cli(args, capsys)
    assert code == 0 and "--batch-size 100: memory grows" in err
    # One batch holds all 6 frames, yet the bar counts them one by one; the crop note comes before the bar.
    assert "| 1/6" in err, err
    assert err.index("resized 64×64 to 128×128 (every frame)") < err.index("animate:")


def test_untrained_label_fits_at_128_pixels():
    frame = burn_label(np.full((128, 128, 3), 200, np.uint8), "UNTRAINED WEIGHTS - NOT A RESULT")
    red = (frame[..., 0] > 150) & (frame[..., 1] < 120)
    rows = np.flatnonzero(red.any(axis=1))
    assert rows.max() - rows.min() > 12  # two lines of text, so nothing is cut off at the right edge
    assert not red[:, -3:].any()
