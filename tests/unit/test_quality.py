from __future__ import annotations

import cv2
import numpy as np

from edge_app.vision.quality import QualityConfig, assess, pose


def test_frontal_portrait_passes(pipeline, rgb):
    face = pipeline.process(rgb("obama.jpg"))[0]
    assert face.quality.passed, face.quality
    assert abs(face.quality.yaw) < 0.2 and abs(face.quality.roll_deg) < 10


def test_blur_dark_and_small_faces_fail_with_named_reasons(pipeline, rgb):
    face = pipeline.process(rgb("obama.jpg"))[0]
    kps = face.detection.keypoints
    cfg = QualityConfig()
    blurred = cv2.GaussianBlur(face.chip, (0, 0), 4)
    assert "blurry" in assess(blurred, kps, cfg).reasons
    dark = (face.chip * 0.15).astype(np.uint8)
    assert "too_dark" in assess(dark, kps, cfg).reasons
    bright = np.full_like(face.chip, 252)
    r = assess(bright, kps, cfg).reasons
    assert "too_bright" in r and "clipped" in r
    assert "too_small" in assess(face.chip, kps * 0.05, cfg).reasons


def test_pose_from_keypoints():
    kps = np.zeros((6, 2), np.float32)
    kps[0], kps[1], kps[2] = (40, 50), (100, 50), (70, 80)
    eye, yaw, roll = pose(kps)
    assert eye == 60 and abs(yaw) < 1e-6 and roll == 0
    kps[2] = (100, 80)  # nose under the left eye: strongly turned
    assert pose(kps)[1] == 0.5
    kps[1] = (100, 110)  # head tilted 45 degrees
    assert round(pose(kps)[2]) == 45
