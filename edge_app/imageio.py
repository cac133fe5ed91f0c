"""Reading and writing images with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_app.errors import ImageError, InputNotFoundError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg", ".h264"})


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3). EXIF orientation is applied (a phone photo comes out upright)."""
    # imdecode from bytes rather than imread: imread cannot report *why* it failed and
    # mishandles some non-ASCII paths.
    return decode_image(read_image_file(path), str(path))


def read_image_file(path: str | Path) -> bytes:
    """The encoded bytes of an image file; errors say when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"expected an image file, got a folder: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> RGB uint8; ImageError naming ``what`` if they are not one."""
    if not data:
        raise ImageError(f"cannot decode image {what}: the file is empty")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageError(f"cannot decode image {what}: not a supported image or the file is corrupt "
                         f"({len(data)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, ext: str = ".jpg", what: str = "image") -> bytes:
    """RGB uint8 -> the bytes of an image file of type `ext`; ImageError naming `what` if it cannot."""
    ok, buf = cv2.imencode(ext or ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"cannot encode image as {ext!r}: {what}")
    return bytes(buf.tobytes())


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(rgb, path.suffix, str(path)))
