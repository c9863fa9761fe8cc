import random
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", exc_type=ImportError)  # absent from some GPU images; the tests here read and write real video

from mcnet_rt.errors import InputError
from mcnet_rt.io.atomic import atomic_output
from mcnet_rt.io.capture import CameraCapture
from mcnet_rt.io.image import fit_square, read_image
from mcnet_rt.io.sinks import VirtualCameraSink
from mcnet_rt.io.video import VideoInfo, VideoWriter, probe_video, read_frames


def _save(tmp_path: Path, name: str, image: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


# --- atomic_output ---------------------------------------------------------------------------------


def test_atomic_output_renames_on_success_and_keeps_suffix(tmp_path):
    target = tmp_path / "out.mp4"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".")
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_atomic_output_removes_temporary_on_error(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_atomic_output_rejects_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match=f"^{re.escape(str(missing))}: output directory does not exist"):
        with atomic_output(missing / "out.png"):
            pass


# --- read_image ------------------------------------------------------------------------------------


class ClosedCamera:
    """A camera device that cannot be opened (stands in for cv2.VideoCapture of a missing /dev/videoN)."""

    def __init__(self, index):
        pass

    def isOpened(self):
        return False

    def release(self):
        pass


def no_virtual_camera(**settings):
    raise RuntimeError("no v4l2 loopback device found\nmore detail")


@pytest.mark.parametrize("open_device, options", [
    (lambda: CameraCapture(7, open_camera=ClosedCamera), ("camera", "input")),
    (lambda: VirtualCameraSink(64, 48, 30, open_camera=no_virtual_camera), ("output",)),
])
def test_unusable_devices_name_the_settings_that_fix_them_not_flags(open_device, options):
    with pytest.raises(InputError) as refused:
        open_device()
    assert refused.value.options == options and "--" not in str(refused.value)


def test_read_image_jpeg(feat_data):
    path = feat_data / "single_face.jpg"
    image = read_image(path)
    assert image.shape == (562, 572, 3) and image.dtype == np.uint8
    with Image.open(path) as reference:
        np.testing.assert_array_equal(image, np.asarray(reference.convert("RGB")))


def test_read_image_accepts_opaque_rgba_file(feat_data):
    image = read_image(feat_data / "Image_with_alpha.png")
    assert image.shape == (1036, 1524, 3) and image.dtype == np.uint8


def test_read_image_rejects_grayscale_file(feat_data):
    path = feat_data / "BWPictureHuman.jpg"
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: is a grayscale image"):
        read_image(path)


@pytest.mark.parametrize(
    ("mode", "pixel", "message"),
    [
        ("L", 128, "grayscale"),
        ("1", 1, "grayscale"),
        ("I;16", 40000, "16-bit images are not supported, convert to 8-bit RGB"),
        ("RGBA", (10, 20, 30, 0), "has transparent pixels; flatten it onto a background first"),
        ("LA", (10, 128), "grayscale"),
    ],
)
def test_read_image_rejects_unusable_modes(tmp_path, mode, pixel, message):
    image = Image.new(mode, (64, 48), pixel)
    path = _save(tmp_path, "bad.png", image)
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: .*{message}"):
        read_image(path)


def test_read_image_rejects_single_transparent_pixel(tmp_path):
    image = Image.new("RGBA", (64, 48), (10, 20, 30, 255))
    image.putpixel((5, 5), (10, 20, 30, 254))
    path = _save(tmp_path, "almost.png", image)
    with pytest.raises(InputError, match="transparent pixels"):
        read_image(path)


def test_read_image_rejects_palette_with_transparent_entry(tmp_path):
    image = Image.new("P", (64, 48), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    path = _save(tmp_path, "palette.png", image, transparency=1)
    with pytest.raises(InputError, match="transparent pixels"):
        read_image(path)


@pytest.mark.parametrize(
    ("image", "name", "expected"),
    [
        (Image.new("RGBA", (64, 48), (10, 20, 30, 255)), "opaque.png", (10, 20, 30)),
        (Image.new("P", (64, 48), 1), "palette.png", (0, 255, 0)),
        (Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "cmyk.jpg", (255, 0, 0)),
    ],
)
def test_read_image_converts_colour_modes(tmp_path, image, name, expected):
    if image.mode == "P":
        image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    rgb = read_image(_save(tmp_path, name, image))
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), expected, atol=3)


def test_read_image_applies_exif_orientation(tmp_path):
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 40))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; a viewer rotates it 90° clockwise
    rgb = read_image(_save(tmp_path, "turned.jpg", image, exif=exif, quality=95))
    assert rgb.shape == (80, 40, 3)
    assert rgb[:8, :, 0].mean() > 200 and rgb[-8:, :, 0].mean() < 50  # left stripe is now on top


def test_read_image_rejects_tiny_image(tmp_path):
    path = _save(tmp_path, "tiny.png", Image.new("RGB", (40, 20), (1, 2, 3)))
    with pytest.raises(InputError, match=r"is 40×20; at least 32×32"):
        read_image(path)


