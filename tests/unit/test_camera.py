"""Frame sources: OpenCV reopening with backoff on real video files, the latest-frame reader thread,
Picamera2 (behind a fake module: the Pi camera cannot exist here) and open_source()."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from edge_app.errors import SourceError, SourceTimeoutError
from edge_app.hardware.camera import ImageSource, LatestFrame, OpenCVSource, open_source
from edge_app.hardware.camera_pi import INSTALL_HINT, Picamera2Source
from tests import conftest

W, H = 64, 48


def write_video(path: Path, n: int = 5) -> Path:
    """An MJPG .avi of n frames, frame i a flat colour whose red channel is 40*i."""
    return conftest.write_video(path, [np.full((H, W, 3), (min(40 * i, 255), 0, 0), np.uint8) for i in range(n)])


class FakeClock:
    """time.monotonic and time.sleep stand-ins: only sleeping moves time on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


# --- OpenCVSource -------------------------------------------------------------------------------


def test_video_file_keeps_its_behaviour(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 5)
    with OpenCVSource(str(video)) as src:
        assert not src.live
        assert len(src) == 5
        frames = list(src)
        assert src.read() is None  # the end stays the end
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert frames[4].image.shape == (H, W, 3) and frames[4].image.dtype == np.uint8
    r, g, b = frames[4].image[H // 2, W // 2]
    assert r > 140 and g < 30 and b < 30  # red was written as BGR; the frame is RGB


def test_missing_camera_index_fails_fast_with_its_name() -> None:
    t0 = time.monotonic()
    src = OpenCVSource(99)
    assert src.live
    with pytest.raises(SourceError, match="camera 99"):
        src.open()
    assert time.monotonic() - t0 < 2.0


def test_live_source_backs_off_then_times_out_then_recovers(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    video = write_video(tmp_path / "cam.avi", 3)
    clock = FakeClock()
    src = OpenCVSource(str(video), live=True, clock=clock, sleep=clock.sleep)
    assert src.live and src.no_frame_timeout == 10.0
    gone = video.rename(tmp_path / "unplugged.avi")  # before the first open: every open fails
    caplog.set_level(logging.WARNING, logger="edge_app.hardware.camera")

    with pytest.raises(SourceTimeoutError, match=r"/cam\.avi: no frame for 10 s$") as ei:
        src.read()
    assert isinstance(ei.value, SourceError) and isinstance(ei.value, TimeoutError)
    # 0.5 s doubling, the last pause cut short by the 10 s timeout
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 2.5]
    assert src.reopen_attempts == 5
    logged = [r.getMessage() for r in caplog.records if "reopen attempt" in r.getMessage()]
    assert [m.split("attempt ")[1].split()[0] for m in logged] == ["1", "2", "4"]  # not every attempt
    assert all(r.levelno == logging.WARNING for r in caplog.records)

    # The next read() tries again at once, then backs off where it left (16 s, cut to the 10 s window).
    clock.sleeps.clear()
    with pytest.raises(SourceTimeoutError, match="no frame for 20 s"):
        src.read()
    assert clock.sleeps == [10.0]
    assert src.frames_age() == 20.0

    gone.rename(video)  # plugged back in
    clock.sleeps.clear()
    frame = src.read()
    assert frame is not None and frame.index == 0 and frame.timestamp == clock.now
    assert clock.sleeps == []  # the immediate try of a new read() found it
    assert src.reopen_attempts == 0 and src.frames_age() == 0.0
    src.close()


def test_live_source_lost_and_back_with_real_time(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 4)
    src = OpenCVSource(str(video), live=True, no_frame_timeout=0.3, backoff_initial=0.02, backoff_max=0.1)
    src.open()
    first = src.read()
    assert first is not None and first.index == 0
    aside = video.rename(tmp_path / "aside.avi")  # the open capture still reads the rest
    seen = [first.index]
    t0 = time.monotonic()
    with pytest.raises(SourceTimeoutError, match=r"cam\.avi: no frame for \d+(\.\d)? s$"):
        while True:
            frame = src.read()
            assert frame is not None
            seen.append(frame.index)
    lost_for = time.monotonic() - t0
    assert seen == [0, 1, 2, 3]
    assert 0.25 < lost_for < 2.0
    assert src.reopen_attempts >= 3  # 0.02, 0.04, 0.08, 0.1 ... within 0.3 s

    # Still usable after the error: another read keeps reopening and times out again.
    with pytest.raises(SourceTimeoutError):
        src.read()
    aside.rename(video)
    again = src.read()
    assert again is not None and again.index == 4  # indices keep counting across reopenings
    assert again.image.shape == (H, W, 3)
    assert src.frames_age() < 0.5
    src.close()


def test_stop_event_cuts_a_backoff_wait_short(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 2)
    stop = threading.Event()
    src = OpenCVSource(str(video), live=True, backoff_initial=30.0, no_frame_timeout=60.0, stop=stop)
    video.unlink()
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert src.read() is None  # stopped, like the end of a file
    assert time.monotonic() - t0 < 1.0


# --- LatestFrame --------------------------------------------------------------------------------


def test_latest_frame_serves_only_new_frames_to_a_slow_consumer(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 30)
    # A live file replays after its end (end = lost, reopened), so the reader never runs dry.
    src = OpenCVSource(str(video), live=True, backoff_initial=0.005, backoff_max=0.005)
    stop = threading.Event()
    grabber = LatestFrame(src, stop).start()
    assert src.stop_event is stop
    threads = [t for t in threading.enumerate() if t.name == "camera"]
    assert len(threads) == 1 and threads[0].daemon

    got = []
    for _ in range(8):
        frame = grabber.get(timeout=2.0)
        assert frame is not None
        got.append(frame.index)
        time.sleep(0.03)  # slow consumer: the reader outruns it
    assert all(a < b for a, b in itertools.pairwise(got)), got  # newer each time, never a repeat
    assert grabber.dropped > 0 and grabber.frames > len(got)
    assert grabber.last_error is None

    t0 = time.monotonic()
    assert grabber.stop()
    assert time.monotonic() - t0 < 1.0
    assert stop.is_set() and not grabber.running
    grabber.get(timeout=0)  # a last unread frame may remain; after it, nothing
    t0 = time.monotonic()
    assert grabber.get(timeout=1.0) is None
    assert time.monotonic() - t0 < 0.1  # the reader has ended: no waiting


def test_latest_frame_reports_camera_loss_and_recovers(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 3)
    src = OpenCVSource(str(video), live=True, no_frame_timeout=0.2, backoff_initial=0.02, backoff_max=0.05)
    src.open()
    aside = video.rename(tmp_path / "aside.avi")
    with LatestFrame(src, retry_delay=0.05) as grabber:
        deadline = time.monotonic() + 3.0
        while grabber.last_error is None and time.monotonic() < deadline:
            grabber.get(timeout=0.05)
        err = grabber.last_error
        assert isinstance(err, SourceTimeoutError) and "no frame for" in str(err)
        assert grabber.running  # the error is a status, not the end of the reader
        n_errors = grabber.error_count

        aside.rename(video)
        frame = grabber.get(timeout=3.0)
        while frame is not None and frame.index < 3:  # skip frames read before the loss
            frame = grabber.get(timeout=3.0)
        assert frame is not None and frame.index >= 3
        assert grabber.last_error is None and grabber.error_count >= n_errors


def test_latest_frame_stop_interrupts_a_long_backoff(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 2)
    src = OpenCVSource(str(video), live=True, backoff_initial=30.0, no_frame_timeout=120.0)
    video.unlink()
    grabber = LatestFrame(src).start()
    assert grabber.get(timeout=0.2) is None
    t0 = time.monotonic()
    assert grabber.stop(timeout=1.0)
    assert time.monotonic() - t0 < 1.0


def test_latest_frame_ends_with_a_finite_source(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((H, W, 3), np.uint8))
    grabber = LatestFrame(ImageSource(img)).start()
    frame = grabber.get(timeout=2.0)
    assert frame is not None and frame.origin == str(img)
    assert grabber.get(timeout=2.0) is None  # ended: returns at once rather than waiting
    assert grabber.stop() and not grabber.running


# --- Picamera2Source (fake picamera2 module) -----------------------------------------------------


class FakePicamera2:
    """Same method names as picamera2.Picamera2; capture_array returns BGR like the real RGB888."""

    instances: ClassVar[list[FakePicamera2]] = []
    fail_on: ClassVar[str | None] = None

    def __init__(self, camera_num: int = 0) -> None:
        if self.fail_on == "init":
            raise IndexError("list index out of range")  # what Picamera2 does for a missing camera
        self.camera_num = camera_num
        self.calls: list[str] = []
        self.config: dict[str, Any] | None = None
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create_video_configuration")
        return {"main": dict(main), "use_case": "video"}

    def configure(self, config: dict[str, Any]) -> None:
        self.calls.append("configure")
        self.config = config

    def start(self) -> None:
        self.calls.append("start")
        if self.fail_on == "start":
            raise RuntimeError("Camera in use")

    def capture_array(self, name: str = "main") -> np.ndarray:
        self.calls.append(f"capture_array:{name}")
        if self.fail_on == "capture":
            raise RuntimeError("dequeue timed out")
        assert self.config is not None
        w, h = self.config["main"]["size"]
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
        return bgr

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


class FakeModule:
    Picamera2 = FakePicamera2


@pytest.fixture
def fake_pi() -> Any:
    FakePicamera2.instances = []
    FakePicamera2.fail_on = None
    yield FakePicamera2
    FakePicamera2.fail_on = None


def test_picamera2_capture_is_converted_to_rgb(fake_pi: Any) -> None:
    loads = []
    src = Picamera2Source((320, 240), camera_num=1, module_loader=lambda: loads.append(1) or FakeModule)
    assert src.live and loads == []  # nothing imported before open()
    with src:
        assert loads == [1]
        frame = src.read()
        second = src.read()
    assert frame is not None and second is not None
    cam = fake_pi.instances[0]
    assert cam.camera_num == 1
    assert cam.config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert cam.calls[:3] == ["create_video_configuration", "configure", "start"]
    assert "capture_array:main" in cam.calls
    assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
    assert frame.image[0, 0].tolist() == [30, 20, 10]  # R, G, B
    assert frame.image.flags.c_contiguous
    assert (frame.index, second.index) == (0, 1) and frame.origin == "Pi camera 1"
    assert cam.calls[-2:] == ["stop", "close"]


def test_picamera2_open_errors_name_the_camera(fake_pi: Any) -> None:
    fake_pi.fail_on = "init"
    with pytest.raises(SourceError, match="Pi camera 2.*IndexError"):
        Picamera2Source(camera_num=2, module_loader=lambda: FakeModule).open()

    fake_pi.fail_on = "start"
    with pytest.raises(SourceError, match="Pi camera 0.*Camera in use"):
        Picamera2Source(module_loader=lambda: FakeModule).open()
    assert fake_pi.instances[-1].calls[-1] == "close"  # the half-opened camera is released


def test_picamera2_capture_error_closes_and_next_read_reopens(fake_pi: Any) -> None:
    src = Picamera2Source(module_loader=lambda: FakeModule)
    src.open()
    fake_pi.fail_on = "capture"
    with pytest.raises(SourceError, match="Pi camera 0: capture failed"):
        src.read()
    assert fake_pi.instances[0].calls[-2:] == ["stop", "close"]
    fake_pi.fail_on = None
    frame = src.read()
    assert frame is not None and len(fake_pi.instances) == 2
    src.close()


def test_picamera2_missing_module_says_how_to_install() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'picamera2'")

    with pytest.raises(SourceError, match="python3-picamera2.*--system-site-packages"):
        Picamera2Source(module_loader=missing).open()
    # The real import: picamera2 does not exist off a Raspberry Pi.
    with pytest.raises(SourceError) as ei:
        Picamera2Source().read()
    assert str(ei.value) == INSTALL_HINT


# --- open_source --------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "num"), [("picamera2", 0), ("picam", 0), ("picamera2:1", 1), ("PiCam:3", 3)])
def test_open_source_knows_the_pi_camera(spec: str, num: int) -> None:
    src = open_source(spec)
    assert isinstance(src, Picamera2Source) and src.camera_num == num and src.size == (640, 480)


def test_open_source_other_specs(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="picamera2:N"):
        open_source("picamera2:x")
    stop = threading.Event()
    cam = open_source("0", stop=stop, no_frame_timeout=3.0, size=(320, 240))
    assert isinstance(cam, OpenCVSource) and cam.live and cam.description == "camera 0"
    assert cam.stop_event is stop and cam.no_frame_timeout == 3.0 and (cam.width, cam.height) == (320, 240)
    pi = open_source("picam", size=(1280, 720))
    assert isinstance(pi, Picamera2Source) and pi.size == (1280, 720)
    video = open_source(str(write_video(tmp_path / "v.avi", 2)))
    assert isinstance(video, OpenCVSource) and not video.live


def test_only_sensor_cameras_count_a_repeated_picture_as_frozen(tmp_path):
    """USB and Pi cameras deliver sensor noise (a repeat means a frozen driver); a network stream of a still
    scene may decode to identical frames, and a file is a file."""
    from edge_app.hardware.camera import OpenCVSource
    from edge_app.hardware.camera_pi import Picamera2Source

    video = tmp_path / "v.avi"
    video.write_bytes(b"")
    assert OpenCVSource("0").sensor and OpenCVSource(2).sensor
    assert not OpenCVSource("rtsp://10.0.0.5/stream").sensor and not OpenCVSource(str(video)).sensor
    assert Picamera2Source.sensor
