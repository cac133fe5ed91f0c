"""Liveness logic without the networks: crops, the planar-motion cue, votes, the spoof decision, config."""

from __future__ import annotations

from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from edge_app.access.controller import AccessController
from edge_app.access.policy import AccessPolicy, PersonRule, Reason
from edge_app.access.tracker import Observation, Tracker
from edge_app.config import parse_config
from edge_app.errors import ConfigError
from edge_app.vision.liveness import crop, crop_box, planar_residual

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BOX = (100.0, 100.0, 200.0, 200.0)


def test_crop_box_scales_about_the_centre_when_it_fits() -> None:
    assert crop_box((300, 200, 340, 240), 2.0, 640, 480) == (280, 180, 360, 260)


def test_crop_box_is_shifted_inside_the_frame_not_cut() -> None:
    x0, y0, x1, y1 = crop_box((0, 0, 40, 40), 4.0, 640, 480)
    assert (x0, y0) == (0, 0) and (x1 - x0, y1 - y0) == (160, 160)
    x0, y0, x1, y1 = crop_box((600, 440, 639, 479), 2.7, 640, 480)
    assert (x1, y1) == (639, 479) and x1 - x0 == pytest.approx(39 * 2.7, abs=1)


def test_crop_box_lowers_the_scale_when_the_frame_is_too_small() -> None:
    # A 160x160 tight crop whose face is 100 px wide cannot hold a 4x crop: it gets the whole frame.
    assert crop_box((30, 30, 130, 130), 4.0, 160, 160) == (0, 0, 159, 159)


def test_crop_is_bgr_80x80_and_bad_input_is_named() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[..., 0] = 200  # red in RGB
    out = crop(frame, BOX, 2.7)
    assert out.shape == (80, 80, 3) and out.dtype == np.uint8
    assert out[..., 2].min() == 200 and out[..., 0].max() == 0  # red is the last channel in BGR
    with pytest.raises(ValueError, match="empty face box"):
        crop(frame, (10, 10, 10, 30), 2.7)
    with pytest.raises(ValueError, match="expected an RGB uint8 frame"):
        crop(frame.astype(np.float32), BOX, 2.7)


def _points() -> np.ndarray:
    # Six keypoints like BlazeFace's: eyes, nose, mouth, ears.
    return np.array([[120, 130], [180, 130], [150, 160], [150, 185], [95, 140], [205, 140]], np.float64)


def test_planar_residual_is_small_for_a_plane_and_large_for_a_turning_head() -> None:
    p = _points()
    frames = [p]
    for i in range(1, 5):
        h = np.array([[1 + 0.02 * i, 0.01 * i, 3 * i], [-0.01 * i, 1 - 0.01 * i, 2 * i], [1e-4 * i, 0, 1]])
        frames.append(cv2.perspectiveTransform(p[None], h)[0])
    assert planar_residual(frames) < 1e-6
    # A head turning: the nose (in front of the face plane) moves more than the ears (behind it).
    turned = p.copy()
    turned[2:4, 0] += 8
    turned[4:, 0] -= 6
    assert planar_residual([p, turned]) > 0.01
    assert planar_residual([p]) is None
    with pytest.raises(ValueError, match="keypoints"):
        planar_residual([p[:3], p[:3]])


def _obs(live: bool | None, person: int | None = 7) -> Observation:
    return Observation(BOX, person, 0.9, False, True, live)


def test_a_live_face_is_decided_on_its_third_agreeing_frame() -> None:
    t = Tracker(votes=3, window=5, live_votes=3)
    assert t.update([_obs(True)]) == [] and t.update([_obs(True)]) == []
    [vote] = t.update([_obs(True)])
    assert vote.person_id == 7 and vote.live is True and vote.frames == 3


def test_a_face_not_live_waits_for_the_window_then_is_judged_a_spoof() -> None:
    t = Tracker(votes=3, window=5, live_votes=3)
    for live in (False, True, False, True):
        assert t.update([_obs(live)]) == []  # recognised from frame 3, but only 2 live frames so far
    [vote] = t.update([_obs(False)])
    assert vote.person_id == 7 and vote.live is False and vote.frames == 5


