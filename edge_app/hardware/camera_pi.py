"""Raspberry Pi camera (CSI) through Picamera2.

picamera2 is imported inside open(), never at module import: it exists only on Raspberry Pi OS
(apt package python3-picamera2, built against the system libcamera), not on a dev machine or CI."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2

from edge_app.errors import SourceError
from edge_app.hardware.camera import Frame, FrameSource

log = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 480)
INSTALL_HINT = ("picamera2 is not installed: on a Raspberry Pi install python3-picamera2 and create the venv "
                "with --system-site-packages")


def _import_picamera2() -> Any:
    return importlib.import_module("picamera2")


class Picamera2Source(FrameSource):
    """Pi camera `camera_num` at `size` (width, height). `module_loader()` returns the picamera2
    module (or anything with a Picamera2 class); tests inject one, the default imports it.

    A capture error closes the camera and raises SourceError; the next read() reopens it."""

    live = True
    sensor = True

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, camera_num: int = 0,
                 module_loader: Callable[[], Any] | None = None, *, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.camera_num = camera_num
        self.description = f"Pi camera {camera_num}"
        self.stop_event = stop
        self._load = module_loader or _import_picamera2
        self._clock = clock
        self._cam: Any = None
        self._index = 0

    def open(self) -> None:
        if self._cam is not None:
            return
        try:
            module = self._load()
        except ImportError as exc:
            raise SourceError(INSTALL_HINT) from exc
        cam: Any = None
        try:
            cam = module.Picamera2(camera_num=self.camera_num)
            cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "RGB888"}))
            cam.start()
        except Exception as exc:  # picamera2 raises IndexError/RuntimeError for a missing or busy camera
            if cam is not None:
                _quietly(cam.close)
            raise SourceError(f"cannot open {self.description} (picamera2): {type(exc).__name__}: {exc}") from exc
        self._cam = cam
        log.info("%s open at %dx%d", self.description, *self.size)

    def read(self) -> Frame | None:
        if self._cam is None:
            self.open()
        try:
            array = self._cam.capture_array("main")
        except Exception as exc:
            self.close()
            raise SourceError(f"{self.description}: capture failed: {type(exc).__name__}: {exc}") from exc
        # Picamera2 names formats the libcamera/DRM way, after a little-endian word, so "RGB888"
        # holds bytes B, G, R: the Picamera2 manual's format table says "RGB888 - 24 bits per pixel,
        # ordered [B, G, R]" and picamera2/helpers.py make_image() decodes RGB888 with PIL raw mode
        # "BGR". Our Frame contract is RGB, hence the swap.
        rgb = cv2.cvtColor(array[:, :, :3], cv2.COLOR_BGR2RGB)
        frame = Frame(rgb, self._index, self._clock(), self.description)
        self._index += 1
        return frame

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            _quietly(cam.stop)
            _quietly(cam.close)


def _quietly(fn: Callable[[], object]) -> None:
    """Run a clean-up call; a failure is logged, not raised, so it cannot hide the real error."""
    try:
        fn()
    except Exception as exc:
        log.warning("picamera2 clean-up %s failed: %s", getattr(fn, "__name__", fn), exc)
