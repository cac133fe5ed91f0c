"""The detection cascade (edge_app/vision/cascade.py) on real faces: masked close-ups, small faces,
keypoints good enough to recognise a small face, and no faces where there are none."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.config import parse_config
from edge_app.errors import ConfigError
from edge_app.imageio import read_image
from edge_app.vision.cascade import CascadeOptions, FaceCascade, plausible
from edge_app.vision.detector import FaceDetector
from scripts.bench import door_frame
from tests.conftest import DATA

# Tight 160x160 crops of real masked faces in which one short-range pass finds nothing.
MISSED_MASKED = ["anhu/masked/0_0_5.jpg", "changshilei/masked/0_0_0.jpg", "chenxuedong/masked/0_0_4.jpg",
                 "fengjianyu/masked/0_0_1.jpg", "huangtingting/masked/0_0_20.jpg", "caiyilin/masked/0_0_5.jpg"]


@pytest.fixture(scope="session")
def masked_dev():  # type: ignore[no-untyped-def]
    root = DATA / "real-masked-dev"
    if not root.is_dir():
        pytest.fail(f"real masked faces not found in {root}; set EDGE_APP_DATA", pytrace=False)
    return root


@pytest.fixture(scope="session")
def cascade(pipeline) -> FaceCascade:  # type: ignore[no-untyped-def]
    assert isinstance(pipeline.detector, FaceCascade)  # the default pipeline uses it
    return pipeline.detector


def _scaled(img: np.ndarray, det_box: tuple[float, float, float, float], width: float) -> np.ndarray:
    frame, _ = door_frame(img, det_box, width, np.random.default_rng(3))
    return frame


@pytest.mark.parametrize("name", MISSED_MASKED)
def test_tight_masked_crops_missed_by_one_pass_are_found_with_eyes_in_place(cascade, masked_dev, name):
    from edge_app.imageio import read_image

    crop = read_image(masked_dev / name)
    assert cascade.near.detect(crop) == []  # what the detector did before the cascade
    faces = cascade.detect(crop)
    assert len(faces) == 1
    (rx, ry), (lx, ly) = faces[0].keypoints[0] / 160, faces[0].keypoints[1] / 160
    # Eyes in a tight crop's eye band: upper half, subject's right eye on the image's left.
    assert 0.12 < ry < 0.62 and 0.12 < ly < 0.62 and rx < 0.58 < lx + 0.16 and 0.18 < lx - rx < 0.62


def _score(pipeline, template: np.ndarray, frame: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    faces = pipeline.process(frame)
    assert len(faces) == 1
    return float(template @ faces[0].embedding)


def test_small_face_scores_like_a_large_one(pipeline, rgb):
    """obama2 at 64 px against obama.jpg: one pass gave 0.36-0.55 against ~0.72 at 200 px (keypoints
    off by up to 60 % of the eye distance); the refinement pass keeps it within 0.05."""
    template = pipeline.process(rgb("obama.jpg"))[0].embedding
    img = rgb("obama2.jpg")
    box = pipeline.process(img)[0].detection.box
    at200 = _score(pipeline, template, _scaled(img, box, 200))
    at64 = _score(pipeline, template, _scaled(img, box, 64))
    assert at64 > at200 - 0.05, (at64, at200)


def test_refinement_moves_small_face_keypoints_onto_the_eyes(cascade, rgb):
    img = rgb("obama2.jpg")
    big = cascade.near.detect(img)[0]
    s = 70 / big.width
    frame = _scaled(img, big.box, 70)
    # Where the eyes went: the full-size keypoints under the same transform as door_frame's.
    rng = np.random.default_rng(3)
    cx, cy = rng.uniform(35, 640 - 35), rng.uniform(35, 480 - 35)
    truth = (big.keypoints[:2] - [(big.box[0] + big.box[2]) / 2, (big.box[1] + big.box[3]) / 2]) * s + [cx, cy]
    eye_dist = float(np.linalg.norm(truth[1] - truth[0]))
    found = cascade.detect(frame)
    assert len(found) == 1
    err = float(np.linalg.norm(found[0].keypoints[:2] - truth, axis=1).max())
    assert err < 0.15 * eye_dist, err


@pytest.mark.parametrize("width", [48, 52])
def test_a_48_px_face_is_found(cascade, rgb, width):
    img = rgb("obama2.jpg")
    box = cascade.near.detect(img)[0].box
    frame = _scaled(img, box, width)
    assert cascade.near.detect(frame) == []  # too small for one short-range pass
    faces = cascade.detect(frame)
    assert len(faces) == 1
    assert 0.6 * width < faces[0].width < 1.8 * width


def test_face_less_images_have_no_face(cascade, rgb):
    rng = np.random.default_rng(0)
    images = [np.zeros((480, 640, 3), np.uint8), np.full((160, 160, 3), 128, np.uint8),
              rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)]
    # Background of the dev photos, away from the faces: suits, a desk, a flag, a lectern.
    for name, (y0, y1, x0, x1) in (("obama.jpg", (900, 1137, 0, 300)), ("biden.jpg", (1700, 2204, 0, 970)),
                                   ("obama3.jpg", (1700, 2333, 0, 1434)), ("obama2.jpg", (900, 1200, 0, 626))):
        images.append(np.ascontiguousarray(rgb(name)[y0:y1, x0:x1]))
    for img in images:
        assert cascade.detect(img) == [], img.shape


def test_lifted_close_up_finds_masked_faces_cut_off_at_the_forehead(cascade, masked_dev):
    """Real masked crops so close that the forehead leaves the top of the image: no centred pass finds
    them; the frame placed low in a bigger canvas does, with the eyes where they are in the crop."""
    no_lift = FaceCascade(cascade.near, cascade.far, CascadeOptions(close_up_lift=0.0, tile=0, close_up_turns=()))
    lift = FaceCascade(cascade.near, cascade.far, CascadeOptions(tile=0, close_up_turns=()))
    missed = [img for img in (read_image(f) for f in sorted(masked_dev.glob("*/masked/*.jpg")))
              if not no_lift.detect(img)]
    assert len(missed) >= 10
    found = 0
    for img in missed:
        faces = lift.detect(img)
        if faces:
            found += 1
            eyes = faces[0].keypoints[:2]
            assert (eyes[:, 1] < 0.6 * img.shape[0]).all() and (eyes[:, 1] > 0).all(), eyes
            assert (eyes[:, 0] > 0).all() and (eyes[:, 0] < img.shape[1]).all(), eyes
    assert found >= 5, (found, len(missed))


def test_turned_pass_maps_keypoints_back_to_the_frame(cascade, rgb):
    """A face turned by 30 degrees, seen turned back upright: its keypoints land where the upright face's
    keypoints went under the same turn."""
    img = rgb("obama.jpg")
    upright = cascade.near.detect(img)[0]
    h, w = img.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 30.0, 1.0)
    tilted = cv2.warpAffine(img, turn, (w, h))
    expected = upright.keypoints[:4] @ turn[:, :2].T + turn[:, 2]
    found = cascade.near.detect_turned(tilted, -30.0, 0.0, 0.0)
    assert len(found) == 1
    eye_dist = float(np.linalg.norm(upright.keypoints[1] - upright.keypoints[0]))
    assert float(np.abs(found[0].keypoints[:4] - expected).max()) < 0.1 * eye_dist
    cx, cy = (found[0].box[0] + found[0].box[2]) / 2, (found[0].box[1] + found[0].box[3]) / 2
    assert found[0].box[0] < expected[:, 0].min() and expected[:, 0].max() < found[0].box[2]
    assert abs(cy - expected[:2, 1].mean()) < found[0].height / 2 and abs(cx - expected[:2, 0].mean()) < eye_dist


def test_turned_close_up_finds_tilted_masked_faces(cascade, masked_dev):
    """Real masked close-ups of tilted or bent heads that every upright pass misses: the frame turned by
    25 degrees either way finds some of them, eyes inside the image and a face's geometry."""
    upright = FaceCascade(cascade.near, cascade.far, CascadeOptions(close_up_turns=()))
    missed = [img for img in (read_image(f) for f in sorted(masked_dev.glob("*/masked/*.jpg")))
              if not upright.detect(img)]
    assert len(missed) >= 6
    found = [faces[0] for faces in (cascade.detect(img) for img in missed) if faces]
    assert len(found) >= 4, (len(found), len(missed))
    for f in found:
        assert plausible(f)
        assert (f.keypoints[:2] >= 0).all() and (f.keypoints[:2] < 160).all(), f.keypoints[:2]


