"""Eye centres from an eye-landmark model, for alignment.

BlazeFace gives one point per eye, read off a 128x128 view of the frame: for a face of 100-160 px it is off
by ~8 % of the eye distance (median, against dlib's landmarks), and the embedder's chip moves with it. The
masked face is aligned on the eyes alone, so there the error goes straight into the embedding. MediaPipe's
iris model looks at each eye on its own 64x64 crop (turned so the eyes are level) and draws the eyelids; the
centre of the eyelid contour replaces BlazeFace's point: half the error against an independent landmarker,
and on real-masked-dev a third more bare and nearly half more masked walk-ups granted at the same stranger
rate (docs/accuracy.md).

A refined eye that lands far from BlazeFace's point (an eye hidden by hair, a hand, a reflection on glasses)
is not trusted: BlazeFace's point is kept for it.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_app.vision.detector import check_frame
from edge_app.vision.runtime import SideBySide, TFLiteModel

INPUT = 64
EYELID_POINTS = 16  # the first 16 of the model's 71 contour points outline the eyelids
CONTOUR_VALUES = 71 * 3
IRIS_VALUES = 5 * 3


def _contour_output(model: TFLiteModel) -> int:
    shape = tuple(model.input.shape)
    if shape != (1, INPUT, INPUT, 3) or model.input.dtype != np.float32:
        raise ValueError(f"{model.path.name}: not an eye-landmark input (1, 64, 64, 3) float32: "
                         f"{shape} {model.input.dtype}")
    sizes = sorted(int(np.prod(o.shape)) for o in model.outputs)
    if sizes != [IRIS_VALUES, CONTOUR_VALUES]:
        raise ValueError(f"{model.path.name}: expected outputs of {IRIS_VALUES} and {CONTOUR_VALUES} values, "
                         f"got {sizes}")
    return next(i for i, o in enumerate(model.outputs) if int(np.prod(o.shape)) == CONTOUR_VALUES)


class EyeLandmarks:
    """MediaPipe Iris on RGB uint8 frames: ``refine(frame, keypoints) -> keypoints`` with better eyes.

    With ``side_model`` (a second interpreter of the same model) the eye on the image's right is looked at on a
    worker thread ("eyes_0") while the other is on the caller's: with one thread each, the two eyes take
    3.8 -> 3.3 ms per face in the pipeline here, against one interpreter of two threads. Same points."""

    def __init__(self, model: TFLiteModel, crop: float = 1.0, max_shift: float = 0.3,
                 side_model: TFLiteModel | None = None) -> None:
        self._contour = _contour_output(model)
        if side_model is not None and _contour_output(side_model) != self._contour:
            raise ValueError(f"{side_model.path.name}: not the same eye-landmark model as {model.path.name}")
        if not 0.5 <= crop <= 2.0 or not 0.0 < max_shift <= 1.0:
            raise ValueError(f"crop is an eye-crop side / eye distance in [0.5, 2], max_shift a share of the eye "
                             f"distance in (0, 1]; got {crop}, {max_shift}")
        self.model = model
        self.side_model = side_model
        self.crop = crop  # side of each eye's crop / the eye distance
        self.max_shift = max_shift  # a refined eye further than this x the eye distance is not trusted
        self._side = SideBySide("eyes", 1)  # its thread starts on first use, so only with a side model

    def eyelids(self, frame: np.ndarray, centre: np.ndarray, angle: float, side: float,
                mirror: bool) -> np.ndarray:
        """The 16 eyelid points (frame px) of the eye on a square of ``side`` px about ``centre``, turned by
        ``angle`` (radians, the eye line's); ``mirror`` for the eye on the image's right (the model was made
        for the other one)."""
        return self._eyelids(self.model, frame, centre, angle, side, mirror)

    def _eyelids(self, model: TFLiteModel, frame: np.ndarray, centre: np.ndarray, angle: float, side: float,
                 mirror: bool) -> np.ndarray:
        s = INPUT / side
        c, si = np.cos(angle) * s, np.sin(angle) * s
        # Frame -> crop: turn by -angle about the eye, scale, eye to the crop's centre.
        m = np.array([[c, si, 0.0], [-si, c, 0.0]])
        m[:, 2] = INPUT / 2 - m[:, :2] @ centre
        crop = cv2.warpAffine(frame, m, (INPUT, INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if mirror:
            crop = crop[:, ::-1]
        out = model.run((crop.astype(np.float32) / 255.0)[None])[self._contour]
        pts = out.reshape(-1, 3)[:EYELID_POINTS, :2].astype(np.float64)
        if mirror:
            pts[:, 0] = INPUT - pts[:, 0]
        back = cv2.invertAffineTransform(m)
        return np.asarray(pts @ back[:, :2].T + back[:, 2])

    def refine(self, frame: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """BlazeFace keypoints (6, 2) -> the same with each eye at its eyelid contour's centre when that lies
        within max_shift x the eye distance of BlazeFace's point."""
        check_frame(frame)
        kp = np.asarray(keypoints, np.float64)
        right, left = kp[0], kp[1]  # subject's right eye: on the image's left
        d = left - right
        dist = float(np.hypot(*d))
        out = np.array(keypoints, np.float32, copy=True)
        if dist < 4.0:  # an eye of a pixel or two: nothing to refine
            return out
        angle = float(np.arctan2(d[1], d[0]))
        side = self.crop * dist
        if self.side_model is None:
            lids = [self.eyelids(frame, kp[0], angle, side, False), self.eyelids(frame, kp[1], angle, side, True)]
        else:
            other = self.side_model
            lids = self._side.run(lambda: self.eyelids(frame, kp[0], angle, side, False),
                                  lambda: self._eyelids(other, frame, kp[1], angle, side, True))
        for i, pts in enumerate(lids):
            centre = pts.mean(axis=0)
            if np.hypot(*(centre - kp[i])) <= self.max_shift * dist:
                out[i] = centre
        return out
