"""The mask classifier's training data: labels by what a face shows, never RMFRD's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scripts import facedata
from scripts.common import RMFRD_NAME, not_rmfrd
from scripts.train_mask import labelled
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
