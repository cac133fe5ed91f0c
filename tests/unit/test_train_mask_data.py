"""The mask classifier's training data: labels by what a face shows, never RMFRD's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scripts import facedata
from scripts.common import RMFRD_NAME, not_rmfrd
from scripts.train_mask import labelled, surrounded, with_surround
from tests.conftest import DATA


def _face(path: str, masked: bool) -> facedata.FaceRecord:
    chip = np.full((150, 150, 3), 1 if masked else 0, np.uint8)
    return facedata.FaceRecord(Path(path), masked, None, chip, np.zeros((6, 2)), True, chip)


def test_bare_faces_are_labelled_bare_wherever_they_come_from():
    real = [_face("x/with_mask/a.jpg", True), _face("x/real-masked-dev/p/masked/0_0_1.jpg", True)]
    plain = [_face("x/without_mask/b.jpg", False), _face("x/real-masked-dev/p/unmasked/c.jpg", False)]
    synth = np.ones((2, 150, 150, 3), np.uint8)
    chips, y, kinds = labelled(real, synth, plain)
    assert chips.shape == (6, 150, 150, 3)
    assert y.tolist() == [True, True, True, True, False, False]
    assert kinds.tolist() == ["real_mask", "dev_real_mask", "synthetic_mask", "synthetic_mask", "no_mask",
                              "dev_no_mask"]


@pytest.mark.parametrize("name, rmfrd", [
    ("0_0_zhangsan_0014.jpg", True), ("0_0_0.jpg", True), ("12_3_45 copy 7.jpg", True),
    ("0_0_006ajtxFly1g5eb2v2jmcj30iy0npt9w.jpg", True), ("123.jpg", False), ("with_mask12.jpg", False),
    ("augmented_image_12.jpg", False), ("Screenshot (12).png", False), ("2020-01-01-123456.jpg", False)])
def test_rmfrd_names(name, rmfrd):
    assert bool(RMFRD_NAME.match(name)) is rmfrd
    assert (not_rmfrd([Path(name)]) == []) is rmfrd


def test_training_files_hold_no_rmfrd_photo_and_every_dev_photo():
    if not (DATA / "real-masked-dev").is_dir():
        pytest.fail(f"real-masked-dev not found in {DATA}; set EDGE_APP_DATA", pytrace=False)
    mask_set = facedata.mask_set_files(DATA)
    assert mask_set and not any(RMFRD_NAME.match(p.name) for p, _ in mask_set)
    assert {m for _, m in mask_set} == {True, False}
    dev = facedata.dev_files(DATA)
    photos = [p for p in DATA.glob("real-masked-dev/*/*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert len(dev) == len(photos)
    assert all(m == (p.parent.name == "masked") for p, m in dev)


def test_a_surround_keeps_the_photo_and_its_keypoints_and_fills_what_was_black():
    rng = np.random.default_rng(3)
    photo = np.random.default_rng(0).integers(0, 256, (160, 120, 3), dtype=np.uint8)
    kps = np.array([[40.0, 60], [80, 60], [60, 90], [60, 120], [20, 60], [100, 60]])
    others = [facedata.FaceRecord(Path("o.jpg"), False, None, photo, kps, True, photo)]
    for _ in range(12):  # every kind of background comes up
        canvas, moved = surrounded(photo, kps, others, rng)
        pad = int(0.6 * 160)
        assert canvas.shape == (160 + 2 * pad, 120 + 2 * pad, 3)
        assert np.array_equal(canvas[pad:pad + 160, pad:pad + 120], photo)
        assert np.allclose(moved, kps + pad)
        around = np.concatenate([canvas[:pad].reshape(-1, 3), canvas[-pad:].reshape(-1, 3)])
        assert around.mean() > 0 or around.std() > 0  # not the warp's black


def test_with_surround_makes_new_chips_of_the_same_faces():
    from edge_app.vision.align import ChipGeometry, align

    rng = np.random.default_rng(1)
    photo = rng.integers(60, 200, (160, 160, 3), dtype=np.uint8)
    kps = np.array([[55.0, 70], [105, 70], [80, 100], [80, 125], [30, 70], [130, 70]])
    face = facedata.FaceRecord(Path("x/without_mask/b.jpg"), False, None, photo, kps, True,
                               np.zeros((150, 150, 3), np.uint8))
    geometry = ChipGeometry(150, np.array([[47.3, 45.9], [100.6, 45.5], [74.5, 77.0], [74.5, 103.2]]))
    black = (align(photo, kps, geometry, eyes_only=True).sum(-1) == 0).sum()
    assert black > 500  # the face's chip reaches beyond the photo: black there without a surround
    out = with_surround([face] * 10, geometry, 1.0, seed=5)
    assert len(out) == 10 and all(f.masked is False and f.path == face.path for f in out)
    assert all(f.chip.shape == (150, 150, 3) and (f.chip.sum(-1) == 0).sum() < black / 10 for f in out)
    assert with_surround([face] * 10, geometry, 0.0, seed=5) == []


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_a_surround_share_outside_0_1_is_refused_by_name(share, capsys):
    from scripts.train_mask import main

    with pytest.raises(SystemExit) as exc:
        main(["--surround", share])
    assert exc.value.code == 2
    assert "--surround" in capsys.readouterr().err
