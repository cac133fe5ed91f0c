"""APCER/BPCER arithmetic and threshold choice of scripts/evaluate_liveness.py, and the attack synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from scripts import pad_attacks
from scripts.evaluate_liveness import Group, main, thresholds


def test_apcer_counts_attacks_taken_live_and_bpcer_real_faces_refused() -> None:
    attack = Group("print", True, [0.1, 0.4, 0.6, 0.9])
    bona = Group("faces", False, [0.2, 0.7, 0.8, 0.95])
    assert attack.rate(0.5) == 0.5 and attack.rate(0.95) == 0.0
    assert bona.rate(0.5) == 0.25 and bona.rate(0.1) == 0.0
    assert Group("empty", True).rate(0.5) is None


def test_operating_points_bound_bpcer_and_balance_errors() -> None:
    bona = [Group("faces", False, list(np.linspace(0.3, 1.0, 100))),
            Group(f"faces {'in frame'}", False, [0.0] * 100)]  # reported apart: never moves the choice
    att = [Group("print (synthetic)", True, list(np.linspace(0.0, 0.5, 100)), synthetic=True),
           Group("cutout (synthetic)", True, [1.0] * 100, synthetic=True)]  # not in the print/screen pool
    points = thresholds(bona, att, 0.02)
    assert points["bpcer_bound"] == pytest.approx(0.31, abs=0.006)
    assert 0.38 <= points["equal_error"] <= 0.44


def test_attacks_are_deterministic_frames_of_the_camera_size(rgb, pipeline) -> None:  # type: ignore[no-untyped-def]
    photo, other = rgb("obama.jpg"), rgb("biden.jpg")
    box, other_box = pipeline.detector.detect(photo)[0].box, pipeline.detector.detect(other)[0].box
    for kind in pad_attacks.KINDS:
        a = pad_attacks.Attack(kind, 120, 1.0, seed=5)
        f1 = list(pad_attacks.attack_frames(photo, box, a, other, other_box, n_frames=3))
        f2 = list(pad_attacks.attack_frames(photo, box, a, other, other_box, n_frames=3))
        assert len(f1) == 3 and all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in f1)
        assert all(np.array_equal(x, y) for x, y in zip(f1, f2, strict=True))
        assert not np.array_equal(f1[0], f1[2])  # it moves
        found = pipeline.detector.detect(f1[0])
        assert found, kind  # the attack still shows a face to the detector
    with pytest.raises(ValueError, match="wearer"):
        next(pad_attacks.attack_frames(photo, box, pad_attacks.Attack("cutout", 120, 0, 1)))


def test_bad_arguments_exit_2_naming_the_problem(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--data", str(tmp_path), "--no-progress"]) == 2
    assert f"data folder not found: {tmp_path / 'faces-dev'}" in capsys.readouterr().err
