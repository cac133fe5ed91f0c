"""Passive RGB presentation-attack detection: is the face in front of the camera live, or a photo
or screen held up to it?

Two MiniFASNet networks (Silent-Face-Anti-Spoofing, Apache-2.0), each on its own crop of the
frame: the detector's face box scaled 2.7x (resp. 4.0x) about its centre (less when the frame
is too small for that), shifted to stay inside the frame, resized to 80x80, BGR raw 0..255. The
wide crops show what surrounds the face: the edge of a sheet of paper, a phone's bezel, the
moiré and glare of a screen. Each network gives 3-class logits (class 1 = real face); the
softmaxes of both are averaged and p(live) is the averaged class-1 probability.

Second, independent cue (optional): a photo or a screen moves as one plane, so the face's
keypoints across frames fit a homography to within the detector's jitter; a live head that
turns or nods does not (``planar_residual``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

from edge_app.vision.detector import check_frame
from edge_app.vision.runtime import SideBySide, TFLiteModel

Box = tuple[float, float, float, float]
REAL_CLASS = 1
CROP = 80


def crop_box(box: Box, scale: float, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """Inclusive pixel rectangle (x0, y0, x1, y1): ``box`` (x0, y0, x1, y1) scaled about its centre,
    the scale lowered until it fits the frame, then shifted (not cut) to lie inside the frame."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw <= 0 or bh <= 0:
        raise ValueError(f"empty face box {box}")
    if frame_w < 2 or frame_h < 2:
        raise ValueError(f"frame too small: {frame_w}x{frame_h}")
    scale = min((frame_h - 1) / bh, (frame_w - 1) / bw, scale)
    w, h = bw * scale, bh * scale
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if x0 < 0:
        x1, x0 = x1 - x0, 0.0
    if y0 < 0:
        y1, y0 = y1 - y0, 0.0
    if x1 > frame_w - 1:
        x0, x1 = x0 - (x1 - frame_w + 1), float(frame_w - 1)
    if y1 > frame_h - 1:
        y0, y1 = y0 - (y1 - frame_h + 1), float(frame_h - 1)
    return int(max(0.0, x0)), int(max(0.0, y0)), int(x1), int(y1)


def crop(frame_rgb: np.ndarray, box: Box, scale: float, size: int = CROP) -> np.ndarray:
    """The network's input: BGR uint8 (size, size, 3) cut from an RGB frame."""
    check_frame(frame_rgb)
    h, w = frame_rgb.shape[:2]
    x0, y0, x1, y1 = crop_box(box, scale, w, h)
    patch = cv2.resize(frame_rgb[y0:y1 + 1, x0:x1 + 1], (size, size))
    return np.ascontiguousarray(patch[:, :, ::-1])  # the networks were trained on OpenCV's BGR


@dataclass(frozen=True)
class LivenessNet:
    model: TFLiteModel
    scale: float  # face box scale of its crop

    def __post_init__(self) -> None:
        shape = self.model.input.shape
        if shape != (1, CROP, CROP, 3) or self.model.input.dtype != np.float32:
            raise ValueError(f"{self.model.path.name}: expected a float32 input of 1x{CROP}x{CROP}x3, got "
                             f"{np.dtype(self.model.input.dtype)} {shape}")
        if len(self.model.outputs) != 1 or int(np.prod(self.model.outputs[0].shape)) != 3:
            raise ValueError(f"{self.model.path.name}: expected one output of 3 logits, "
                             f"got {[o.shape for o in self.model.outputs]}")
        if not 1.0 <= self.scale <= 10.0:
            raise ValueError(f"{self.model.path.name}: crop scale must be in [1, 10], got {self.scale}")

    def logits(self, crop_bgr: np.ndarray) -> np.ndarray:
        return self.model.run(crop_bgr.astype(np.float32)[None])[0].reshape(3)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return np.asarray(e / e.sum())


class LivenessChecker:
    """Face box in an RGB frame -> p(live), the mean of the networks' class-1 softmax.

    With ``parallel`` the networks after the first run on worker threads ("liveness_N") while the first runs
    on the caller's: each uses one thread and TFLite lets go of the GIL while it runs, so two take the time
    of one (4.2 -> 2.9 ms per face in the pipeline on this machine's 2 cores). Same results either way."""

    def __init__(self, nets: Sequence[LivenessNet], parallel: bool = True) -> None:
        if not nets:
            raise ValueError("liveness needs at least one network")
        self.nets = tuple(nets)
        self._side = SideBySide("liveness", len(self.nets) - 1) if parallel and len(self.nets) > 1 else None

    @staticmethod
    def _score(net: LivenessNet, frame_rgb: np.ndarray, box: Box) -> float:
        return float(softmax(net.logits(crop(frame_rgb, box, net.scale)))[REAL_CLASS])

    def scores(self, frame_rgb: np.ndarray, box: Box) -> list[float]:
        """p(live) of each network, in order."""
        if self._side is None:
            return [self._score(n, frame_rgb, box) for n in self.nets]
        check_frame(frame_rgb)  # a bad frame fails here, before any work is handed out
        first, *rest = (partial(self._score, n, frame_rgb, box) for n in self.nets)
        return self._side.run(first, *rest)

    @property
    def parallel(self) -> bool:
        return self._side is not None

    def probability(self, frame_rgb: np.ndarray, box: Box) -> float:
        s = self.scores(frame_rgb, box)
        return sum(s) / len(s)


def planar_residual(tracks: Sequence[np.ndarray]) -> float | None:
    """How far a face's keypoints over several frames are from moving as one plane.

    ``tracks``: keypoints (K, 2) of the same face per frame, K >= 5. Each later frame is fitted
    from the first by a homography (least squares); the result is the largest RMS residual, in units
    of the first frame's eye distance. A photo or a screen (a plane) stays near the detector's jitter;
    a head turning in 3D does not. None when there are fewer than 2 frames."""
    if len(tracks) < 2:
        return None
    first = np.asarray(tracks[0], np.float64)
    if first.ndim != 2 or first.shape[1] != 2 or len(first) < 5:
        raise ValueError(f"keypoints must be (K>=5, 2), got {first.shape}")
    eye = float(np.linalg.norm(first[0] - first[1])) or 1.0
    worst = 0.0
    for pts in tracks[1:]:
        p = np.asarray(pts, np.float64)
        if p.shape != first.shape:
            raise ValueError(f"keypoints of every frame must be {first.shape}, got {p.shape}")
        hmat, _ = cv2.findHomography(first, p, 0)
        if hmat is None:
            return float("inf")
        proj = cv2.perspectiveTransform(first[None], hmat)[0]
        worst = max(worst, float(np.sqrt(((proj - p) ** 2).sum(1).mean())) / eye)
    return worst
