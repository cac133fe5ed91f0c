"""Synthetic face masks drawn onto real face photos, placed from the 6 BlazeFace keypoints.

Used to make masked training and test faces from unmasked ones. The outline is built in a
face-local frame (origin at the eye midpoint, x along the eye line, y perpendicular and down,
unit = eye distance), so it follows roll and scale; its lateral extent comes from the ear points
(tragions), which move toward the nose as the head turns, so it follows yaw.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MASK_KINDS: tuple[str, ...] = ("surgical", "n95", "kn95", "cloth")
PATTERNS: tuple[str, ...] = ("plain", "stripes", "dots", "checks")

_RANGES = {"top": (0.2, 0.95), "width": (0.6, 1.3), "chin": (0.3, 1.2)}
# Per kind: exponent of the top edge (1 = V over the nose, higher = flatter) and of the
# superellipse of the lower outline (2 = ellipse, higher = squarer jaw).
_SHAPE = {"surgical": (1.4, 2.6), "n95": (1.7, 2.1), "kn95": (1.0, 1.9), "cloth": (1.5, 2.3)}

_RGB = tuple[int, int, int]
_PALETTES: dict[str, list[tuple[float, _RGB]]] = {
    "surgical": [(0.45, (140, 185, 220)), (0.2, (236, 238, 240)), (0.25, (34, 35, 38)), (0.1, (232, 176, 192))],
    "n95": [(0.75, (238, 236, 228)), (0.25, (170, 173, 176))],
    "kn95": [(0.65, (240, 240, 238)), (0.35, (30, 30, 33))],
    "cloth": [(0.25, (30, 30, 32)), (0.15, (40, 52, 92)), (0.1, (120, 122, 128)), (0.1, (165, 40, 48)),
              (0.1, (200, 180, 150)), (0.1, (70, 110, 82)), (0.1, (82, 112, 152)), (0.1, (225, 160, 180))],
}
_KIND_WEIGHTS = (0.4, 0.15, 0.15, 0.3)
_EYE_CLEARANCE = 0.3


@dataclass(frozen=True)
class MaskStyle:
    kind: str  # one of MASK_KINDS
    colour: tuple[int, int, int]  # RGB base colour
    pattern: str  # one of PATTERNS; anything but "plain" only for cloth
    pattern_colour: tuple[int, int, int]
    top: float  # top edge on the nose: 0 = eye line, 1 = nose tip
    width: float  # fraction of the way from the face midline to each ear point
    chin: float  # bottom edge below the mouth, in eye-to-mouth distances

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"MaskStyle.kind must be one of {MASK_KINDS}, got {self.kind!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"MaskStyle.pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.pattern != "plain" and self.kind != "cloth":
            raise ValueError(f"MaskStyle.pattern {self.pattern!r} is only for cloth masks, not {self.kind!r}")
        for name in ("colour", "pattern_colour"):
            c = getattr(self, name)
            if len(c) != 3 or not all(isinstance(v, int | np.integer) and 0 <= v <= 255 for v in c):
                raise ValueError(f"MaskStyle.{name} must be 3 ints in 0..255, got {c!r}")
        for name, (lo, hi) in _RANGES.items():
            v = getattr(self, name)
            if not lo <= v <= hi:  # also rejects NaN
                raise ValueError(f"MaskStyle.{name} must be in [{lo}, {hi}], got {v!r}")


def random_style(rng: np.random.Generator, kind: str | None = None) -> MaskStyle:
    """A style drawn from a rough guess of what people wear: mostly surgical and cloth masks."""
    if kind is None:
        kind = MASK_KINDS[int(rng.choice(len(MASK_KINDS), p=_KIND_WEIGHTS))]
    elif kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")

    def pick(palette: list[tuple[float, _RGB]]) -> _RGB:
        w = np.array([p for p, _ in palette])
        base = np.array(palette[int(rng.choice(len(palette), p=w / w.sum()))][1])
        # Mostly a brightness change: per-channel jitter on a near-black turns it maroon or green.
        c = np.clip(base + rng.integers(-12, 13) + rng.integers(-3, 4, 3), 0, 255)
        return (int(c[0]), int(c[1]), int(c[2]))

    colour = pick(_PALETTES[kind])
    pattern, pattern_colour = "plain", colour
    if kind == "cloth":
        pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=(0.4, 0.2, 0.2, 0.2)))]
        # Contrast with the base: light patterns on dark cloth and vice versa.
        light = sum(colour) > 3 * 128
        pattern_colour = pick([(1.0, (30, 30, 35)), (0.5, (150, 40, 50))] if light
                              else [(1.0, (235, 235, 230)), (0.5, (210, 190, 120))])
    return MaskStyle(kind, colour, pattern, pattern_colour, top=float(rng.uniform(0.4, 0.8)),
                     width=float(rng.uniform(0.88, 1.02)), chin=float(rng.uniform(0.6, 0.85)))


@dataclass(frozen=True)
class _Geometry:
    origin: np.ndarray  # eye midpoint, px
    basis: np.ndarray  # rows: local x and y axes in image coordinates, scaled to px per unit
    top_y: float
    bridge_x: float
    right_x: float
    left_x: float
    corner_y: float
    chin_x: float
    chin_y: float
    ears: np.ndarray  # (2, 2) local
    top_exp: float
    bottom_exp: float

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(self.origin + pts @ self.basis, np.float64)

    def top_edge(self, u: np.ndarray) -> np.ndarray:
        s = np.where(u < self.bridge_x, (self.bridge_x - u) / (self.bridge_x - self.right_x),
                     (u - self.bridge_x) / (self.left_x - self.bridge_x))
        y = self.top_y + (self.corner_y - self.top_y) * np.clip(s, 0, 1) ** self.top_exp
        # A mask rests on the cheekbones, never on the eyes: keep 0.3 eye distances from each eye (+-0.5, 0).
        clearance = np.sqrt(np.clip(_EYE_CLEARANCE**2 - (np.abs(u) - 0.5) ** 2, 0, None))
        return np.asarray(np.maximum(y, clearance))

    def lower(self, theta: np.ndarray) -> np.ndarray:
        """Side and bottom outline; theta 0 = left top corner, pi/2 = chin, pi = right top corner."""
        c, s = np.cos(theta), np.sin(theta)
        e = 2.0 / self.bottom_exp
        x = self.chin_x + np.where(c >= 0, self.left_x - self.chin_x, self.chin_x - self.right_x) * np.sign(c) * (
            np.abs(c) ** e)
        y = self.corner_y + (self.chin_y - self.corner_y) * np.abs(s) ** e
        return np.stack([x, y], axis=-1)


def _check_keypoints(keypoints: np.ndarray) -> np.ndarray:
    k = np.asarray(keypoints, np.float64)
    if k.shape != (6, 2):
        raise ValueError(f"keypoints must have shape (6, 2), got {k.shape}")
    if not np.all(np.isfinite(k)):
        raise ValueError("keypoints must be finite (got NaN or inf)")
    if float(np.hypot(*(k[1] - k[0]))) < 4.0:
        raise ValueError(f"eye distance must be at least 4 px, got {float(np.hypot(*(k[1] - k[0]))):.2f}")
    return k


def _geometry(keypoints: np.ndarray, style: MaskStyle) -> _Geometry:
    k = _check_keypoints(keypoints)
    origin = (k[0] + k[1]) / 2
    d = k[1] - k[0]
    ex = d / np.hypot(*d)
    basis = np.stack([ex, [-ex[1], ex[0]]]) * np.hypot(*d)  # y = x rotated +90 deg: downwards when upright
    loc = (k - origin) @ np.linalg.inv(basis)
    nose, mouth, r_ear, l_ear = loc[2], loc[3], loc[4], loc[5]
    # Guards keep the outline sane for keypoints from a bad detection.
    nose_y = max(float(nose[1]), 0.2)
    eye_mouth = max(float(mouth[1]), nose_y + 0.1)
    mid = float(nose[0] + mouth[0]) / 2
    right_x = min(mid + style.width * (float(r_ear[0]) - mid), mid - 0.25)
    left_x = max(mid + style.width * (float(l_ear[0]) - mid), mid + 0.25)
    top_y = style.top * nose_y
    # Top corners: below the tragions and clear of the eyes, so the cheeks are covered but not the lower lids.
    corner_y = min(max(top_y + 0.18, float(r_ear[1] + l_ear[1]) / 2 + 0.18), eye_mouth - 0.05)
    top_exp, bottom_exp = _SHAPE[style.kind]
    return _Geometry(origin, basis, top_y, style.top * float(nose[0]), right_x, left_x, corner_y, float(mouth[0]),
                     eye_mouth + style.chin * eye_mouth, np.stack([r_ear, l_ear]), top_exp, bottom_exp)


def _outline_local(g: _Geometry, n: int = 12) -> np.ndarray:
    right = np.linspace(g.right_x, g.bridge_x, n, endpoint=False)
    left = np.linspace(g.bridge_x, g.left_x, n + 1)
    u = np.concatenate([right, left])
    top = np.stack([u, g.top_edge(u)], axis=1)  # right corner -> bridge -> left corner
    lower = g.lower(np.linspace(0, np.pi, 2 * n + 1)[1:-1])  # left side -> chin -> right side
    return np.concatenate([top, lower])


def mask_polygon(keypoints: np.ndarray, style: MaskStyle) -> np.ndarray:
    """(N, 2) float32 outline in image pixels: over the nose bridge, out to the ears, under the chin."""
    g = _geometry(keypoints, style)
    return g.to_image(_outline_local(g)).astype(np.float32)


def _line(dist_px: np.ndarray, width_px: float) -> np.ndarray:
    """Soft line profile, at least ~1 px wide so thin lines stay anti-aliased."""
    return np.asarray(np.exp(-((dist_px / max(width_px, 0.7)) ** 2)))


def _pattern(style: MaskStyle, u: np.ndarray, v: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
    """Weight of the pattern colour (0..1), in face-local units so it turns and scales with the face."""
    period = float(rng.uniform(0.16, 0.26))
    if style.pattern == "stripes":
        angle = float(rng.choice([0.0, np.pi / 4, -np.pi / 4]))
        a = v * np.cos(angle) + u * np.sin(angle)
        edge = (0.25 - np.abs(np.mod(a / period, 1.0) - 0.5)) * period  # signed distance to a stripe edge
    elif style.pattern == "dots":
        row = np.floor(v / period)
        uu = u / period + 0.5 * np.mod(row, 2)  # offset rows: a hex-like grid
        r = np.hypot(np.mod(uu, 1.0) - 0.5, np.mod(v / period, 1.0) - 0.5) * period
        edge = 0.22 * period - r
    else:
        sx = np.clip(0.5 + (0.25 - np.abs(np.mod(u / period, 1.0) - 0.5)) * period * px, 0, 1)
        sy = np.clip(0.5 + (0.25 - np.abs(np.mod(v / period, 1.0) - 0.5)) * period * px, 0, 1)
        return np.asarray(0.5 * (sx + sy))  # gingham: light, mid and dark squares
    return np.asarray(np.clip(0.5 + edge * px, 0, 1))  # 1 px soft edge: no aliasing


def draw_mask(image: np.ndarray, keypoints: np.ndarray, style: MaskStyle | None = None,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """A new RGB uint8 image with a mask drawn on the face; `image` is not modified."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be uint8 HxWx3, got shape {shape} dtype {dtype}")
    rng = rng if rng is not None else np.random.default_rng(0)
    style = style if style is not None else random_style(rng)
    g = _geometry(keypoints, style)
    px = float(np.hypot(*g.basis[0]))  # pixels per local unit (the eye distance)
    out = image.copy()
    outline = _outline_local(g)
    theta_low = np.arccos(0.35)  # lower ear-loop anchor: on the side, about mouth height
    anchors = np.stack([outline[0], outline[2 * 12], *g.lower(np.array([np.pi - theta_low, theta_low]))])
    # Loops run from the mask's corners toward (and slightly past the front of) the ear points.
    loops = [(anchors[0], g.ears[0] + (0.02, -0.03)), (anchors[2], g.ears[0] + (0.02, 0.06)),
             (anchors[1], g.ears[1] + (-0.02, -0.03)), (anchors[3], g.ears[1] + (-0.02, 0.06))]

    # Work in a clipped region of interest: cheap on big photos, and faces at the border cannot crash.
    pts_img = g.to_image(np.concatenate([outline, g.ears]))
    h, w = image.shape[:2]
    margin = 0.1 * px + 4
    x0, y0 = (int(max(0, np.floor(pts_img[:, i].min() - margin))) for i in (0, 1))
    x1, y1 = (int(min(lim, np.ceil(pts_img[:, i].max() + margin))) for i, lim in ((0, w), (1, h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    roi = out[y0:y1, x0:x1].astype(np.float32) / 255.0
    shift = np.array([x0, y0], np.float64)

    def fixed(pts_local: np.ndarray) -> np.ndarray:  # cv2 drawing with 3 fractional bits: sub-pixel AA edges
        return np.round((g.to_image(pts_local) - shift) * 8).astype(np.int32)

    canvas = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillPoly(canvas, [fixed(outline)], 255, cv2.LINE_AA, shift=3)
    alpha = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), 0.6)
    inside = canvas > 127
    if not inside.any():
        return out

    # Per-pixel face-local coordinates.
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    inv = np.linalg.inv(g.basis)
    u = (xs - g.origin[0]) * inv[0, 0] + (ys - g.origin[1]) * inv[1, 0]
    v = (xs - g.origin[0]) * inv[0, 1] + (ys - g.origin[1]) * inv[1, 1]

    # Scene shading: a masked low-pass of the face's own luminance, so the light falls on the mask as it
    # fell on the skin; its mean level (against typical skin) darkens the mask in a dark photo.
    lum = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY).astype(np.float64)
    wgt = inside.astype(np.float64)
    sigma = 0.3 * px
    low = cv2.GaussianBlur(lum * wgt, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(wgt, (0, 0), sigma), 1e-3)
    mean = float(lum[inside].mean())
    exposure = float(np.clip((mean / 0.6) ** 0.6, 0.12, 1.1))
    scene = np.clip(low / max(mean, 1e-3), 0.5, 1.4) * exposure
    # A little of the scene's colour cast (warm indoor light, cold daylight) tints the mask as it would a real one.
    grey = max(float(roi.mean()), 1e-3)
    cast = np.clip(1 + 0.25 * (roi.reshape(-1, 3).mean(0) / grey - 1), 0.93, 1.07)

    # Curvature: the mask wraps round the face, so it darkens toward the sides and under the chin.
    half = np.where(u < g.chin_x, g.chin_x - g.right_x, g.left_x - g.chin_x)
    s = np.clip((u - g.chin_x) / half, -1, 1)
    t = np.clip((v - g.top_y) / (g.chin_y - g.top_y), 0, 1)
    ridge = 0.06 * np.exp(-((u - g.bridge_x) / 0.25) ** 2) * (1 - t)  # highlight along the nose
    # The fabric tents from the nose to the cheeks: a soft shadow on each side of the nose, under the top edge.
    tent = 0.12 * np.exp(-(((np.abs(u - g.bridge_x) - 0.32) / 0.14) ** 2)) * np.exp(-(((v - g.top_y) / 0.3) ** 2))
    curv = (1 - (0.45 if style.kind == "n95" else 0.35) * s**2) * (1.04 - 0.3 * t**2) + ridge - tent

    tex = np.ones_like(u)
    dist = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3).astype(np.float64)  # px from the edge
    if style.kind == "surgical":
        # Three pleats: each band darkens toward its fold, then a dark fold line.
        w0, w1 = g.corner_y - 0.05, g.chin_y - 0.45 * (g.chin_y - g.corner_y)
        pitch = (w1 - w0) / 3
        q = (v - 0.08 * s**2 - w0) / pitch
        in_pleats = (q >= 0) & (q < 3)
        tex *= np.where(in_pleats, 1.05 - 0.12 * np.mod(q, 1.0), 1.0)
        fold = np.abs(q - np.clip(np.round(q), 1, 3)) * pitch * px
        tex *= 1 - 0.3 * _line(fold, 0.012 * px)
        # Nose wire under the top edge, fading out toward the cheeks.
        wire = np.abs(v - g.top_edge(u) - 0.05) * px
        tex *= 1 - 0.16 * _line(wire, 0.015 * px) * np.exp(-(((u - g.bridge_x) / 0.35) ** 4))
        tex *= 1 - 0.12 * _line(dist - 0.06 * px, 0.01 * px)  # edge binding seam
    elif style.kind == "n95":
        tex *= 1 - 0.14 * _line(dist - 0.09 * px, 0.015 * px)  # moulded cup rim
        if rng.random() < 0.4:
            side = float(rng.choice([-1.0, 1.0]))
            cx = g.chin_x + side * 0.45 * (g.left_x - g.chin_x if side > 0 else g.chin_x - g.right_x)
            r = np.hypot(u - cx, v - (g.corner_y + g.chin_y) / 2) * px
            rad = 0.17 * px
            disc = np.clip(rad - r + 0.5, 0, 1)
            tex *= (1 - 0.22 * disc) * (1 - 0.3 * _line(r - rad, 0.02 * px)) * (1 + 0.15 * _line(r, 0.05 * px))
    elif style.kind == "kn95":
        # Vertical centre seam from the bridge to the chin; the two halves meet at an angle.
        frac = np.clip((v - g.top_y) / (g.chin_y - g.top_y), 0, 1)
        off = u - (g.bridge_x + (g.chin_x - g.bridge_x) * frac)
        tex *= (1 - 0.3 * _line(np.abs(off) * px, 0.012 * px)) * (1 + 0.05 * np.tanh(off / 0.05))
        tex *= 1 - 0.12 * _line(dist - 0.05 * px, 0.012 * px)  # welded edge
    colour = np.broadcast_to(np.array(style.colour, np.float64) / 255.0, roi.shape).copy()
    noise_amp = 0.012
    if style.kind == "cloth":
        if style.pattern != "plain":
            p = _pattern(style, u, v, px, rng)[..., None]
            colour = colour * (1 - p) + np.array(style.pattern_colour, np.float64) / 255.0 * p
        noise_amp = 0.025  # woven fabric is grainier
    shade = (tex * curv * scene)[..., None]
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, roi.shape).astype(np.float32), (0, 0), 0.6) * noise_amp * 1.6
    sheen = 0.12 * np.clip(shade - 0.85, 0, None) * exposure  # dark fabric still shows its lit folds
    mask_rgb = np.clip(colour * cast * shade + sheen + noise, 0, 1)

    # Ear loops first, so the mask body covers their ends.
    loop_canvas = np.zeros(roi.shape[:2], np.uint8)
    thick = max(1, round(0.022 * px))
    for a, b in loops:
        ctrl = (a + b) / 2 + (0.0, -0.06)  # slight upward sag toward the ear
        tt = np.linspace(0, 1, 12)[:, None]
        curve = (1 - tt) ** 2 * a + 2 * (1 - tt) * tt * ctrl + tt**2 * b
        cv2.polylines(loop_canvas, [fixed(curve)], False, 255, thick, cv2.LINE_AA, shift=3)
    loop_colour = np.array((236, 236, 236) if style.kind in ("surgical", "n95") and sum(style.colour) > 300
                           else style.colour, np.float64) / 255.0 * exposure * 0.95
    la = (loop_canvas.astype(np.float64) / 255.0)[..., None]
    roi = roi * (1 - la) + loop_colour * la

    # Soft contact shadow on the skin just below the mask (light mostly comes from above).
    down = g.basis[1] * 0.04
    drop = np.array([[1, 0, down[0]], [0, 1, down[1]]], np.float32)
    shadow = cv2.GaussianBlur(cv2.warpAffine(alpha, drop, (alpha.shape[1], alpha.shape[0])), (0, 0), 0.04 * px + 0.5)
    shadow *= np.clip((v - g.corner_y) / 0.1, 0, 1)  # only along the sides and chin: the blur must not reach the eyes
    roi = roi * (1 - 0.3 * np.clip(shadow - alpha, 0, 1))[..., None]
    a3 = alpha[..., None].astype(np.float64)
    roi = roi * (1 - a3) + mask_rgb * a3
    out[y0:y1, x0:x1] = np.clip(np.round(roi * 255.0), 0, 255).astype(np.uint8)
    return out
