"""Measure where BlazeFace's keypoints fall in dlib's face chip, on real faces.

For every face found by both dlib (HOG + 5 landmarks) and BlazeFace, the BlazeFace eyes, nose
tip and mouth centre are mapped into dlib's 150x150 chip with dlib's own image->chip transform.
Their mean over the calibration half is the template our aligner uses. On the held-apart half,
chips cut by our aligner are compared with dlib's chips through dlib's own descriptor, which
isolates the alignment error from the quantization error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.vision.align import TEMPLATE_POINTS, ChipGeometry, align
from edge_app.vision.detector import Detection, FaceDetector

from .dlib_ref import CHIP_SIZE, DlibFace, DlibReference
from .faces import is_held_apart, iter_faces


@dataclass
class Pair:
    source: str
    held_apart: bool
    rgb: np.ndarray
    dlib: DlibFace
    blaze: Detection
    chip_points: np.ndarray  # (4, 2) BlazeFace points in dlib chip coordinates


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / area if area > 0 else 0.0


def collect_pairs(ref: DlibReference, detector: FaceDetector, files: list[Path]) -> list[Pair]:
    """Faces seen by both detectors (one-to-one by box overlap)."""
    pairs = []
    for path, rgb, dfaces in iter_faces(ref, files, "align pairs"):
        if not dfaces:
            continue
        blaze = detector.detect(rgb)
        held = is_held_apart(path)
        for df in dfaces:
            match = [b for b in blaze if _overlap(df.rect, b.box) > 0.5]
            if len(match) != 1:
                continue
            kp = match[0].keypoints[: len(TEMPLATE_POINTS)].astype(np.float64)
            pts = np.hstack([kp, np.ones((len(kp), 1))]) @ df.image_to_chip.T
            pairs.append(Pair(path.name, held, rgb, df, match[0], pts))
    return pairs


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def calibrate(ref: DlibReference, pairs: list[Pair]) -> tuple[ChipGeometry, dict[str, Any]]:
    calib = np.array([p.chip_points for p in pairs if not p.held_apart])
    if len(calib) < 20:
        raise RuntimeError(f"only {len(calib)} calibration faces; need at least 20")
    template = calib.mean(0)
    geom = ChipGeometry(CHIP_SIZE, template)
    report: dict[str, Any] = {
        "faces_calibration": len(calib),
        "template": {name: [round(float(v), 3) for v in template[i]] for i, name in enumerate(TEMPLATE_POINTS)},
        "template_point_std_px": [round(float(v), 2) for v in calib.std(0).mean(1)],
    }
    held = [p for p in pairs if p.held_apart]
    for mode, eyes_only in (("eyes_only", True), ("eyes_nose_mouth", False)):
        cos = [_cos(ref.descriptor(align(p.rgb, p.blaze.keypoints, geom, eyes_only)),
                    ref.descriptor(p.dlib.chip)) for p in held]
        report[f"dlib_descriptor_cosine_{mode}"] = {
            "faces": len(cos), "min": round(min(cos), 4), "median": round(float(np.median(cos)), 4),
            "mean": round(float(np.mean(cos)), 4)}
    return geom, report
