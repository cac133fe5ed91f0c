"""`edge-app enroll --camera`: shots from a camera (here a video file behind the same FrameSource interface) through
the door's own pipeline, real models, a real SQLite gallery."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from edge_app.cli import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from edge_app.gallery.store import Gallery
from edge_app.vision.synth_mask import draw_mask, random_style
from scripts.pad_attacks import Attack, attack_frames
from tests.conftest import kiosk_frame, write_video

HALL = np.full((480, 640, 3), 90, np.uint8)


@pytest.fixture
def db(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    path = tmp_path / "gallery.db"
    monkeypatch.setenv("EDGE_APP_GALLERY", str(path))
    return path


def run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def walk(pipeline, rgb):  # type: ignore[no-untyped-def]
    """obama2.jpg walking up to the camera: 24 frames at 10 frames/s."""
    photo = rgb("obama2.jpg")
    box = pipeline.detector.detect(photo)[0].box
    return [kiosk_frame(photo, box, face_fraction=0.26 + 0.005 * i) for i in range(24)]


def counts(db):  # type: ignore[no-untyped-def]
    with Gallery(db) as g:
        return {p.name: (p.n_templates, p.n_masked) for p in g.list_persons()}


def test_camera_shots_enrol_a_person_and_are_kept_when_asked(db, tmp_path, walk, capsys, faces_dev):
    video = write_video(tmp_path / "walk.avi", [HALL] * 3 + walk)
    code, out, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(video), "--save", str(tmp_path / "shots"),
                         "--json")
    assert code == EXIT_OK, err
    report = json.loads(out)
    assert report["enrolled"] == 12 and (report["plain_templates"], report["masked_templates"]) == (3, 9)
    assert report["frames_passed_over"] == {"no_face": 3}
    assert counts(db) == {"Obama": (12, 9)}
    # Shots at least half a second apart: frames 0, 5, 10 of the walk (10 frames/s), not three in a row.
    assert [a.rsplit("#", 1)[1] for a in report["accepted"]] == ["3", "8", "13"]
    shots = sorted((tmp_path / "shots").iterdir())
    assert [p.name for p in shots] == ["Obama-1.jpg", "Obama-2.jpg", "Obama-3.jpg"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in shots)
    # The person enrolled from the camera is recognised on another photo.
    code, out, _ = run(capsys, "recognize", str(faces_dev / "obama.jpg"), "--json", "--no-liveness")
    assert json.loads(out.splitlines()[0])["faces"][0]["name"] == "Obama"


def test_a_masked_shot_adds_a_masked_template_to_an_enrolled_person_only(db, tmp_path, walk, pipeline, capsys,
                                                                          faces_dev):
    rng = np.random.default_rng(5)
    masked = []
    for frame in walk[:12]:
        kps = np.asarray(pipeline.detector.detect(frame)[0].keypoints, np.float64)
        masked.append(draw_mask(frame, kps, random_style(np.random.default_rng(1), "surgical"), rng))
    video = write_video(tmp_path / "masked.avi", masked)
    code, _, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(video), "--shots", "2")
    assert code == EXIT_ERROR and "shows a mask; enrol at least one photo without a mask" in err
    assert counts(db) == {}
    assert run(capsys, "enroll", "--name", "Obama", str(faces_dev / "obama.jpg"))[0] == EXIT_OK
    code, out, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(video), "--shots", "2")
    assert code == EXIT_OK, err
    assert "added templates to Obama: 0 plain + 2 masked template(s) from 2 camera shot(s)" in out
    assert counts(db) == {"Obama": (6, 5)}


def test_a_photo_held_to_the_camera_is_not_enrolled(db, tmp_path, pipeline, rgb, capsys):
    photo = rgb("obama2.jpg")
    box = pipeline.detector.detect(photo)[0].box
    replay = list(attack_frames(photo, box, Attack("screen", 150, 1.2, seed=3), n_frames=20))
    video = write_video(tmp_path / "replay.avi", replay)
    code, _, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(video))
    assert code == EXIT_ERROR
    assert "no usable frame of 'Obama' within 20 s" in err and "not judged live" in err
    assert counts(db) == {}


def test_too_few_usable_frames_enrol_what_there_is_and_say_so(db, tmp_path, walk, capsys):
    video = write_video(tmp_path / "short.avi", [HALL] * 10 + walk[:6])
    code, out, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(video), "--shots", "3", "--json")
    assert code == EXIT_PARTIAL
    assert "only 2 of 3 shot(s) within 20 s (frames passed over: 10 without a face)" in err
    assert json.loads(out)["plain_templates"] == 2
    # No face at all: nothing enrolled, the reason counted.
    code, _, err = run(capsys, "enroll", "--name", "Nobody", "--camera", write_video(tmp_path / "hall.avi",
                                                                                    [HALL] * 5).as_posix())
    assert code == EXIT_ERROR and "(frames passed over: 5 without a face); nothing enrolled" in err
    assert counts(db) == {"Obama": (8, 6)}


def test_camera_usage_errors(db, tmp_path, faces_dev, capsys):
    code, _, err = run(capsys, "enroll", "--name", "Obama", str(faces_dev / "obama.jpg"), "--camera", "0")
    assert code == EXIT_USAGE and "give photos or --camera, not both" in err
    code, _, err = run(capsys, "enroll", "--name", "Obama")
    assert code == EXIT_USAGE and "give photos of the person" in err
    code, _, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(faces_dev))
    assert code == EXIT_ERROR and "a photo or a folder is not a camera" in err
    code, _, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(tmp_path / "missing.avi"))
    assert code == EXIT_ERROR and "no such file or folder" in err and "missing.avi" in err
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    code, _, err = run(capsys, "enroll", "--name", "Obama", "--camera", str(tmp_path / "bad.avi"))
    assert code == EXIT_ERROR and "cannot open" in err and "bad.avi" in err
    with pytest.raises(SystemExit):
        main(["enroll", "--name", "Obama", "--camera", "x.avi", "--shots", "0"])
    assert "must be in 1..10, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["enroll", "--name", "Obama", "--camera", "x.avi", "--seconds", "nan"])
    assert "is not a number of seconds in 1..600" in capsys.readouterr().err
    assert counts(db) == {}