def test_detect_region_maps_back_to_frame_pixels(cascade, rgb):
    img = rgb("obama.jpg")
    whole = cascade.near.detect(img)[0]
    x0, y0, x1, y1 = whole.box
    side = 2 * (x1 - x0)
    crop = cascade.near.detect_region(img, (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2, side)
    assert len(crop) == 1
    eye_dist = float(np.linalg.norm(whole.keypoints[1] - whole.keypoints[0]))
    assert float(np.abs(crop[0].keypoints[:2] - whole.keypoints[:2]).max()) < 0.1 * eye_dist
    assert plausible(crop[0]) and plausible(whole)


def test_plain_frame_detection_is_unchanged_without_the_cascade(model_set, rgb):
    plain = model_set.pipeline(cascade=None)
    assert isinstance(plain.detector, FaceDetector)
    assert len(plain.detector.detect(rgb("dlib_2008_002506.jpg"))) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"refine_below": -1}, "refine_below"), ({"refine_context": 0.5}, "refine_context"),
    ({"close_up_min_score": 1.5}, "close_up_min_score"), ({"close_up_pads": (0.0,)}, "close_up_pads"),
    ({"refine_min_score": 0.0}, "refine_min_score"), ({"close_up_lift": 1.5}, "close_up_lift"),
    ({"close_up_lift_min_score": 0.0}, "close_up_lift_min_score"), ({"close_up_turns": (0.0,)}, "close_up_turns"),
    ({"close_up_turns": (90.0,)}, "close_up_turns"), ({"close_up_turn_min_score": 1.0}, "close_up_turn_min_score")])
