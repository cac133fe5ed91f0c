"""Frame sources behind one small interface: ImageSource (file or folder), OpenCVSource (camera
index, RTSP/HTTP URL, video file) and Picamera2Source (Raspberry Pi camera, in camera_pi.py so
that its lazy import stays out of the way). LatestFrame reads a live source on its own thread.

A source yields Frame objects with RGB uint8 pixels; `open_source(spec)` picks the class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from edge_app.errors import EdgeAppError, InputNotFoundError, SourceError, SourceTimeoutError
from edge_app.imageio import IMAGE_EXTS, read_image

log = logging.getLogger(__name__)

NO_FRAME_TIMEOUT = 10.0  # seconds without a frame (reopening included) before read() gives up
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
_LOG_EVERY = 300.0  # seconds: past the power-of-two attempts, a long outage still logs this often


@dataclass(frozen=True)
class Frame:
    image: np.ndarray = field(repr=False)  # RGB uint8 (H, W, 3)
    index: int
    timestamp: float  # seconds: position in a video, or time.monotonic() for live sources
    origin: str  # file the frame came from, or the source description


class FrameSource:
    """Iterate to get frames; a source is also a context manager that closes itself.

    read() opens the source if needed. A live source that waits (reopening a lost camera) stops
    waiting when `stop_event` is set and then returns None, like the end of a file."""

    description = "source"
    live = False  # live sources drop frames when the consumer is slow; files never do
    # Frames straight from a sensor (USB, Pi camera): noise makes every frame differ, so one picture repeated
    # means a frozen driver. A network stream of a still scene may decode to identical frames (skipped blocks).
    sensor = False
    fps: float | None = None
    stop_event: threading.Event | None = None

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        """Next frame, or None at the end of a finite source."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        """Number of frames if known in advance, else 0."""
        return 0

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame


class ImageSource(FrameSource):
    """One image file or every image in a folder (sorted, non-recursive unless asked).

    An unreadable image does not stop a batch: it is logged, counted in `errors` and skipped."""

    def __init__(self, path: str | Path, recursive: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputNotFoundError(f"no such file or folder: {self.path}")
        if self.path.is_dir():
            pattern = "**/*" if recursive else "*"
            self.files = sorted(p for p in self.path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        else:
            self.files = [self.path]
        self.description = str(self.path)
        self.errors: list[tuple[Path, str]] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self.files)

    def read(self) -> Frame | None:
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                return Frame(read_image(path), self._next - 1, 0.0, str(path))
            except EdgeAppError as exc:
                if len(self.files) == 1:
                    raise
                log.info("skipped: %s", exc)  # reported by the caller through .errors
                self.errors.append((path, str(exc)))
        return None


class OpenCVSource(FrameSource):
    """USB camera (index), network stream (rtsp://, http://) or video file through OpenCV.

    A video file ends (read() returns None). A live source (camera, stream, or a file with
    live=True) survives loss: read() reopens it with exponential backoff (backoff_initial doubling
    up to backoff_max) and raises SourceTimeoutError "<source>: no frame for N s" once
    no_frame_timeout seconds have passed without a frame. The next read() starts reopening again,
    so a caller can report the loss and keep calling read(). open() itself fails at once, so a
    wrong camera index is reported at start-up instead of being retried for ever.

    `clock` and `sleep` are injectable for tests; `stop` aborts any wait (read() then returns None)."""

    def __init__(self, spec: str | int, width: int | None = None, height: int | None = None, *,
                 live: bool | None = None, no_frame_timeout: float = NO_FRAME_TIMEOUT,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.spec: str | int = int(spec) if isinstance(spec, str) and spec.isdigit() else spec
        if isinstance(self.spec, str) and "://" not in self.spec and not Path(self.spec).exists():
            raise InputNotFoundError(f"no such video file: {self.spec}")
        self.live = live if live is not None else not (isinstance(self.spec, str) and Path(self.spec).is_file())
        self.width, self.height = width, height
        self.description = f"camera {self.spec}" if isinstance(self.spec, int) else str(self.spec)
        self.sensor = isinstance(self.spec, int)
        self.no_frame_timeout = no_frame_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.stop_event = stop
        self._clock = clock
        self._sleep = sleep
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._frames = 0
        self._last_frame_at: float | None = None  # clock() of the last frame (or of the first try)
        self._window: float | None = None  # clock() when the current read() started waiting for a frame
        self._delay = backoff_initial  # next backoff pause; kept across read() calls until a frame comes
        self.reopen_attempts = 0  # in the current outage
        self._logged_at = -_LOG_EVERY

    def open(self) -> None:
        cap = cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.description}: OpenCV could not open it "
                              "(no such camera, unsupported codec or unreachable stream)")
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None
        self._frames = 0 if self.live else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._cap = cap
        if self.live and self._last_frame_at is None:
            self._last_frame_at = self._clock()

    def __len__(self) -> int:
        return self._frames

    def frames_age(self) -> float:
        """Seconds since the last frame (or since the first open attempt); 0 before any."""
        return 0.0 if self._last_frame_at is None else self._clock() - self._last_frame_at

    def read(self) -> Frame | None:
        if self.live:
            return self._read_live()
        if self._cap is None:
            self.open()
        assert self._cap is not None
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        ts = self._index / self.fps if self.fps else self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
        return self._emit(bgr, ts)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _emit(self, bgr: np.ndarray, ts: float) -> Frame:
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._index, ts, self.description)
        self._index += 1
        return frame

    def _read_live(self) -> Frame | None:
        if self._last_frame_at is None:
            self._last_frame_at = self._clock()
        if self._cap is not None:
            ok, bgr = self._cap.read()
            if ok and bgr is not None:
                return self._good(bgr)
            self.close()
            log.warning("%s: no frame delivered (camera unplugged or stream down?); reopening", self.description)
            self._window = self._clock()
        elif self._window is None:
            # Not open yet, or the previous read() gave up: one immediate try before backing off.
            self._window = self._clock()
            if (got := self._try_open()) is not None:
                return self._good(got)
        while True:
            remaining = self._window + self.no_frame_timeout - self._clock()
            if remaining <= 0:
                self._window = None
                age = self.frames_age()
                raise SourceTimeoutError(f"{self.description}: no frame for {age:.{0 if age >= 10 else 1}f} s")
            if not self._pause(min(self._delay, remaining)):
                return None
            self.reopen_attempts += 1
            self._delay = min(self._delay * 2, self.backoff_max)
            n = self.reopen_attempts
            if n & (n - 1) == 0 or self._clock() - self._logged_at >= _LOG_EVERY:  # powers of two: not spammy
                self._logged_at = self._clock()
                log.warning("%s: reopen attempt %d (%.0f s without a frame)", self.description, n, self.frames_age())
            if (got := self._try_open()) is not None:
                log.warning("%s: frames again after %d reopen attempt(s), %.1f s without a frame",
                            self.description, n, self.frames_age())
                return self._good(got)

    def _good(self, bgr: np.ndarray) -> Frame:
        self._last_frame_at = self._clock()
        self._window = None
        self._delay = self.backoff_initial
        self.reopen_attempts = 0
        self._logged_at = -_LOG_EVERY
        return self._emit(bgr, self._last_frame_at)

    def _try_open(self) -> np.ndarray | None:
        """Open and read one frame; None (and closed) if either fails."""
        try:
            self.open()
        except SourceError:
            return None
        assert self._cap is not None
        ok, bgr = self._cap.read()
        if ok and bgr is not None:
            return bgr
        self.close()
        return None

    def _pause(self, seconds: float) -> bool:
        """Wait; False if stop_event is (or becomes) set."""
        stop = self.stop_event
        if stop is not None and stop.is_set():
            return False
        if self._sleep is not None:
            self._sleep(seconds)
        elif stop is not None:
            return not stop.wait(seconds)
        else:
            time.sleep(seconds)
        return not (stop is not None and stop.is_set())


class LatestFrame:
    """Reads a live source on a daemon thread ("camera") and keeps only the newest frame.

    A slow consumer gets the most recent frame, never one it already had; frames it did not take
    are counted in `dropped`. A SourceError does not end the thread: it becomes `last_error`
    (None again once frames come back; `error_count` counts them) and reading resumes after
    `retry_delay` (the source's own backoff runs inside read()). The thread ends when `stop` is set
    or a finite source ends, and then closes the source. The source's stop_event is set to ours if
    it has none, so stop() also cuts a backoff wait short. Open the source before start() to fail
    fast on a wrong camera; read() would otherwise open it (and a live one keeps retrying)."""

    def __init__(self, source: FrameSource, stop: threading.Event | None = None, *, retry_delay: float = 1.0,
                 name: str = "camera") -> None:
        self.source = source
        self.stop_event = stop or source.stop_event or threading.Event()
        if source.stop_event is None:
            source.stop_event = self.stop_event
        self.retry_delay = retry_delay
        self.dropped = 0  # frames read but replaced before the consumer took them
        self.frames = 0  # frames read
        self.last_error: SourceError | None = None  # the reader's status: None while frames flow
        self.error_count = 0
        self._frame: Frame | None = None
        self._fresh = False
        self._ended = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LatestFrame:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not returned before, waiting up to `timeout` s; None if none came
        (look at `last_error`) or the reader has ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._ended, timeout)
            if not self._fresh:
                return None
            self._fresh = False
            return self._frame

    def stop(self, timeout: float = 1.0) -> bool:
        """Set the stop event and join the thread; False if it did not end within `timeout`."""
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> LatestFrame:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    frame = self.source.read()
                except Exception as exc:  # the consumer must hear of it; the thread must live on
                    err = exc if isinstance(exc, SourceError) else SourceError(
                        f"{self.source.description}: {type(exc).__name__}: {exc}")
                    if self.last_error is None or type(self.last_error) is not type(err):  # once, not per retry
                        log.log(logging.WARNING if isinstance(exc, SourceError) else logging.ERROR,
                                "camera reader: %s", err, exc_info=not isinstance(exc, SourceError))
                    self.last_error = err
                    self.error_count += 1
                    self.stop_event.wait(self.retry_delay)
                    continue
                if frame is None:
                    return  # end of a finite source, or stopped while reopening
                with self._cond:
                    if self._fresh:
                        self.dropped += 1
                    self._frame, self._fresh = frame, True
                    self.frames += 1
                    self.last_error = None
                    self._cond.notify_all()
        finally:
            self.source.close()  # only this thread reads it, so closing here cannot race a read
            with self._cond:
                self._ended = True
                self._cond.notify_all()


def open_source(spec: str, *, stop: threading.Event | None = None, no_frame_timeout: float = NO_FRAME_TIMEOUT,
                size: tuple[int, int] | None = None) -> FrameSource:
    """'0' -> camera 0; 'rtsp://…' -> stream; 'picamera2', 'picam', 'picamera2:1' -> Pi camera;
    a folder or image -> ImageSource; other file -> video.

    `stop`, `no_frame_timeout` and `size` (width, height) apply to live sources."""
    name, _, num = spec.partition(":")
    if name.lower() in ("picamera2", "picam"):
        from edge_app.hardware.camera_pi import DEFAULT_SIZE, Picamera2Source  # Pi-only code, loaded on demand

        if num and not num.isdigit():
            raise SourceError(f"bad camera {spec!r}: write picamera2 or picamera2:N with N the camera number")
        return Picamera2Source(size or DEFAULT_SIZE, int(num or 0), stop=stop)
    if spec.isdigit() or "://" in spec:
        w, h = size or (None, None)
        return OpenCVSource(spec, w, h, stop=stop, no_frame_timeout=no_frame_timeout)
    path = Path(spec)
    if not path.exists():
        raise InputNotFoundError(f"no such file or folder: {spec}")
    if path.is_dir() or path.suffix.lower() in IMAGE_EXTS:
        return ImageSource(path)
    return OpenCVSource(spec)
