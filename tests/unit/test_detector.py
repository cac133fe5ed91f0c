from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_app.vision.detector import FaceDetector, area_shrink, ssd_anchors, weighted_nms

PORTRAITS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]


def test_anchor_counts_match_the_models(pipeline):
    assert len(ssd_anchors(128)) == 896
    assert len(ssd_anchors(192)) == 2304
    assert pipeline.detector.near.anchors.shape == (896, 2)
    assert ((ssd_anchors(128) > 0) & (ssd_anchors(128) < 1)).all()


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_face_per_portrait_agrees_with_dlib(pipeline, dlib_ref, rgb, name):
    img = rgb(name)
    faces = pipeline.detector.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.8
    x0, y0, x1, y1 = f.box
    ref = dlib_ref.faces(img, upsample=0)
    assert len(ref) == 1
    rx0, ry0, rx1, ry1 = ref[0].rect
    # dlib's HOG box is tighter than BlazeFace's, so compare centres and sizes, not IoU.
    assert abs((x0 + x1) / 2 - (rx0 + rx1) / 2) < 0.2 * (rx1 - rx0)
    assert abs((y0 + y1) / 2 - (ry0 + ry1) / 2) < 0.3 * (ry1 - ry0)
    assert 0.8 < (x1 - x0) / (rx1 - rx0) < 1.8
    # Eye keypoints (frame coordinates) sit near dlib's eye-corner midpoints.
    lm = ref[0].landmarks  # 0,1: left eye corners (subject), 2,3: right eye corners
    dlib_left, dlib_right = lm[0:2].mean(0), lm[2:4].mean(0)
    eye_dist = np.linalg.norm(dlib_left - dlib_right)
    assert np.linalg.norm(f.keypoints[0] - dlib_right) < 0.25 * eye_dist
    assert np.linalg.norm(f.keypoints[1] - dlib_left) < 0.25 * eye_dist


def test_group_photo_finds_every_face(pipeline, rgb):
    faces = pipeline.detector.detect(rgb("dlib_2008_002506.jpg"))
    assert len(faces) == 3
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert np.diff(centres).min() > 50  # three distinct people, not one face found three times


def test_keypoints_are_in_frame_coordinates_of_a_letterboxed_tall_image(pipeline, rgb):
    img = rgb("obama2.jpg")  # 1200x626: tall, so the letterbox pads left and right
    f = pipeline.detector.detect(img)[0]
    x0, y0, x1, y1 = f.box
    for x, y in f.keypoints[:4]:  # eyes, nose, mouth lie inside the face box
        assert x0 <= x <= x1 and y0 <= y <= y1


def test_blank_and_noise_frames_have_no_face(pipeline):
    assert pipeline.detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert pipeline.detector.detect(noise) == []


@pytest.mark.parametrize("bad", [np.zeros((480, 640), np.uint8), np.zeros((480, 640, 3), np.float32),
                                 np.zeros((480, 640, 4), np.uint8)])
def test_wrong_frame_format_is_a_clear_error(pipeline, bad):
    with pytest.raises(ValueError, match="RGB uint8"):
        pipeline.detector.detect(bad)


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 2.0
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert len(out) == 2
    merged = out[0]
    assert merged[2] == pytest.approx(0.9)
    assert merged[0][0] == pytest.approx((0 * 0.9 + 1 * 0.6) / 1.5)  # score-weighted average
    assert merged[1][0, 0] == pytest.approx(2 * 0.6 / 1.5)


def test_detector_rejects_a_model_that_is_not_blazeface(model_set):
    emb = model_set.load("face_embedder")
    with pytest.raises(ValueError, match="not a BlazeFace input shape"):
        FaceDetector(emb)


@pytest.mark.parametrize(("part", "size"), [((480, 640), (128, 96)), ((480, 639), (213, 160)),
                                           ((480, 640), (160, 120)), ((450, 600), (100, 75)),
                                           ((480, 640), (200, 150))])
def test_area_shrink_gives_the_pixels_of_inter_area(rgb, part, size):
    """By 5 and 3 it takes the box-filter path; by 4, 6 and 3.2 it is cv2.resize itself: the same pixels either
    way, on a photo and on noise (noise has every rounding case)."""
    photo = cv2.resize(rgb("obama.jpg"), (640, 480), interpolation=cv2.INTER_LINEAR)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for img in (photo, noise):
        crop = img[: part[0], : part[1]]
        np.testing.assert_array_equal(area_shrink(crop, *size), cv2.resize(crop, size, interpolation=cv2.INTER_AREA))