def test_bad_cascade_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CascadeOptions(**kwargs)


def test_cascade_needs_the_short_model_first(model_set):
    full = FaceDetector(model_set.load("face_detector_full", 1))
    with pytest.raises(ValueError, match="short-range"):
        FaceCascade(full)


def test_detector_settings_are_read_and_checked_strictly(tmp_path):
    cfg = parse_config("[recognition]\ndetector_refine_below = 120.0\ndetector_small_faces = false\n",
                       tmp_path / "c.toml")
    rc = cfg.recognition
    assert (rc.detector_refine_below, rc.detector_small_faces, rc.detector_close_up) == (120.0, False, True)
    with pytest.raises(ConfigError, match="detector_refine_below"):
        parse_config("[recognition]\ndetector_refine_below = -5.0\n", tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="detector_close_up"):
        parse_config("[recognition]\ndetector_close_up = 1\n", tmp_path / "c.toml")


def test_view_rejects_a_region_outside_the_frame(cascade):
    with pytest.raises(ValueError, match="outside"):
        cascade.near.detect_region(np.zeros((100, 100, 3), np.uint8), 500, 500, 50)


def _framed_masked(masked_dev: Path, n: int, width: int) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """The first n real masked crops, scaled to width px and pasted at seeded places of a grey 640x480 frame."""
    from edge_app.imageio import read_image

    rng = np.random.default_rng(5)
    out = []
    for f in sorted(masked_dev.glob("*/masked/*.jpg"))[:n]:
        face = cv2.resize(read_image(f), (width, width), interpolation=cv2.INTER_AREA)
        frame = np.full((480, 640, 3), 110, np.uint8)
        x, y = int(rng.integers(0, 640 - width)), int(rng.integers(0, 480 - width))
        frame[y:y + width, x:x + width] = face
        out.append((frame, (x, y)))
    return out


