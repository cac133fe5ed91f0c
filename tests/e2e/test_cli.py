"""`edge-app` end to end on real photos, real models and a real SQLite gallery."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge_app.cli import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, main
from edge_app.gallery.store import Gallery
from edge_app.imageio import read_image
from tests.conftest import kiosk_frame, write_video


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "gallery.db"
    monkeypatch.setenv("EDGE_APP_GALLERY", str(path))
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def enrolled(db, faces_dev, capsys):
    assert run(capsys, "enroll", "--name", "Barack Obama", str(faces_dev / "obama.jpg"),
               str(faces_dev / "obama2.jpg"))[0] == EXIT_OK
    assert run(capsys, "enroll", "--name", "Joe Biden", str(faces_dev / "biden.jpg"))[0] == EXIT_OK
    return db


def test_enroll_and_list(enrolled, capsys):
    code, out, _ = run(capsys, "gallery", "list", "--json")
    assert code == EXIT_OK
    data = json.loads(out)
    # One plain and three synthetic-masked templates per accepted photo.
    assert {p["name"]: p["templates"] for p in data["persons"]} == {"Barack Obama": 8, "Joe Biden": 4}
    assert {p["name"]: p["masked_templates"] for p in data["persons"]} == {"Barack Obama": 6, "Joe Biden": 3}
    assert data["gallery_version"] >= 2


def test_enroll_skips_group_photo_and_reports_it(db, faces_dev, capsys):
    code, out, err = run(capsys, "enroll", "--name", "Obama", "--json", str(faces_dev / "obama3.jpg"),
                         str(faces_dev / "dlib_2008_002506.jpg"), str(faces_dev / "dlib_2008_002079.jpg"))
    assert code == EXIT_PARTIAL
    report = json.loads(out)
    assert report["enrolled"] == 4 and report["plain_templates"] == 1 and report["masked_templates"] == 3
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
    assert reasons == {"dlib_2008_002506.jpg": "multiple_faces", "dlib_2008_002079.jpg": "multiple_faces"}
    assert "3 faces found" in err


def test_enroll_with_no_usable_photo_creates_nobody(db, faces_dev, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    code, _, err = run(capsys, "enroll", "--name", "Nobody", str(bad), str(faces_dev / "dlib_2008_002506.jpg"))
    assert code == EXIT_ERROR
    assert "bad.jpg" in err and "nothing enrolled" in err
    with Gallery(db) as g:
        assert g.list_persons() == []


def test_recognize_single_image(enrolled, faces_dev, capsys):
    code, out, _ = run(capsys, "recognize", str(faces_dev / "obama_partial_face2.jpg"))
    assert code == EXIT_OK
    line = out.strip()
    assert "\tBarack Obama\t" in line and "\tmask=no(0." in line and "quality=ok" in line
    assert line.endswith("decision=granted:match")


def test_recognize_folder_json(enrolled, faces_dev, capsys):
    code, out, _ = run(capsys, "recognize", str(faces_dev), "--json")
    assert code == EXIT_OK
    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) == len(list(faces_dev.glob("*.jpg")))
    by_file = {f["origin"].rsplit("/", 1)[-1]: f["faces"] for f in frames}
    for name in ("obama_partial_face.jpg", "obama_partial_face2.jpg"):
        assert [f["name"] for f in by_file[name]] == ["Barack Obama"]
        assert by_file[name][0]["mask"]["worn"] is False and by_file[name][0]["reason"] == "match"
    assert [f["name"] for f in by_file["obama3.jpg"]] == ["Barack Obama"]
    assert [f["name"] for f in by_file["biden.jpg"]] == ["Joe Biden"]
    # Strangers in the group photos are never taken for an enrolled person.
    strangers = [f for n, fs in by_file.items() if n.startswith("dlib_") for f in fs]
    assert strangers and all(f["name"] == "unknown" for f in strangers)


def test_recognize_video_and_annotate(enrolled, faces_dev, pipeline, tmp_path, capsys):
    frames = []
    for name in ("biden.jpg", "obama_partial_face2.jpg"):
        img = read_image(faces_dev / name)
        frames += [kiosk_frame(img, pipeline.detector.detect(img)[0].box)] * 3
    video = write_video(tmp_path / "door.avi", frames, fps=5)
    out_video = tmp_path / "annotated.mp4"
    code, out, _ = run(capsys, "recognize", str(video), "--annotate", str(out_video))
    assert code == EXIT_OK
    names = [line.split("\t")[1] for line in out.splitlines()]
    assert names == ["Joe Biden"] * 3 + ["Barack Obama"] * 3
    assert out.splitlines()[4].startswith(f"{video}#4\t")
    cap = cv2.VideoCapture(str(out_video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()


def test_annotate_image_draws_on_the_face(enrolled, faces_dev, tmp_path, capsys):
    out_img = tmp_path / "ann.png"
    assert run(capsys, "recognize", str(faces_dev / "biden.jpg"), "--annotate", str(out_img))[0] == EXIT_OK
    before, after = read_image(faces_dev / "biden.jpg"), read_image(out_img)
    assert before.shape == after.shape
    changed = np.any(before != after, axis=2)
    assert 0.001 < changed.mean() < 0.2  # a box and a label, not a repaint


def test_gallery_remove_and_export(enrolled, tmp_path, capsys):
    code, out, _ = run(capsys, "gallery", "remove", "Joe Biden")
    assert code == EXIT_OK and "4 template(s)" in out
    code, _, err = run(capsys, "gallery", "remove", "Joe Biden")
    assert code == EXIT_ERROR and "Joe Biden" in err
    export = tmp_path / "export.json"
    assert run(capsys, "gallery", "export", str(export))[0] == EXIT_OK
    doc = json.loads(export.read_text())
    assert [p["name"] for p in doc["persons"]] == ["Barack Obama"]
    assert len(doc["persons"][0]["templates"]) == 8


def test_templates_of_another_model_are_reported_not_compared(db, faces_dev, pipeline, rgb, capsys):
    emb = pipeline.process(rgb("obama.jpg"))[0].embedding
    with Gallery(db) as g:
        g.add_person("Old Model Obama")
        g.add_templates("Old Model Obama", emb[None], model_sha="ab" * 32, masked=False)
    code, out, err = run(capsys, "recognize", str(faces_dev / "obama.jpg"))
    assert code == EXIT_OK
    assert "1 template(s)" in err and "another embedder model" in err
    assert "\tunknown\t" in out  # the identical face is not matched through a foreign template


def test_a_gallery_enrolled_with_sface_alone_keeps_opening_after_the_default_changed(db, faces_dev, tmp_path, capsys):
    """embedder = "auto" (the default): a gallery whose templates are all SFace's (enrolled before the default became
    sface+edgeface, then sface+edgeface+reid) is matched with SFace, with a warning saying how to move; set
    explicitly, the default embedder reports those templates as another model's and matches nobody through them."""
    old = tmp_path / "old.toml"
    old.write_text('[recognition]\nembedder = "sface"\n')
    assert run(capsys, "enroll", "--name", "Barack Obama", str(faces_dev / "obama.jpg"), "--config",
               str(old))[0] == EXIT_OK
    code, out, err = run(capsys, "recognize", str(faces_dev / "obama2.jpg"), "--json")
    face = json.loads(out)["faces"][0]
    assert code == EXIT_OK and face["name"] == "Barack Obama" and face["granted"], (out, err)
    assert "made by the sface embedder, so it is used" in err and 'embedder = "sface+edgeface+reid"' in err
    new = tmp_path / "new.toml"
    new.write_text('[recognition]\nembedder = "sface+edgeface+reid"\n')
    code, out, err = run(capsys, "recognize", str(faces_dev / "obama2.jpg"), "--json", "--config", str(new))
    assert code == EXIT_OK and json.loads(out)["faces"][0]["name"] == "unknown"
    assert "another embedder model" in err and "made by the sface embedder" not in err
    # Enrolled again with the default, the gallery holds its templates: "auto" takes the default, no warning.
    assert run(capsys, "enroll", "--name", "Barack Obama", "--replace", str(faces_dev / "obama.jpg"), "--config",
               str(new))[0] == EXIT_OK
    code, out, err = run(capsys, "recognize", str(faces_dev / "obama2.jpg"), "--json")
    assert json.loads(out)["faces"][0]["name"] == "Barack Obama" and "so it is used" not in err


