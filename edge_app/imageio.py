"""Reading and writing images with errors that name the file."""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Final

import cv2
import numpy as np

from edge_app.errors import ImageError, InputNotFoundError

log = logging.getLogger(__name__)

# Large images (docs/cli.md "Large images"). A file above MAX_FILE_BYTES or an image above MAX_PIXELS is
# refused. A JPEG above MAX_DECODED_PIXELS is decoded reduced by 2, 4 or 8 inside libjpeg, so a
# 12000x12000 photo costs about 27 MB instead of 432 MB (plus copies). Other formats are decoded at full
# size by OpenCV even when a reduced size is asked for, so they are refused above MAX_FULL_DECODE_PIXELS.
MAX_FILE_BYTES: Final = 50 * 1024 * 1024
MAX_PIXELS: Final = 200_000_000
MAX_DECODED_PIXELS: Final = 16_000_000
MAX_FULL_DECODE_PIXELS: Final = 50_000_000
_REDUCED: Final = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}

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
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"image {path} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> RGB uint8; ImageError naming ``what`` if they are not one,
    or if the image is too large to decode. Large JPEGs come out reduced (MAX_DECODED_PIXELS)."""
    if not data:
        raise ImageError(f"cannot decode image {what}: the file is empty")
    flag, scale = cv2.IMREAD_COLOR, 1
    size = image_size(data)
    if size is not None:
        w, h = size
        mp = w * h / 1e6
        if w * h > MAX_PIXELS:
            raise ImageError(f"image {what} is {w}x{h} ({mp:.0f} MP); the limit is {MAX_PIXELS / 1e6:.0f} MP")
        jpeg = data[:2] == b"\xff\xd8"
        if not jpeg and w * h > MAX_FULL_DECODE_PIXELS:
            raise ImageError(f"image {what} is {w}x{h} ({mp:.0f} MP); only JPEG is decoded reduced, other "
                             f"formats up to {MAX_FULL_DECODE_PIXELS / 1e6:.0f} MP: convert it to JPEG or scale "
                             "it down")
        while scale < 8 and (w // scale) * (h // scale) > MAX_DECODED_PIXELS:
            scale *= 2
        if scale > 1:
            flag = _REDUCED[scale]
            log.info("%s: %dx%d, decoded at 1/%d", what, w, h, scale)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if bgr is None or bgr.size == 0:
        raise ImageError(f"cannot decode image {what}: not a supported image or the file is corrupt "
                         f"({len(data)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: no second full-size copy


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, BMP, WebP, TIFF or PNM file, without decoding it;
    None when the format is not one of those or the header is damaged (the decoder then says so)."""
    try:
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM":
            if struct.unpack("<I", data[14:18])[0] == 12:
                return struct.unpack("<HH", data[18:22])
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
        if data[:1] == b"P" and data[1:2] in b"123456":
            return _pnm_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    e = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(e + "I", data[4:8])[0]
    found: dict[int, int] = {}
    for k in range(struct.unpack(e + "H", data[ifd:ifd + 2])[0]):
        tag, typ = struct.unpack(e + "HH", data[ifd + 2 + 12 * k:ifd + 6 + 12 * k])
        if tag in (256, 257):
            at = ifd + 10 + 12 * k
            found[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), data[at:at + (2 if typ == 3 else 4)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    tokens: list[bytes] = []
    for line in data[2:1024].splitlines():
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            return int(tokens[0]), int(tokens[1])
    return None


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