def _found_at(faces: list, x: int, y: int, width: int) -> bool:  # type: ignore[type-arg]
    return any(x <= (f.box[0] + f.box[2]) / 2 <= x + width and y <= (f.box[1] + f.box[3]) / 2 <= y + width
               for f in faces)


def test_tile_pass_finds_small_masked_faces_the_other_passes_miss(cascade, masked_dev):
    """Masked faces at door distance (100 px in 640x480) are mostly too small for the whole-frame passes;
    the overlapping 240 px squares find many more, each where it is, and it runs only when nothing was found."""
    no_tiles = FaceCascade(cascade.near, cascade.far, CascadeOptions(tile=0))
    frames = _framed_masked(masked_dev, 60, 100)
    before = sum(_found_at(no_tiles.detect(fr), x, y, 100) for fr, (x, y) in frames)
    after = 0
    for fr, (x, y) in frames:
        faces = cascade.detect(fr)
        assert len(faces) <= 1, "a face seen in two squares is kept once"
        after += _found_at(faces, x, y, 100)
        assert not faces or _found_at(faces, x, y, 100), "a face where none was pasted"
    assert after >= before + 8, (before, after)
    # An empty frame pays for every pass: 1 whole frame + 3 close-up + 1 full-range + 12 squares.
    assert cascade.detect(np.full((480, 640, 3), 110, np.uint8)) == [] and cascade.passes == 19


def test_tile_setting_is_read_and_checked(tmp_path):
    assert parse_config("[recognition]\ndetector_tile = 0.0\n", tmp_path / "c.toml").recognition.detector_tile == 0
    assert parse_config("", tmp_path / "c.toml").recognition.detector_tile == 0.5
    with pytest.raises(ConfigError, match="detector_tile"):
        parse_config("[recognition]\ndetector_tile = 2.0\n", tmp_path / "c.toml")
    with pytest.raises(ValueError, match="tile"):
        CascadeOptions(tile=-1)


def test_a_stream_tiles_every_nth_empty_frame_and_keeps_a_tile_found_face(cascade, masked_dev):
    """On a camera stream the tile pass runs on every 3rd frame without a face; a face it found is looked
    for again around its place in the next frames (one pass), so it is found in every frame it stays in."""
    frames = _framed_masked(masked_dev, 60, 100)
    no_tiles = FaceCascade(cascade.near, cascade.far, CascadeOptions(tile=0))
    only_tiles = [(fr, xy) for fr, xy in frames
                  if not no_tiles.detect(fr) and _found_at(cascade.detect(fr), *xy, 100)]
    assert only_tiles, "no framed face that only the tile pass finds"
    frame, (x, y) = only_tiles[0]
    stream = FaceCascade(cascade.near, cascade.far, CascadeOptions(tile_every=3))
    empty = np.full((480, 640, 3), 110, np.uint8)
    passes = []
    for _ in range(3):
        assert stream.detect(empty) == []
        passes.append(stream.passes)
    assert passes == [7, 7, 19]  # whole frame, 3 close-up, full range, 2 turned; the tile pass on the 3rd
    found = [stream.detect(frame) for _ in range(6)]
    # Missed until the next tile pass (3rd empty frame since the last), then followed frame after frame.
    hits = [bool(f) and _found_at(f, x, y, 100) for f in found]
    assert hits[2:] == [True] * 4 and not any(hits[:2]), hits
    assert stream.passes == 2  # the main pass, and the look-again pass, which is also its refinement
