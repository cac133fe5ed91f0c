"""The door with liveness on: an enrolled person's photo replayed to the camera is refused as a spoof;
the person themself is granted. Real models, real SQLite, MockFactory relay, a real video file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts.pad_attacks import Attack, attack_frames
from tests import conftest
from tests.conftest import kiosk_frame
from tests.e2e.test_daemon import run_daemon

HALL = np.full((480, 640, 3), 90, np.uint8)


@pytest.fixture(scope="module")
def live_pipeline(model_set):  # type: ignore[no-untyped-def]
    return model_set.pipeline(num_threads=2, liveness=True)


def run(video: Path, db: Path, pipe, model_set, config: str = ""):  # type: ignore[no-untyped-def]
    """The daemon of test_daemon.py (MockFactory relay, real gallery) on a pipeline with liveness."""
    code, _, relay, events = run_daemon(video, db, pipe, model_set, config)
    assert code == 0
    return relay, [e for e in events if e["kind"] == "access"]


def replay_video(tmp_path: Path, pipe, rgb) -> Path:  # type: ignore[no-untyped-def]
    """obama2.jpg shown on a phone screen held to the camera, moving rigidly for 8 frames."""
    photo = rgb("obama2.jpg")
    box = pipe.detector.detect(photo)[0].box
    frames = list(attack_frames(photo, box, Attack("screen", 150, 1.2, seed=3), n_frames=8))
    return conftest.write_video(tmp_path / "replay.avi", [HALL] * 2 + frames + [HALL] * 2)




def test_a_replayed_photo_of_an_enrolled_person_is_refused_as_a_spoof(tmp_path, live_pipeline, model_set, rgb,
                                                                       gallery_db):  # type: ignore[no-untyped-def]
    snaps = tmp_path / "snaps"
    relay, access = run(replay_video(tmp_path, live_pipeline, rgb), gallery_db, live_pipeline, model_set,
                        f'[events]\nsnapshots = true\nsnapshot_dir = "{snaps}"\n')
    relay.assert_states([False])  # never unlocked
    assert [(e["person_name"], e["reason"], e["details"]["decision"]) for e in access] == [
        ("Obama", "spoof", "denied")]
    assert access[0]["details"]["live"] is False and access[0]["details"]["frames"] == 5
    shot = Path(access[0]["details"]["snapshot"])
    assert shot.parent == snaps and cv2.imread(str(shot)) is not None


def test_the_same_replay_opens_the_door_when_liveness_is_off(tmp_path, live_pipeline, model_set, rgb,
                                                             gallery_db):  # type: ignore[no-untyped-def]
    """What the check is for: without it the photo is granted."""
    relay, access = run(replay_video(tmp_path, live_pipeline, rgb), gallery_db, live_pipeline, model_set,
                        "[liveness]\nenabled = false\n")
    relay.assert_states([False, True, False])
    assert [(e["person_name"], e["reason"]) for e in access] == [("Obama", "granted")]
    assert "live" not in access[0]["details"]


def test_the_enrolled_person_in_person_is_granted(tmp_path, live_pipeline, model_set, rgb,
                                                  gallery_db):  # type: ignore[no-untyped-def]
    photo = rgb("obama2.jpg")
    box = live_pipeline.detector.detect(photo)[0].box
    frames = [kiosk_frame(photo, box, face_fraction=0.28 + 0.01 * i) for i in range(8)]
    relay, access = run(conftest.write_video(tmp_path / "walk.avi", [HALL] * 2 + frames), gallery_db,
                        live_pipeline, model_set)
    relay.assert_states([False, True, False])
    assert [(e["person_name"], e["reason"], e["details"]["live"]) for e in access] == [("Obama", "granted", True)]


@pytest.mark.parametrize("hold, want", [
    ("", [("Obama", "spoof", False), ("Obama", "spoof_hold", True)]),
    ("hold_seconds = 0\n", [("Obama", "spoof", False), ("Obama", "granted", True)])])
def test_after_a_refused_replay_the_person_is_held_for_hold_seconds(tmp_path, live_pipeline, model_set, rgb,
                                                                    gallery_db, hold, want):  # type: ignore[no-untyped-def]
    """A replay refused as a spoof, then (a new face track, seconds later) the person in person: refused with
    spoof_hold for [liveness] hold_seconds (30 by default), so a replay that passes some windows cannot simply be
    tried again at once; with hold_seconds = 0 the person is granted."""
    photo = rgb("obama2.jpg")
    box = live_pipeline.detector.detect(photo)[0].box
    replay = list(attack_frames(photo, box, Attack("screen", 150, 1.2, seed=3), n_frames=8))
    walk = [kiosk_frame(photo, box, face_fraction=0.28 + 0.01 * i) for i in range(8)]
    video = conftest.write_video(tmp_path / "replay_then_walk.avi", [HALL] * 2 + replay + [HALL] * 6 + walk)
    relay, access = run(video, gallery_db, live_pipeline, model_set, "[liveness]\n" + hold)
    assert [(e["person_name"], e["reason"], e["details"]["live"]) for e in access] == want
    relay.assert_states([False] if want[-1][1] == "spoof_hold" else [False, True, False])
