"""Synthetic presentation attacks made from real face photos (for scripts/evaluate_liveness.py and tests).

Every attack is a simulation: a real photo turned into what a camera would see of it printed on
paper, shown on a phone or tablet screen, or cut out and held over a face, placed in a 640x480
camera frame at a given size and blur. They approximate real attacks (colour, texture, borders,
moiré, glare); they are no substitute for a site's own printed photos and phones
(docs/liveness.md). Deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

FRAME_W, FRAME_H = 640, 480
KINDS = ("print", "screen", "cutout")


@dataclass(frozen=True)
class Attack:
    kind: str  # print, screen, cutout
    face_px: int  # width of the face in the camera frame
    blur: float  # camera defocus, Gaussian sigma in pixels
    seed: int


def background(rng: np.random.Generator, w: int = FRAME_W, h: int = FRAME_H) -> np.ndarray:
    """A plausible wall/room behind the attack: smooth low-frequency colour with sensor noise (RGB uint8)."""
    base = rng.uniform(70, 200)  # walls are mostly greys and muted colours
    small = (base + rng.normal(0, 25, (4, 5, 1)) + rng.normal(0, 10, (4, 5, 3))).astype(np.float32)
    bg = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    bg += rng.normal(0, 4, bg.shape).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def _printed(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paper print: reduced gamut and contrast, warm paper white, halftone dots, paper grain, white border."""
    x = photo.astype(np.float32) / 255.0
    grey = x.mean(2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.55, 0.8)  # inks reach less saturation than a face
    x = 0.08 + x * rng.uniform(0.75, 0.85)  # no true black, no paper-white highlights
    x *= np.array([1.0, 0.97, 0.9], np.float32) * rng.uniform(0.9, 1.05)  # paper under indoor light
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(2.5, 4.0)
    dots = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period)
    x *= (1 - 0.08 * dots)[..., None]
    x += rng.normal(0, 0.02, (h, w, 1)).astype(np.float32)  # paper grain
    x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 0.9))
    border = max(2, int(0.06 * w))
    x = cv2.copyMakeBorder(x, border, border, border, border, cv2.BORDER_CONSTANT, value=(0.93, 0.91, 0.86))
    return np.asarray(np.clip(x * 255, 0, 255), np.uint8)


