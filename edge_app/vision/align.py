"""Face alignment: a similarity transform from detector keypoints to the embedder's chip.

The chip geometry is dlib's get_face_chip(size=150, padding=0.25), the geometry dlib's ResNet
was trained on. BlazeFace gives other points than dlib's 5-point predictor (eye centres, nose
tip, mouth centre instead of eye corners and nose base), so the template positions of those
points in dlib's chip were measured on real faces by scripts/build_models.py and ship in
MANIFEST.json (embedder.input.chip_template).

Masked faces hide the nose and mouth, so alignment can use the eyes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Index of each template point in BlazeFace's keypoint order.
TEMPLATE_POINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center")


@dataclass(frozen=True)
class ChipGeometry:
    size: int
    template: np.ndarray  # (4, 2) chip pixel positions of TEMPLATE_POINTS

    def __post_init__(self) -> None:
        t = np.asarray(self.template, np.float64)
        if t.shape != (len(TEMPLATE_POINTS), 2) or not np.all(np.isfinite(t)):
            raise ValueError(f"chip template must be {len(TEMPLATE_POINTS)}x2 finite, got shape {t.shape}")
        object.__setattr__(self, "template", t)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    src points onto dst points (Umeyama 1991). Returns a 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("degenerate keypoints: all points coincide")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / var_s
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def chip_transform(keypoints: np.ndarray, geometry: ChipGeometry, eyes_only: bool) -> np.ndarray:
    """2x3 frame->chip transform from BlazeFace keypoints (6, 2)."""
    kps = np.asarray(keypoints, np.float64)
    n = 2 if eyes_only else len(TEMPLATE_POINTS)
    return similarity_transform(kps[:n], geometry.template[:n])


def warp_chip(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Cut the chip out of the frame. Large downscales first shrink the face region with area
    averaging: a bilinear warp alone aliases (dlib's extract_image_chip does the same)."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale >= 0.75:
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    h, w = frame.shape[:2]
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 2, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 2, 0, h))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 2, 0, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 2, 0, h))
    if x1 - x0 < 2 or y1 - y0 < 2:  # face entirely off-frame: nothing to average
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    roi = frame[y0:y1, x0:x1]
    rw, rh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
    fx, fy = rw / (x1 - x0), rh / (y1 - y0)
    # chip = m @ frame = m @ (S^-1 @ small + offset)
    back = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]], np.float64)
    m_small = m @ back
    return cv2.warpAffine(small, m_small, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def align(frame: np.ndarray, keypoints: np.ndarray, geometry: ChipGeometry,
          eyes_only: bool = False) -> np.ndarray:
    """RGB uint8 frame + BlazeFace keypoints -> RGB uint8 chip (size, size, 3)."""
    m = chip_transform(keypoints, geometry, eyes_only)
    return warp_chip(frame, m, geometry.size)
