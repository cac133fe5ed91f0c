"""Header probing and the large-image rules of edge_app.imageio (issue 10 item 14)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from edge_app.errors import ImageError
from edge_app.imageio import decode_image, image_size


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".tif", ".ppm", ".pgm"])
def test_size_from_the_header_of_every_format_we_read(ext):
    img = (np.random.default_rng(1).random((123, 457, 3)) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(ext, img[..., 0] if ext == ".pgm" else img)
    assert ok
    assert image_size(buf.tobytes()) == (457, 123)


def test_progressive_jpeg_and_unknown_bytes():
    img = np.zeros((40, 70, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and image_size(buf.tobytes()) == (70, 40)
    assert image_size(b"GIF89a....") is None
    assert image_size(b"\xff\xd8\xff") is None  # a truncated header: the decoder reports the file


def test_a_jpeg_header_claiming_too_many_pixels_is_refused_before_decoding():
    # SOI, then a baseline SOF0 of 30000x30000; no image data at all follows.
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 30000, 30000, 1) + b"\x01\x11\x00"
    with pytest.raises(ImageError, match=r"upload\.jpg is 30000x30000 \(900 MP\); the limit is 200 MP"):
        decode_image(b"\xff\xd8" + sof + b"\x00" * 32, "upload.jpg")


def test_a_small_image_decodes_exactly_and_in_rgb_order():
    img = (np.random.default_rng(2).random((50, 60, 3)) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok and np.array_equal(decode_image(buf.tobytes()), img[..., ::-1])
