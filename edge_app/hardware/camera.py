"""Frame sources behind one small interface: ImageSource (file or folder), OpenCVSource (camera
index, RTSP/HTTP URL, video file). Picamera2 joins them in the daemon issue.

A source yields Frame objects with RGB uint8 pixels; `open_source(spec)` picks the class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from edge_app.errors import EdgeAppError, InputNotFoundError, SourceError
from edge_app.imageio import IMAGE_EXTS, read_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray = field(repr=False)  # RGB uint8 (H, W, 3)
    index: int
    timestamp: float  # seconds: position in a video, or time.monotonic() for live sources
    origin: str  # file the frame came from, or the source description


class FrameSource:
    """Iterate to get frames; a source is also a context manager that closes itself."""

    description = "source"
    live = False  # live sources drop frames when the consumer is slow; files never do
    fps: float | None = None

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
    """USB camera (index), network stream (rtsp://, http://) or video file through OpenCV."""

    def __init__(self, spec: str | int, width: int | None = None, height: int | None = None) -> None:
        self.spec: str | int = int(spec) if isinstance(spec, str) and spec.isdigit() else spec
        self.live = not (isinstance(self.spec, str) and Path(self.spec).is_file())
        if isinstance(self.spec, str) and "://" not in self.spec and not Path(self.spec).exists():
            raise InputNotFoundError(f"no such video file: {self.spec}")
        self.width, self.height = width, height
        self.description = f"camera {self.spec}" if isinstance(self.spec, int) else str(self.spec)
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._frames = 0

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

    def __len__(self) -> int:
        return self._frames

    def read(self) -> Frame | None:
        if self._cap is None:
            self.open()
        assert self._cap is not None
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.live:
                raise SourceError(f"{self.description}: no frame delivered (camera unplugged or stream down)")
            return None
        if self.live:
            ts = time.monotonic()
        else:
            ts = self._index / self.fps if self.fps else self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._index, ts, self.description)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def open_source(spec: str) -> FrameSource:
    """'0' -> camera 0; 'rtsp://…' -> stream; a folder or image -> ImageSource; other file -> video."""
    if spec.isdigit() or "://" in spec:
        return OpenCVSource(spec)
    path = Path(spec)
    if not path.exists():
        raise InputNotFoundError(f"no such file or folder: {spec}")
    if path.is_dir() or path.suffix.lower() in IMAGE_EXTS:
        return ImageSource(path)
    return OpenCVSource(spec)