def test_late_live_frames_still_grant_within_the_window() -> None:
    t = Tracker(votes=3, window=5, live_votes=3)
    for live in (False, True, True):
        assert t.update([_obs(live)]) == []
    [vote] = t.update([_obs(True)])
    assert vote.live is True and vote.frames == 4


def test_a_strangers_live_frames_never_vouch_for_a_photo_in_the_same_track() -> None:
    """A live stranger steps up, then holds an enrolled person's photo in the same place: only the frames
    that recognise the person count as live votes for them."""
    t = Tracker(votes=3, window=5, live_votes=3)
    frames = [_obs(True, None), _obs(True, None), _obs(False), _obs(True), _obs(False)]
    votes = [v for o in frames for v in t.update([o])]
    assert [(v.person_id, v.live) for v in votes] == [(7, False)]  # 3 recognised frames, 1 of them live
    # Even with fewer votes than live votes configured, the live frames must be the recognised ones.
    t = Tracker(votes=2, window=5, live_votes=3)
    frames = [_obs(True, None), _obs(True, None), _obs(True, None), _obs(False), _obs(False)]
    assert [(v.person_id, v.live) for o in frames for v in t.update([o])] == [(7, False)]
    # The motion cue too: a stranger's turning head in the window does not make the photo's frames move.
    p = _points()
    turning = p.copy()
    turning[2:4, 0] += 9
    t = Tracker(votes=3, window=5, planar_residual=planar_residual, min_residual=0.01)
    frames = [Observation(BOX, None, 0.2, False, True, None, k) for k in (turning, p)]
    frames += [Observation(BOX, 7, 0.9, False, True, None, p + i) for i in range(3)]
    assert [(v.person_id, v.live) for o in frames for v in t.update([o])] == [(7, False)]


def test_without_liveness_votes_carry_no_verdict_and_live_votes_are_checked() -> None:
    t = Tracker(votes=1, window=1)
    [vote] = t.update([_obs(None)])
    assert vote.live is None
    with pytest.raises(ValueError, match="live votes"):
        Tracker(votes=3, window=5, live_votes=6)


def test_motion_cue_refuses_a_face_whose_keypoints_move_as_a_plane() -> None:
    p = _points()
    rigid = [Observation(BOX, 7, 0.9, False, True, True, p + 2 * i) for i in range(5)]
    t = Tracker(votes=3, window=5, live_votes=3, planar_residual=planar_residual, min_residual=0.01)
    votes = [v for o in rigid for v in t.update([o])]
    assert [(v.person_id, v.live) for v in votes] == [(7, False)]
    turning = []
    for i in range(5):
        q = p.copy()
        q[2:4, 0] += 3 * i
        turning.append(Observation(BOX, 7, 0.9, False, True, True, q))
    t = Tracker(votes=3, window=5, live_votes=3, planar_residual=planar_residual, min_residual=0.01)
    votes = [v for o in turning for v in t.update([o])]
    assert [(v.person_id, v.live) for v in votes] == [(7, True)]


def test_a_recognised_spoof_is_refused_with_reason_spoof_and_the_person_named() -> None:
    persons = {7: PersonRule(7, "Alice")}
    ctl = AccessController(AccessPolicy(UTC), Tracker(votes=1, window=1, live_votes=1), persons, cooldown_s=0)
    from edge_app.access.tracker import Vote

    [d] = ctl.decide([Vote(1, 7, 0.9, False, 5, live=False)], NOW)
    assert (d.granted, d.reason, d.person_name, d.details()["live"]) == (False, Reason.SPOOF, "Alice", False)
    [d] = ctl.decide([Vote(2, 7, 0.9, False, 5, live=True)], NOW)
    assert (d.granted, d.reason, d.details()["live"]) == (True, Reason.GRANTED, True)
    # Unknown faces stay unknown, whatever their liveness.
    [d] = ctl.decide([Vote(3, None, 0.2, False, 5, live=False)], NOW)
    assert d.reason is Reason.UNKNOWN