def _screen(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Screen replay: blue cast and raised blacks, pixel-grid moiré, a glare spot, a black bezel."""
    x = photo.astype(np.float32) / 255.0
    x = 0.05 + 0.9 * x ** rng.uniform(0.8, 1.0)
    x *= np.array([0.9, 0.97, 1.08], np.float32) * rng.uniform(0.95, 1.1)
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.15, 0.35)
    moire = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    x *= (1 + rng.uniform(0.04, 0.1) * moire)[..., None]
    gx, gy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.6) * h
    glare = np.exp(-(((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * (rng.uniform(0.1, 0.25) * w) ** 2)))
    x += rng.uniform(0.15, 0.4) * glare[..., None]
    bezel = max(3, int(rng.uniform(0.05, 0.1) * w))
    x = cv2.copyMakeBorder(x, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT, value=(0.04, 0.04, 0.05))
    return np.asarray(np.clip(x * 255, 0, 255), np.uint8)


def _place(scene: np.ndarray, sheet: np.ndarray, cx: float, cy: float, scale: float, angle: float,
           tilt: float) -> np.ndarray:
    """Warp ``sheet`` (a flat object) into ``scene`` about (cx, cy): scaled, rotated in plane, tilted
    (a perspective foreshortening, as a hand holding it would)."""
    h, w = sheet.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]]) - np.float32([w / 2, h / 2])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.float32([[c, -s], [s, c]])
    dst = (src * scale) @ rot.T
    dst[[1, 2], 1] *= 1 - tilt  # the right edge farther away: shorter
    dst += np.float32([cx, cy])
    m = cv2.getPerspectiveTransform(src + np.float32([w / 2, h / 2]), dst.astype(np.float32))
    fh, fw = scene.shape[:2]
    warped = cv2.warpPerspective(sheet, m, (fw, fh), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (fw, fh), flags=cv2.INTER_LINEAR)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    return np.asarray(scene * (1 - a) + warped * a, np.uint8)


def _camera(frame: np.ndarray, blur: float, rng: np.random.Generator) -> np.ndarray:
    x = frame.astype(np.float32)
    if blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), blur)
    x += rng.normal(0, 2.0, x.shape).astype(np.float32)
    ok, jpg = cv2.imencode(".jpg", np.clip(x, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imdecode(jpg, cv2.IMREAD_UNCHANGED) if ok else np.clip(x, 0, 255).astype(np.uint8)


def sheet_for(kind: str, photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == "print":
        return _printed(photo, rng)
    if kind == "screen":
        return _screen(photo, rng)
    raise ValueError(f"unknown sheet kind {kind!r}")


def attack_frames(photo: np.ndarray, face_box: tuple[float, float, float, float], attack: Attack,
                  wearer: np.ndarray | None = None, wearer_box: tuple[float, float, float, float] | None = None,
                  n_frames: int = 1) -> Iterator[np.ndarray]:
    """Camera frames (RGB 640x480) of ``photo`` presented as ``attack``; with n_frames > 1 the object
    moves rigidly (drifts, turns and tilts a little, as a hand holds it), a short video.

    cutout: the face of ``photo`` cut out along an ellipse, printed, and held over the face of another
    real person (``wearer`` with its box); the rest of the frame is that real person's photo."""
    rng = np.random.default_rng(attack.seed)
    x0, y0, x1, y1 = face_box
    fw = x1 - x0
    if attack.kind == "cutout":
        if wearer is None or wearer_box is None:
            raise ValueError("a cut-out mask needs a wearer photo and box")
        yield from _cutout_frames(photo, face_box, wearer, wearer_box, attack, rng, n_frames)
        return
    sheet = sheet_for(attack.kind, photo, rng)
    border = (sheet.shape[1] - photo.shape[1]) / 2
    scale = attack.face_px / fw
    # Where the face centre is on the sheet, relative to the sheet centre.
    fcx = (x0 + x1) / 2 + border - sheet.shape[1] / 2
    fcy = (y0 + y1) / 2 + border - sheet.shape[0] / 2
    scene = background(rng)
    cx, cy = rng.uniform(0.4, 0.6) * FRAME_W, rng.uniform(0.4, 0.55) * FRAME_H
    angle, tilt = rng.uniform(-0.1, 0.1), rng.uniform(0.0, 0.12)
    v = rng.normal(0, 3, 2)
    for i in range(n_frames):
        a = angle + 0.01 * i * rng.choice([-1, 1])
        t = float(np.clip(tilt + 0.01 * i, 0, 0.2))
        c, s = np.cos(a), np.sin(a)
        ox, oy = cx - (c * fcx - s * fcy) * scale + v[0] * i, cy - (s * fcx + c * fcy) * scale + v[1] * i
        frame = _place(scene, sheet, ox, oy, scale, a, t)
        yield _camera(frame, attack.blur, rng)


def _cutout_frames(photo: np.ndarray, face_box: tuple[float, float, float, float], wearer: np.ndarray,
                   wearer_box: tuple[float, float, float, float], attack: Attack, rng: np.random.Generator,
                   n_frames: int) -> Iterator[np.ndarray]:
    x0, y0, x1, y1 = (round(v) for v in face_box)
    pad = int(0.15 * (x1 - x0))
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    face = _printed(photo[y0:y1, x0:x1], rng)
    b = (face.shape[1] - (x1 - x0)) // 2
    face = face[b:-b, b:-b] if b else face  # a cut-out has no paper border
    # Scale the wearer's frame so their face is attack.face_px wide, centred in 640x480.
    wx0, wy0, wx1, wy1 = wearer_box
    s = attack.face_px / max(1.0, wx1 - wx0)
    m = np.float32([[s, 0, FRAME_W / 2 - s * (wx0 + wx1) / 2], [0, s, FRAME_H / 2 - s * (wy0 + wy1) / 2]])
    scene = cv2.warpAffine(wearer, m, (FRAME_W, FRAME_H), borderMode=cv2.BORDER_REFLECT)
    fh, fw = face.shape[:2]
    ell = np.zeros((fh, fw), np.uint8)
    cv2.ellipse(ell, (fw // 2, fh // 2), (int(fw * 0.45), int(fh * 0.5)), 0, 0, 360, 255, -1)
    cut = np.where(ell[..., None] > 0, face, 0).astype(np.uint8)
    sheet_scale = attack.face_px * 1.1 / fw
    v = rng.normal(0, 2, 2)
    for i in range(n_frames):
        warped_scene = scene.copy()
        sm = cv2.resize(cut, None, fx=sheet_scale, fy=sheet_scale)
        sa = cv2.resize(ell, None, fx=sheet_scale, fy=sheet_scale)
        cx, cy = int(FRAME_W / 2 + v[0] * i), int(FRAME_H / 2 + v[1] * i)
        hh, ww = sm.shape[:2]
        ty, tx = cy - hh // 2, cx - ww // 2
        if ty < 0 or tx < 0 or ty + hh > FRAME_H or tx + ww > FRAME_W:
            raise ValueError(f"cut-out of {ww}x{hh} px does not fit the frame at face_px={attack.face_px}")
        a = (sa.astype(np.float32) / 255.0)[..., None]
        roi = warped_scene[ty:ty + hh, tx:tx + ww].astype(np.float32)
        warped_scene[ty:ty + hh, tx:tx + ww] = (roi * (1 - a) + sm * a).astype(np.uint8)
        yield _camera(warped_scene, attack.blur, rng)


def in_frame(photo: np.ndarray, face_box: tuple[float, float, float, float], face_px: int,
             seed: int = 0) -> np.ndarray:
    """A bona fide face photo placed in a 640x480 frame at ``face_px`` face width, the rest of the frame
    filled by reflecting the photo (no hard edge, which would look like a print's border)."""
    x0, _, x1, _ = face_box
    s = face_px / max(1.0, x1 - x0)
    cx, cy = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    m = np.float32([[s, 0, FRAME_W / 2 - s * cx], [0, s, FRAME_H / 2 - s * cy]])
    return cv2.warpAffine(photo, m, (FRAME_W, FRAME_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
