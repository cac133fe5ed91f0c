"""Eye centres from the eye-landmark model (edge_app/vision/eyes.py) on real faces, masked and bare."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.errors import ModelError
from edge_app.imageio import read_image
from edge_app.models import ModelSet
from edge_app.vision.align import align
from edge_app.vision.eyes import EyeLandmarks
from tests.conftest import DATA, edit_manifest


@pytest.fixture(scope="session")
def eyes(model_set) -> EyeLandmarks:  # type: ignore[no-untyped-def]
    return EyeLandmarks(model_set.load("eye_landmarks", 1))


@pytest.fixture(scope="session")
def shape5():  # type: ignore[no-untyped-def]
    import dlib
    import face_recognition_models

    return dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())


def _faces() -> list[Path]:
    root = DATA / "real-masked-dev"
    people = sorted(p for p in root.iterdir() if p.is_dir())[::3]
    return [f for p in people for kind in ("unmasked", "masked") for f in sorted((p / kind).glob("*.jpg"))[:2]]


def _dlib_eyes(shape5, img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib's 5-point model, an independent landmarker: each eye's centre = the midpoint of its corners."""
    import dlib

    x0, y0, x1, y1 = box
    s = shape5(img, dlib.rectangle(int(x0), int(y0), int(x1), int(y1)))
    p = np.array([[s.part(i).x, s.part(i).y] for i in range(4)], np.float64)
    return np.array(sorted([p[0:2].mean(0), p[2:4].mean(0)], key=lambda e: e[0]))


def test_refined_eyes_agree_with_an_independent_landmarker_better(pipeline, eyes, shape5):
    """On real 160 px web crops, bare and masked, upright and turned by 20 degrees: the eyelid centres lie
    closer to dlib's eye-corner midpoints than BlazeFace's eye points do (median error 0.078 -> 0.043 eye
    distances; 0.052 when the eye on the right is not mirrored for the model)."""
    before, after = [], []
    for f in _faces():
        img = read_image(f)
        for degrees in (0.0, 20.0):
            if degrees:
                h, w = img.shape[:2]
                img = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h),
                                     borderMode=cv2.BORDER_REPLICATE)
            dets = pipeline.detector.detect(img)
            if not dets:
                continue
            kp = dets[0].keypoints
            ref = _dlib_eyes(shape5, img, dets[0].box)
            dist = float(np.linalg.norm(ref[1] - ref[0]))
            before.append(np.linalg.norm(kp[:2] - ref, axis=1).mean() / dist)
            after.append(np.linalg.norm(eyes.refine(img, kp)[:2] - ref, axis=1).mean() / dist)
    assert len(before) >= 40
    assert np.median(after) < 0.62 * np.median(before), (np.median(before), np.median(after))


def test_an_eye_it_cannot_see_keeps_the_detector_point(pipeline, eyes):
    """No eye where the points say (a blank frame; points on a cheek): nothing moves further than
    max_shift x the eye distance, and the other keypoints are untouched."""
    kp = np.array([[60, 70], [100, 70], [80, 95], [80, 115], [40, 75], [120, 75]], np.float32)
    for frame in (np.full((160, 160, 3), 128, np.uint8), read_image(DATA / "faces-dev" / "obama.jpg")):
        out = eyes.refine(frame, kp)
        assert np.array_equal(out[2:], kp[2:])
        assert (np.linalg.norm(out[:2] - kp[:2], axis=1) <= eyes.max_shift * 40 + 1e-3).all(), out[:2]
    tiny = kp.copy()
    tiny[1] = tiny[0] + [2, 0]  # eyes two pixels apart: returned as they are
    assert np.array_equal(eyes.refine(np.zeros((160, 160, 3), np.uint8), tiny), tiny)
    with pytest.raises(ValueError, match="RGB uint8"):
        eyes.refine(np.zeros((160, 160), np.uint8), kp)


def test_eyes_side_by_side_give_the_same_points(model_set, pipeline, eyes):
    """The pipeline's refiner looks at the two eyes on two threads; the points are those of one interpreter
    looking at them in turn."""
    import threading

    side = pipeline.eyes
    assert side is not None and side.side_model is not None
    for f in _faces()[:12]:
        img = read_image(f)
        found = pipeline.detector.detect(img)
        if found:
            kp = max(found, key=lambda d: d.width).keypoints
            assert np.array_equal(side.refine(img, kp), eyes.refine(img, kp)), f.name
    assert any(t.name.startswith("eyes") for t in threading.enumerate())


def test_a_wrong_model_or_setting_is_named(model_set):
    with pytest.raises(ValueError, match=r"face_detector\.tflite: not an eye-landmark input"):
        EyeLandmarks(model_set.load("face_detector", 1))
    with pytest.raises(ValueError, match=r"face_detector\.tflite: not an eye-landmark input"):
        EyeLandmarks(model_set.load("eye_landmarks", 1), side_model=model_set.load("face_detector", 1))
    with pytest.raises(ValueError, match="max_shift"):
        EyeLandmarks(model_set.load("eye_landmarks", 1), max_shift=0.0)


def test_the_pipeline_aligns_on_refined_eyes_and_runs_without_the_model(models_copy, caplog):
    ms = ModelSet()
    assert ms.info("eye_landmarks").entry["licence"] == "Apache-2.0"
    img = read_image(DATA / "faces-dev" / "obama.jpg")
    with_eyes, without = ms.pipeline().process(img)[0], ms.pipeline(eyes=False).process(img)[0]
    # Same face, same box; only the eye points moved (a few percent of the eye distance on a sharp photo), and
    # the chip is cut at them.
    assert with_eyes.detection.box == without.detection.box
    kp, refined = without.detection.keypoints, with_eyes.detection.keypoints
    assert np.array_equal(refined[2:], kp[2:])
    assert np.array_equal(with_eyes.chip, align(img, refined, ms.chip_geometry(), eyes_only=False))
    assert not np.array_equal(with_eyes.chip, without.chip)
    moved = np.linalg.norm(refined[:2] - kp[:2], axis=1)
    dist = float(np.linalg.norm(kp[1] - kp[0]))
    assert (moved > 0).all() and (moved < 0.2 * dist).all(), moved / dist
    dst = models_copy
    (dst / "eye_landmarks.tflite").unlink()
    with pytest.raises(ModelError, match=r"model file not found: .*eye_landmarks\.tflite"):
        ModelSet(dst).pipeline()
    edit_manifest(dst, lambda m: m["models"].pop("eye_landmarks"))
    with caplog.at_level(logging.WARNING, logger="edge_app.models"):
        pipe = ModelSet(dst).pipeline()
    assert pipe.eyes is None and "eye_landmarks" in caplog.text
    assert np.array_equal(pipe.process(img)[0].chip, without.chip)