def test_folder_with_a_corrupt_image_reports_and_continues(enrolled, faces_dev, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(faces_dev / "biden.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"corrupt")
    code, out, err = run(capsys, "recognize", str(folder))
    assert code == EXIT_PARTIAL
    assert "Joe Biden" in out and "b.jpg" in err and "1 unreadable" in err


def test_bad_inputs_exit_with_clear_errors(db, tmp_path, capsys):
    Gallery(db).close()  # recognize reads an existing gallery (a missing one is its own error)
    code, _, err = run(capsys, "recognize", str(tmp_path / "missing.jpg"))
    assert code == EXIT_ERROR and "missing.jpg" in err
    code, _, err = run(capsys, "recognize", str(tmp_path), "--models", str(tmp_path / "nomodels"))
    assert code == EXIT_ERROR and "manifest not found" in err
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"nope")
    code, _, err = run(capsys, "recognize", str(bad))
    assert code == EXIT_ERROR and "x.jpg" in err
    with pytest.raises(SystemExit) as e:
        main(["recognize", "a.jpg", "--threshold", "7"])
    assert e.value.code == 2


def test_installed_entry_point(enrolled, faces_dev):
    exe = shutil.which("edge-app") or str(__import__("pathlib").Path(sys.executable).parent / "edge-app")
    res = subprocess.run([exe, "recognize", str(faces_dev / "biden.jpg"), "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["faces"][0]["name"] == "Joe Biden"


# --- masks -----------------------------------------------------------------------------------------


def masked_copy(pipeline, src, dst, kind="surgical", seed=1):  # type: ignore[no-untyped-def]
    from edge_app.imageio import write_image
    from edge_app.vision.synth_mask import draw_mask, random_style

    img = read_image(src)
    face = pipeline.process(img, max_faces=1)[0]
    rng = np.random.default_rng(seed)
    write_image(dst, draw_mask(img, face.detection.keypoints, random_style(rng, kind), rng))
    return dst


def test_recognize_prints_mask_status_and_uses_the_masked_threshold(enrolled, faces_dev, pipeline, tmp_path,
                                                                    capsys):
    probe = masked_copy(pipeline, faces_dev / "obama_partial_face.jpg", tmp_path / "masked.png")
    stranger = masked_copy(pipeline, faces_dev / "biden.jpg", tmp_path / "biden_masked.png")
    code, out, _ = run(capsys, "recognize", str(probe), "--json")
    assert code == EXIT_OK
    face = json.loads(out)["faces"][0]
    assert face["mask"]["worn"] is True and face["mask"]["probability"] >= 0.5
    from edge_app.models import ModelSet

    t = ModelSet().thresholds()
    assert face["threshold"] == round(t.masked, 4)
    assert face["best_candidate"] == "Barack Obama" and face["reason"] == "match"
    if t.masked_gallery == "plain":  # calibration decides whether masked templates take part
        assert face["matched_masked_template"] is False
    code, out, _ = run(capsys, "recognize", str(probe))
    assert "\tmask=yes(" in out
    # Biden in a mask is Biden, not Obama.
    code, out, _ = run(capsys, "recognize", str(stranger), "--json")
    assert json.loads(out)["faces"][0]["best_candidate"] == "Joe Biden"


def test_require_mask_refuses_a_bare_face(enrolled, faces_dev, capsys):
    code, out, _ = run(capsys, "recognize", str(faces_dev / "obama_partial_face2.jpg"), "--require-mask")
    assert code == EXIT_OK
    assert "\tBarack Obama\t" in out and out.strip().endswith("decision=refused:no_mask")


def test_enroll_without_masked_templates(db, faces_dev, capsys):
    code, out, _ = run(capsys, "enroll", "--name", "Obama", "--masked-templates", "0", "--json",
                       str(faces_dev / "obama.jpg"))
    assert code == EXIT_OK
    assert json.loads(out)["masked_templates"] == 0
    with Gallery(db) as g:
        assert [p.n_templates for p in g.list_persons()] == [1]
    with pytest.raises(SystemExit) as e:
        main(["enroll", "--name", "x", "--masked-templates", "11", "a.jpg"])
    assert e.value.code == 2


def test_config_file_sets_thresholds_and_policy(enrolled, faces_dev, tmp_path, capsys):
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[recognition]\nthreshold = 0.999\nrequire_mask = true\n")
    code, out, _ = run(capsys, "recognize", str(faces_dev / "obama_partial_face2.jpg"), "--config", str(cfg),
                       "--json")
    assert code == EXIT_OK
    face = json.loads(out)["faces"][0]
    assert face["threshold"] == 0.999 and face["reason"] == "unknown"
    # A flag beats the file.
    code, out, _ = run(capsys, "recognize", str(faces_dev / "obama_partial_face2.jpg"), "--config", str(cfg),
                       "--threshold", "0.3", "--json")
    assert json.loads(out)["faces"][0]["reason"] == "no_mask"


def test_a_config_threshold_below_the_calibrated_one_is_refused_unless_accepted(enrolled, faces_dev, tmp_path,
                                                                              capsys):
    """A value copied from another embedder (SFace's ~0.55 kept when switching to dlib, calibrated at 0.965)
    would let strangers in: the door refuses to start on it, naming the key, the file and the calibrated value."""
    from edge_app.models import ModelSet

    t = ModelSet().thresholds()
    photo = str(faces_dev / "obama_partial_face2.jpg")
    cfg = tmp_path / "edge.toml"
    for key, value in (("threshold", t.plain - 0.05), ("masked_threshold", t.masked - 0.01),
                       ("masked_margin", max(0.0, t.masked_margin - 0.05))):
        cfg.write_text(f"[recognition]\n{key} = {value:.4f}\n")
        code, _, err = run(capsys, "recognize", photo, "--config", str(cfg))
        assert code == EXIT_ERROR and f"[recognition] {key} = " in err and "edge.toml" in err, err
        assert "accept_weaker_thresholds" in err
        code, _, err = run(capsys, "run", "--config", str(cfg), "--check-config")
        assert code == EXIT_ERROR and f"[recognition] {key}" in err
    cfg.write_text(f"[recognition]\nthreshold = {t.plain - 0.05:.4f}\naccept_weaker_thresholds = true\n")
    assert run(capsys, "recognize", photo, "--config", str(cfg))[0] == EXIT_OK
    cfg.write_text(f"[recognition]\nthreshold = {t.plain + 0.05:.4f}\n")  # stricter: always fine
    assert run(capsys, "recognize", photo, "--config", str(cfg))[0] == EXIT_OK


def test_bad_config_names_the_key_and_the_file(db, faces_dev, tmp_path, capsys):
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[recognition]\nthreshhold = 0.9\n")
    code, _, err = run(capsys, "recognize", str(faces_dev / "biden.jpg"), "--config", str(cfg))
    assert code == EXIT_ERROR
    assert "edge.toml" in err and "threshhold" in err and 'did you mean "threshold"' in err
    code, _, err = run(capsys, "gallery", "list", "--config", str(tmp_path / "missing.toml"))
    assert code == EXIT_ERROR and "missing.toml" in err


def test_enrolling_only_masked_photos_is_refused_and_a_masked_photo_is_a_masked_template(db, faces_dev, masked_photo,
                                                                                        capsys):
    """The thresholds are calibrated for bare enrolment photos (plus their synthetic masks): a person known
    only from masked faces would be matched outside those stranger rates."""
    code, _, err = run(capsys, "enroll", "--name", "Ann", str(masked_photo))
    assert code == EXIT_ERROR and "every usable photo of 'Ann' shows a mask" in err
    with Gallery(db) as g:
        assert g.list_persons() == []
    code, out, _ = run(capsys, "enroll", "--name", "Ann", str(masked_photo), str(faces_dev / "obama.jpg"), "--json")
    report = json.loads(out)
    assert code == EXIT_OK and (report["plain_templates"], report["masked_templates"]) == (1, 4)
    # More masked photos for someone who keeps a bare template: fine; replacing everything with them: refused.
    assert run(capsys, "enroll", "--name", "Ann", str(masked_photo))[0] == EXIT_OK
    assert run(capsys, "enroll", "--name", "Ann", str(masked_photo), "--replace")[0] == EXIT_ERROR
    with Gallery(db) as g:
        [ann] = g.list_persons()
        assert (ann.n_templates, ann.n_masked) == (6, 5)