def test_read_image_rejects_truncated_jpeg(tmp_path, feat_data):
    data = (feat_data / "single_face.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: not a readable image"):
        read_image(path)


def test_read_image_rejects_text_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: not a readable image"):
        read_image(path)


def test_read_image_rejects_missing_file(tmp_path):
    path = tmp_path / "missing.jpg"
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: file not found"):
        read_image(path)


# --- fit_square -----------------------------------------------------------------------------------


def test_fit_square_crops_centre_and_shrinks():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, 140:500] = (0, 0, 255)  # the centre 360 columns are blue, the sides black
    square, note = fit_square(frame, 256)
    assert square.shape == (256, 256, 3) and square.dtype == np.uint8
    assert note == "cropped the centre 360×360 of 640×360 and resized to 256×256"
    assert (square == (0, 0, 255)).all()


def test_fit_square_enlarges_square_input():
    frame = np.full((128, 128, 3), 77, np.uint8)
    square, note = fit_square(frame, 256)
    assert note == "resized 128×128 to 256×256"
    assert (square == 77).all()


def test_fit_square_crop_only():
    square, note = fit_square(np.zeros((300, 256, 3), np.uint8), 256)
    assert square.shape == (256, 256, 3) and note == "cropped the centre 256×256 of 256×300"


def test_fit_square_identity():
    frame = np.ones((256, 256, 3), np.uint8)
    square, note = fit_square(frame, 256)
    assert square is frame and note is None


# --- probe_video, read_frames ----------------------------------------------------------------------


def test_probe_video(feat_data):
    info = probe_video(feat_data / "single_face.mp4")
    assert info == VideoInfo(width=640, height=360, fps=Fraction(30), num_frames=72, has_audio=True,
                             time_base=Fraction(1, 15360))


def test_probe_video_without_audio(carphone):
    info = probe_video(carphone)
    assert info == VideoInfo(176, 144, Fraction(30000, 1001), 120, False, Fraction(1, 30000))


def test_read_frames_yields_every_frame(feat_data):
    frames = list(read_frames(feat_data / "single_face.mp4"))
    assert len(frames) == 72
    assert all(f.shape == (360, 640, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[-1])


def test_read_frames_applies_rotation(tmp_path):
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise, as FFmpeg's display matrix counts
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:, :8] = (255, 0, 0)  # red stripe on the left
        for i in range(3):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    assert (probe_video(path).width, probe_video(path).height) == (32, 64)
    frames = list(read_frames(path))
    assert len(frames) == 3 and frames[0].shape == (64, 32, 3)
    bottom, rest = frames[0][-6:].reshape(-1, 3).mean(axis=0), frames[0][:40].mean()
    assert bottom[0] > 200 and bottom[1:].max() < 60 and rest < 30  # the red stripe is now at the bottom


@pytest.mark.parametrize(
    ("name", "message"),
    [("empty.avi", "contains no video frames"), ("empty.mp4", "has no video stream")],  # MP4 drops empty tracks
)
def test_video_with_zero_frames(tmp_path, name, message):
    path = tmp_path / name
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: {message}"):
        list(read_frames(path))
    with pytest.raises(InputError, match=message):
        probe_video(path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 4096), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: has no video stream"):
        probe_video(path)
    with pytest.raises(InputError, match="has no video stream"):
        list(read_frames(path))


def test_random_bytes_are_not_a_video(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(random.Random(0).randbytes(50_000))
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: not a readable video"):
        probe_video(path)


@pytest.mark.parametrize("name", ["single_face.mp4", "WolfgangLanger_Pexels.mp4"])
def test_first_20kb_of_a_video(tmp_path, feat_data, name):
    path = tmp_path / name
    path.write_bytes((feat_data / name).read_bytes()[:20_000])
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: "):
        probe_video(path)
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: "):
        list(read_frames(path))


def test_corrupt_data_midway_names_the_frame(tmp_path, feat_data):
    data = bytearray((feat_data / "WolfgangLanger_Pexels.mp4").read_bytes())
    rng = random.Random(0)
    start = len(data) // 3
    data[start : start + 200_000] = rng.randbytes(200_000)
    path = tmp_path / "garbled.mp4"
    path.write_bytes(data)
    frames = read_frames(path)
    assert next(frames).shape == (360, 640, 3)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: cannot decode frame \d+"):
        list(frames)


def test_missing_video(tmp_path):
    path = tmp_path / "missing.mp4"
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: file not found"):
        probe_video(path)
    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: file not found"):
        next(read_frames(path))


# --- VideoWriter -----------------------------------------------------------------------------------


def _gradient_frames(n: int, size: int = 256) -> list[np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    return [
        np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 10 * i % 256)], axis=-1).astype(np.uint8)
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("source", "codec"),
    [("single_face.mp4", "mp3"), ("WolfgangLanger_Pexels.mp4", "aac"), ("carphone", None), (None, None)],
)
def test_video_writer_round_trip(tmp_path, feat_data, carphone, source, codec):
    audio_from = None if source is None else carphone if source == "carphone" else feat_data / source
    fps = Fraction(24000, 1001)
    path = tmp_path / "out.mp4"
    frames = _gradient_frames(24)
    with VideoWriter(path, fps, 256, 256, audio_from=audio_from) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.frames_written == 24 and writer.has_audio == (codec is not None)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 256, 256)
        assert video.average_rate == fps and video.frames == 24
        assert len(container.streams.audio) == (codec is not None)
        if codec is not None:
            audio = container.streams.audio[0]
            assert audio.codec.canonical_name == codec
            assert float(audio.duration * audio.time_base) == pytest.approx(24 / fps, abs=0.05)
            assert next(container.decode(audio)).samples > 0
            container.seek(0)
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]
    assert len(decoded) == 24
    for got, want in zip(decoded, frames):
        assert np.abs(got.astype(int) - want).mean() < 3