def test_after_a_spoof_of_a_person_that_person_is_held_for_hold_seconds() -> None:
    """A replay that passes some windows must not be retried every few seconds: after a spoof of Alice is refused,
    a live Alice is refused with spoof_hold until the hold has run out; Bob is not affected."""
    from edge_app.access.tracker import Vote

    clock = [100.0]
    persons = {7: PersonRule(7, "Alice"), 8: PersonRule(8, "Bob")}
    ctl = AccessController(AccessPolicy(UTC), Tracker(votes=1, window=1, live_votes=1), persons, cooldown_s=0,
                           clock=lambda: clock[0], spoof_hold_s=30)
    [d] = ctl.decide([Vote(1, 7, 0.9, False, 5, live=False)], NOW)
    assert d.reason is Reason.SPOOF
    clock[0] = 129.0
    [alice, bob] = ctl.decide([Vote(2, 7, 0.9, False, 5, live=True), Vote(3, 8, 0.9, False, 5, live=True)], NOW)
    assert (alice.granted, alice.reason, alice.details()["live"]) == (False, Reason.SPOOF_HOLD, True)
    assert (bob.granted, bob.reason) == (True, Reason.GRANTED)
    clock[0] = 140.0  # a second spoof starts the hold again
    [d] = ctl.decide([Vote(4, 7, 0.9, False, 5, live=False)], NOW)
    clock[0] = 169.9
    assert ctl.decide([Vote(5, 7, 0.9, False, 5, live=True)], NOW)[0].reason is Reason.SPOOF_HOLD
    clock[0] = 170.0
    assert ctl.decide([Vote(6, 7, 0.9, False, 5, live=True)], NOW)[0].reason is Reason.GRANTED
    # Off (0): granted at once after a spoof, as before.
    off = AccessController(AccessPolicy(UTC), Tracker(votes=1, window=1, live_votes=1), persons, cooldown_s=0,
                           clock=lambda: clock[0], spoof_hold_s=0)
    off.decide([Vote(1, 7, 0.9, False, 5, live=False)], NOW)
    assert off.decide([Vote(2, 7, 0.9, False, 5, live=True)], NOW)[0].reason is Reason.GRANTED
    with pytest.raises(ValueError, match="spoof_hold_s must be >= 0"):
        AccessController(AccessPolicy(UTC), Tracker(votes=1, window=1), persons, spoof_hold_s=-1)


def test_liveness_config_defaults_and_errors_name_the_key() -> None:
    cfg = parse_config("")
    assert cfg.liveness.enabled is True and 0 < cfg.liveness.threshold < 1 and cfg.liveness.votes == 3
    assert cfg.liveness.motion is False and cfg.liveness.hold_seconds == 30
    assert parse_config("[liveness]\nhold_seconds = 0\n").liveness.hold_seconds == 0
    with pytest.raises(ConfigError, match=r"\[liveness\] hold_seconds: expected a number in \[0, 3600\], got -5"):
        parse_config("[liveness]\nhold_seconds = -5\n")
    cfg = parse_config("[liveness]\nenabled = false\nthreshold = 0.8\nvotes = 2\n")
    assert (cfg.liveness.enabled, cfg.liveness.threshold, cfg.liveness.votes) == (False, 0.8, 2)
    with pytest.raises(ConfigError, match=r"\[liveness\] threshold: expected a number in \(0, 1\), got 1.5"):
        parse_config("[liveness]\nthreshold = 1.5\n")
    with pytest.raises(ConfigError, match=r"\[liveness\] treshold: unknown key, did you mean \"threshold\""):
        parse_config("[liveness]\ntreshold = 0.5\n")
    with pytest.raises(ConfigError, match=r"\[liveness\] votes \(6\) cannot exceed \[access\] window \(5\)"):
        parse_config("[liveness]\nvotes = 6\n")
    assert parse_config("[access]\nwindow = 8\n[liveness]\nvotes = 6\n").liveness.votes == 6
