"""`mcnet-rt` end to end on real face media from installed packages, and its answers to bad input."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", exc_type=ImportError)  # absent from some GPU images; the tests here read and write real video

import mcnet_rt
from mcnet_rt.cli import main
from mcnet_rt.errors import InputError
from mcnet_rt.pipeline.session import Session


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mcnet_rt", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video))
        c.seek(0)
        audio = sum(1 for _ in c.decode(audio=0)) if c.streams.audio else 0
        return {"frames": frames, "width": video.codec_context.width, "height": video.codec_context.height,
                "fps": video.average_rate, "audio_frames": audio}


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    mcnet_rt.save(mcnet_rt.build_model("small"), path)
    return path


@pytest.mark.slow
def test_animate_real_video_keeps_frames_and_audio(tmp_path, feat_data, small_checkpoint):
    out = tmp_path / "result.mp4"
    result = run("animate", "--checkpoint", small_checkpoint, "--source", feat_data / "single_face.jpg",
                 "--driving", feat_data / "single_face.mp4", "-o", out, "--batch-size", "5")
    assert result.returncode == 0, result.stderr
    info = streams(out)
    assert info["frames"] == 72 and info["fps"] == 30
    assert (info["width"], info["height"]) == (128, 128)
    assert info["audio_frames"] > 0
    assert "wrote" in result.stdout


@pytest.mark.slow
def test_animate_panels_absolute_mode_and_untrained_label(tmp_path, feat_data):
    out = tmp_path / "panels.mp4"
    result = run("animate", "--untrained", "small", "--source", feat_data / "single_face.jpg",
                 "--driving", feat_data / "single_face.mp4", "-o", out, "--panels", "--mode", "absolute")
    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" in result.stderr
    info = streams(out)
    # source (572×562) | driving (640×360) | result (128²), each at the result's height
    assert (info["width"], info["height"], info["frames"]) == (130 + 228 + 128, 128, 72)
    with av.open(str(out)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    # The label band is burned into the top of every frame: black with red text.
    band = first[:8]
    assert band.mean() < 40 and (band[..., 0].astype(int) - band[..., 1]).max() > 80


def test_animate_without_weights_says_where_to_get_them(tmp_path, feat_data):
    out = tmp_path / "x.mp4"
    result = run("animate", "--source", feat_data / "single_face.jpg", "--driving", feat_data / "single_face.mp4",
                 "-o", out)
    assert result.returncode == 2
    assert "no checkpoint given" in result.stderr and "harlanhong/ICCV2023-MCNET" in result.stderr
    assert not out.exists()


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("mcnet-rt: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_source", "grayscale_source", "rgba_source", "sixteen_bit_source",
                                  "corrupt_video", "image_as_video", "missing_video", "no_frames_video",
                                  "corrupt_checkpoint", "bad_output_folder"])
def test_bad_input_gets_one_clear_error_and_no_output(case, tmp_path, feat_data, small_checkpoint):
    source, driving, checkpoint = feat_data / "single_face.jpg", feat_data / "single_face.mp4", small_checkpoint
    out = tmp_path / "out.mp4"
    expected = {
        "missing_source": "not found", "grayscale_source": "grayscale", "rgba_source": "transparent",
        "sixteen_bit_source": "16-bit", "corrupt_video": "not a readable video", "image_as_video": "still image, not a video",
        "missing_video": "not found", "no_frames_video": "no video", "corrupt_checkpoint": "corrupt or truncated",
        "bad_output_folder": "folder",
    }[case]
    if case == "missing_source":
        source = tmp_path / "nobody.png"
    elif case == "grayscale_source":
        source = tmp_path / "gray.png"
        Image.open(feat_data / "single_face.jpg").convert("L").save(source)
    elif case == "rgba_source":
        source = tmp_path / "alpha.png"
        rgba = Image.open(feat_data / "single_face.jpg").convert("RGBA")
        rgba.putpixel((0, 0), (0, 0, 0, 0))
        rgba.save(source)
    elif case == "sixteen_bit_source":
        source = tmp_path / "deep.png"
        Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(source)
    elif case == "corrupt_video":
        driving = tmp_path / "broken.mp4"
        driving.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif case == "image_as_video":
        driving = feat_data / "single_face.jpg"
    elif case == "missing_video":
        driving = tmp_path / "gone.mp4"
    elif case == "no_frames_video":
        driving = tmp_path / "silent.m4a"
        with av.open(str(driving), "w") as c:
            stream = c.add_stream("aac", rate=44100)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            c.mux(stream.encode(frame))
            c.mux(stream.encode(None))
    elif case == "corrupt_checkpoint":
        checkpoint = tmp_path / "bad.safetensors"
        checkpoint.write_bytes(small_checkpoint.read_bytes()[:5000])
    elif case == "bad_output_folder":
        out = tmp_path / "no" / "such" / "folder" / "out.mp4"
    before = set(tmp_path.rglob("*"))
    result = run("animate", "--checkpoint", checkpoint, "--source", source, "--driving", driving, "-o", out)
    line = one_error_line(result)
    assert expected in line
    assert set(tmp_path.rglob("*")) == before  # no output, no temporary left behind


@pytest.mark.slow
def test_info_reports_parameters_and_gflops(small_checkpoint):
    result = run("info", small_checkpoint)
    assert result.returncode == 0, result.stderr
    assert "per frame (source cached)" in result.stdout and "memory_unit.iicm" in result.stdout
    result = run("info", "--preset", "vox-256", "--json")
    assert '"generator (uncached)": 392.55' in result.stdout


def test_convert_rejects_unknown_output_format(tmp_path, small_checkpoint):
    out = tmp_path / "model.onnx"
    line = one_error_line(run("convert", small_checkpoint, out))
    assert "cannot write this file type" in line and not out.exists()


def test_animate_live_and_serve_take_the_same_face_options():
    from mcnet_rt.cli import build_parser

    parser = build_parser()
    required = {"animate": ["--source", "s.jpg", "--driving", "d.mp4", "-o", "o.mp4"], "live": ["--source", "s.jpg"],
                "serve": []}
    for command, rest in required.items():
        defaults = parser.parse_args([command, *rest])
        assert (defaults.face, defaults.align) == ("largest", "roll"), command
        chosen = parser.parse_args([command, *rest, "--face", "2", "--align", "none"])
        assert (chosen.face, chosen.align) == ("2", "none"), command


@pytest.mark.parametrize("command", ["live", "animate"])
def test_detect_every_reaches_the_face_tracker_and_a_bad_value_is_refused(command, feat_data, tmp_path, monkeypatch,
                                                                           capsys):
    clip = str(feat_data / "single_face.mp4")
    args = {"live": ["live", "--input", clip, "--output", "null", "--no-pace", "--no-cache"],
            "animate": ["animate", "--driving", clip, "-o", str(tmp_path / "out.mp4"), "--quiet"]}[command]
    args += ["--source", str(feat_data / "single_face.jpg"), "--untrained", "small", "--max-frames", "1"]
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(SystemExit) as refused:
            main([*args, "--detect-every", bad])
        assert refused.value.code == 2
        assert f"--detect-every: expected a whole number of frames, at least 1, got '{bad}'" in capsys.readouterr().err
    sessions, init = [], Session.__init__
    monkeypatch.setattr(Session, "__init__", lambda self, *a, **kw: init(self, *a, **kw) or sessions.append(self))
    assert main([*args, "--detect-every", "3"]) == 0
    assert [(s.options.detect_every, s.tracker.detect_every) for s in sessions] == [(3, 3)]


def test_a_library_error_gets_the_flags_of_the_settings_it_names(monkeypatch, capsys):
    """Library messages name settings by their Python names; `main` adds the command line's spelling once."""
    from mcnet_rt.cli import info

    def refuse(message, options):
        def raise_it(args):
            raise InputError(message, options=options)
        return raise_it

    monkeypatch.setattr(info, "run", refuse('crop="centre" needs a square', ("crop", "best_frame")))
    assert main(["info"]) == 2
    assert capsys.readouterr().err == 'mcnet-rt: error: crop="centre" needs a square (see --crop, --best-frame)\n'
    monkeypatch.setattr(info, "run", refuse("no such file", ()))
    assert main(["info"]) == 2
    assert capsys.readouterr().err == "mcnet-rt: error: no such file\n"
