"""`edge-app recognize` with liveness, and `edge-app liveness-check`, on real images and real models."""

from __future__ import annotations

import json

import pytest

from edge_app.cli import EXIT_ERROR, EXIT_OK, main
from tests.conftest import DATA

SAMPLES = DATA.parent / "reference" / "minifasnet" / "sample"


def run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    path = tmp_path / "gallery.db"
    monkeypatch.setenv("EDGE_APP_GALLERY", str(path))
    return path


def test_recognize_prints_live_and_json_carries_the_probability(db, faces_dev, capsys):  # type: ignore[no-untyped-def]
    assert run(capsys, "enroll", "--name", "Barack Obama", str(faces_dev / "obama.jpg"))[0] == EXIT_OK
    code, out, _ = run(capsys, "recognize", str(faces_dev / "obama2.jpg"))
    assert code == EXIT_OK
    assert "\tBarack Obama\t" in out and "\tlive=yes(" in out and out.strip().endswith("decision=granted:match")
    code, out, _ = run(capsys, "recognize", str(SAMPLES / "image_F1.jpg"), "--json")
    face = json.loads(out)["faces"][0]
    assert face["live"]["live"] is False and 0 <= face["live"]["probability"] < face["live"]["threshold"]
    code, out, _ = run(capsys, "recognize", str(faces_dev / "obama2.jpg"), "--no-liveness")
    assert "\tlive=n/a\t" in out


def test_a_recognised_spoof_is_reported_refused_with_reason_spoof(db, capsys):  # type: ignore[no-untyped-def]
    # The upstream samples show one person: enrolled from the real capture, their replayed photo is recognised
    # as them and, with --require-live, refused only because it is not live.
    assert run(capsys, "enroll", "--name", "Sample", str(SAMPLES / "image_T1.jpg"))[0] == EXIT_OK
    _, out, _ = run(capsys, "recognize", str(SAMPLES / "image_F2.jpg"), "--require-live")
    assert "\tSample\t" in out and "\tlive=no(0." in out and out.strip().endswith("decision=refused:spoof")
    # Without it, recognize reports the verdict and decides on identity (a photo file is never live).
    _, out, _ = run(capsys, "recognize", str(SAMPLES / "image_F2.jpg"))
    assert "\tlive=no(0." in out and out.strip().endswith("decision=granted:match")
    _, out, _ = run(capsys, "recognize", str(SAMPLES / "image_T1.jpg"))
    assert "\tSample\t" in out and "\tlive=yes(0." in out and out.strip().endswith("decision=granted:match")


def test_liveness_check_scores_every_face_of_images_and_a_folder(capsys):  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "liveness-check", "--source", str(SAMPLES))
    assert code == EXIT_OK
    lines = {line.split("\t")[0].rsplit("/", 1)[-1]: line for line in out.splitlines()}
    assert "\tlive=yes(" in lines["image_T1.jpg"]
    assert "\tlive=no(" in lines["image_F1.jpg"] and "\tlive=no(" in lines["image_F2.jpg"]
    assert "v2=" in lines["image_T1.jpg"] and "v1se=" in lines["image_T1.jpg"]
    assert "3 face(s): 1 judged live" in err
    code, out, _ = run(capsys, "liveness-check", "--source", str(SAMPLES / "image_T1.jpg"), "--json")
    rec = json.loads(out)
    assert rec["live"] is True and set(rec["networks"]) == {"liveness_v2", "liveness_v1se"}


def test_liveness_check_bad_source_and_threshold_are_named(tmp_path, capsys):  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "liveness-check", "--source", str(tmp_path / "nope.jpg"))
    assert code == EXIT_ERROR and "no such file or folder" in err and "nope.jpg" in err
    with pytest.raises(SystemExit):
        main(["liveness-check", "--threshold", "1.5"])
    assert "a probability in (0, 1), got 1.5" in capsys.readouterr().err


def _video(path, image, n):  # type: ignore[no-untyped-def]
    import cv2

    bgr = cv2.imread(str(image))
    h, w = bgr.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w - w % 2, h - h % 2))
    for _ in range(n):
        out.write(bgr[: h - h % 2, : w - w % 2])
    out.release()
    return path


def test_liveness_check_judges_a_video_in_door_windows(tmp_path, capsys):  # type: ignore[no-untyped-def]
    # The real capture passes every 5-frame window of the door's vote, the replayed photo none; a partial
    # window at the end is not judged.
    live = _video(tmp_path / "live.avi", SAMPLES / "image_T1.jpg", 12)
    code, out, err = run(capsys, "liveness-check", "--source", str(live))
    assert code == EXIT_OK and out.count("\tlive=yes(") == 12
    assert "door windows (3 live frames of 5, the largest face): 2 of 2 live, 0 refused as spoof" in err
    spoof = _video(tmp_path / "spoof.avi", SAMPLES / "image_F1.jpg", 10)
    _, _, err = run(capsys, "liveness-check", "--source", str(spoof))
    assert "door windows (3 live frames of 5, the largest face): 0 of 2 live, 2 refused as spoof" in err
    _, _, err = run(capsys, "liveness-check", "--source", str(live), "--max-frames", "4")
    assert "fewer than 5 frames with a face: no door window to judge" in err
    _, _, err = run(capsys, "liveness-check", "--source", str(SAMPLES))  # photos of a folder: no windows
    assert "door windows" not in err and "no door window" not in err


def test_liveness_check_finds_faces_as_the_door_does(tmp_path, capsys):  # type: ignore[no-untyped-def]
    # A person far from the camera (a face ~50 px high in 640x480): one short-range pass finds nothing, the door's
    # detection cascade finds it, and liveness-check scores the face the door would score.
    import cv2

    from edge_app.imageio import read_image
    from tests.conftest import kiosk_frame

    img = read_image(SAMPLES / "image_T1.jpg")
    h, w = img.shape[:2]
    far = kiosk_frame(img, (0.0, 0.0, float(w), float(h)), face_fraction=0.35)  # the whole photo, 0.35 of 480 high
    path = tmp_path / "far.png"
    cv2.imwrite(str(path), cv2.cvtColor(far, cv2.COLOR_RGB2BGR))
    code, out, err = run(capsys, "liveness-check", "--source", str(path))
    assert code == EXIT_OK and "1 frame(s), 1 face(s)" in err and "\tlive=" in out
