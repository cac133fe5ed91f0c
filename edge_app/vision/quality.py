"""Quality gates: is this face good enough to decide on (or to enrol)?

Measured on the aligned chip and the detector keypoints, so each costs well under a millisecond.
A face that fails a gate is still reported (it may be shown or tracked) but never matched for a
door decision; the reasons say which gate failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class QualityConfig:
    min_eye_distance: float = 24.0  # px between eye centres in the frame
    min_sharpness: float = 25.0  # variance of the Laplacian on the chip's centre
    max_yaw: float = 0.45  # |nose offset from eye midpoint| / eye distance
    max_roll_deg: float = 35.0
    min_brightness: float = 40.0  # mean grey level of the chip's centre
    max_brightness: float = 215.0
    max_clipped: float = 0.25  # fraction of centre pixels at 0-5 or 250-255


@dataclass(frozen=True)
class Quality:
    eye_distance: float
    sharpness: float
    yaw: float
    roll_deg: float
    brightness: float
    clipped: float
    reasons: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, float | bool | list[str]]:
        return {"eye_distance": round(self.eye_distance, 1), "sharpness": round(self.sharpness, 1),
                "yaw": round(self.yaw, 3), "roll_deg": round(self.roll_deg, 1),
                "brightness": round(self.brightness, 1), "clipped": round(self.clipped, 3),
                "passed": self.passed, "reasons": list(self.reasons)}


def pose(keypoints: np.ndarray) -> tuple[float, float, float]:
    """Eye distance (px), yaw ratio and roll (degrees) from BlazeFace keypoints."""
    right_eye, left_eye, nose = keypoints[0], keypoints[1], keypoints[2]
    d = left_eye - right_eye
    eye_distance = float(np.hypot(*d))
    roll = float(np.degrees(np.arctan2(d[1], d[0])))
    if eye_distance < 1e-6:
        return 0.0, 1.0, roll
    # Project the nose onto the eye line: 0 when frontal, +-0.5 at about 45 degrees of yaw.
    mid = (left_eye + right_eye) / 2
    yaw = float(np.dot(nose - mid, d) / eye_distance ** 2)
    return eye_distance, yaw, roll


def assess(chip: np.ndarray, keypoints: np.ndarray, cfg: QualityConfig, masked: bool = False) -> Quality:
    """Gates of one face. For a masked face the photometric gates (sharpness, brightness, clipping) look at the
    eye band only: a white or black mask fills the lower half of the chip's centre and alone failed 10 of 182
    real masked crops of real-masked-dev as too bright, too dark or clipped, though their eyes were fine."""
    eye_distance, yaw, roll = pose(keypoints)
    h, w = chip.shape[:2]
    # The centre half of the chip is the face itself; the border is hair and background. Under a mask, its
    # upper half: brows and eyes, above the mask.
    bottom = h // 2 if masked else 3 * h // 4
    centre = cv2.cvtColor(chip[h // 4: bottom, w // 4: 3 * w // 4], cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    brightness = float(centre.mean())
    clipped = float(((centre <= 5) | (centre >= 250)).mean())
    reasons = []
    if eye_distance < cfg.min_eye_distance:
        reasons.append("too_small")
    if abs(yaw) > cfg.max_yaw:
        reasons.append("yaw")
    if abs(roll) > cfg.max_roll_deg:
        reasons.append("roll")
    if sharpness < cfg.min_sharpness:
        reasons.append("blurry")
    if brightness < cfg.min_brightness:
        reasons.append("too_dark")
    elif brightness > cfg.max_brightness:
        reasons.append("too_bright")
    if clipped > cfg.max_clipped:
        reasons.append("clipped")
    return Quality(eye_distance, sharpness, yaw, roll, brightness, clipped, tuple(reasons))