def test_video_writer_keeps_full_audio_untouched(tmp_path, feat_data):
    source = feat_data / "single_face.mp4"
    path = tmp_path / "out.mp4"
    with VideoWriter(path, Fraction(30), 256, 256, audio_from=source) as writer:
        for frame in _gradient_frames(72):
            writer.write(frame)

    def audio_packets(p):
        with av.open(str(p)) as container:
            stream = container.streams.audio[0]
            duration = float(stream.duration * stream.time_base)
            return [bytes(packet) for packet in container.demux(stream) if packet.size], duration

    out_packets, out_duration = audio_packets(path)
    src_packets, src_duration = audio_packets(source)
    assert out_packets == src_packets
    assert out_duration == pytest.approx(src_duration, abs=0.01)


def _late_video_with_tone(path: Path, audio_codec: str) -> None:
    """One second of video starting at 0.5 s; audio from 0 s: half a second of silence, then a 440 Hz tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream(audio_codec, rate=16000)
        audio.layout = "mono"
        for i, frame in enumerate(_gradient_frames(25, 64)):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = 25 + 2 * i, Fraction(1, 50)
            container.mux(video.encode(video_frame))
        container.mux(video.encode(None))
        t = np.arange(24000) / 16000
        wave = (np.sin(2 * np.pi * 440 * t) * 10000 * (t >= 0.5)).astype(np.int16)
        for start in range(0, 24000, 1000):
            audio_frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1000], format="s16", layout="mono")
            audio_frame.sample_rate, audio_frame.pts, audio_frame.time_base = 16000, start, Fraction(1, 16000)
            container.mux(audio.encode(audio_frame))
        container.mux(audio.encode(None))


@pytest.mark.parametrize(("name", "audio_codec"), [("remux.mp4", "aac"), ("transcode.mkv", "pcm_s16le")])
def test_video_writer_aligns_audio_with_first_frame(tmp_path, name, audio_codec):
    source = tmp_path / name
    _late_video_with_tone(source, audio_codec)
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 25, 64, 64, audio_from=source) as writer:
        for frame in read_frames(source):
            writer.write(frame)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec.canonical_name, stream.rate, stream.channels) == ("aac", 16000, 1)
        assert float(stream.duration * stream.time_base) == pytest.approx(1.0, abs=0.07)
        first_pts = min(packet.pts for packet in container.demux(stream) if packet.size)
        # Audio before frame 0 is dropped, except for encoder priming and the packet that straddles it.
        assert first_pts * stream.time_base == pytest.approx(0, abs=0.15)
        container.seek(0)
        frames = list(container.decode(stream))
    assert frames[0].time == pytest.approx(0, abs=0.07)
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert 15000 <= len(samples) <= 16000 + 2048  # cut to the video, up to whole 1024-sample AAC frames
    spectrum = np.abs(np.fft.rfft(samples[:15000]))
    assert np.argmax(spectrum) * 16000 / 15000 == pytest.approx(440, abs=2)
    rms = np.sqrt(np.mean(samples[1600:14000] ** 2))  # from 0.1 s: the tone, not the silence before it
    assert rms == pytest.approx(10000 / 32768 / np.sqrt(2), rel=0.05)


def test_video_writer_leaves_nothing_on_error(tmp_path, feat_data):
    with pytest.raises(RuntimeError, match="model crashed"):
        with VideoWriter(tmp_path / "out.mp4", 30, 256, 256, audio_from=feat_data / "single_face.mp4") as writer:
            for frame in _gradient_frames(5):
                writer.write(frame)
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_video_writer_validates(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "out.mp4", 30, 255, 256)
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "out.mp4", 0, 256, 256)
    with pytest.raises(ValueError, match=r"expected a \(256, 256, 3\) uint8"):
        with VideoWriter(tmp_path / "out.mp4", 30, 256, 256) as writer:
            writer.write(np.zeros((256, 256, 4), np.uint8))
    missing = tmp_path / "missing.mp4"
    with pytest.raises(InputError, match=f"^{re.escape(str(missing))}: file not found"):
        with VideoWriter(tmp_path / "out.mp4", 30, 256, 256, audio_from=missing):
            pass
    assert list(tmp_path.iterdir()) == []
