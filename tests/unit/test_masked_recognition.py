"""Mask-aware enrolment and matching on real photos, real models and a real SQLite gallery."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.enrol import PhotoStatus, embed_photo, masked_embeddings
from edge_app.errors import ModelError
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.store import Gallery
from edge_app.imageio import read_image
from edge_app.models import FALLBACK_THRESHOLDS, ModelSet
from edge_app.recognizer import Reason, RecognitionPolicy, Recognizer
from edge_app.vision.synth_mask import draw_mask, random_style
from tests.conftest import edit_manifest, kiosk_frame


@pytest.fixture(scope="module")
def gallery_db(tmp_path_factory, pipeline, faces_dev, model_set):  # type: ignore[no-untyped-def]
    """Obama enrolled from one unmasked photo (plain + 3 synthetic-masked templates), Biden from his."""
    path = tmp_path_factory.mktemp("g") / "gallery.db"
    with Gallery(path) as g:
        for name, photo in (("Obama", "obama.jpg"), ("Biden", "biden.jpg")):
            r = embed_photo(pipeline, faces_dev / photo, n_masked=3)
            assert r.status is PhotoStatus.OK and r.embedding is not None and len(r.masked_embeddings) == 3
            g.add_person(name)
            g.add_templates(name, np.stack([r.embedding, *r.masked_embeddings]), model_sha=model_set.embedder_sha,
                            masked=[False, True, True, True])
    return path


@pytest.fixture(scope="module")
def recognizer(gallery_db, pipeline, model_set):  # type: ignore[no-untyped-def]
    with Gallery(gallery_db) as g:
        matcher = Matcher.from_gallery(g, model_set.embedder_sha)
    return Recognizer(pipeline, matcher, RecognitionPolicy.from_thresholds(model_set.thresholds()))


def masked_frame(pipeline, img, kind, seed):  # type: ignore[no-untyped-def]
    """A 640x480 door-camera frame of the person wearing a synthetic mask."""
    face = pipeline.process(img, max_faces=1)[0]
    rng = np.random.default_rng(seed)
    return kiosk_frame(draw_mask(img, face.detection.keypoints, random_style(rng, kind), rng), face.detection.box)


def test_calibrated_thresholds_come_from_the_manifest(model_set):
    t = model_set.thresholds()
    rec = model_set.manifest["recognition"][model_set.embedder_entry]
    assert (t.plain, t.masked, t.margin, t.masked_margin) == (
        rec["threshold"], rec["masked_threshold"], rec["margin"], rec["masked_margin"])
    assert t.masked_gallery == rec["masked_gallery"] and t.embedder_sha256 == model_set.embedder_sha
    # Calibrated open-set, per walk-up, for the share of strangers granted (scripts/evaluate.py --openset).
    assert rec["target_fpir_walkup"] == 0.001 and rec["calibration"]["stranger_walkups_granted_worst_kind"] <= 0.001
    assert "stranger walk-ups" in rec["derivation"]


PROBES = [("obama2.jpg", "surgical"), ("obama3.jpg", "kn95"), ("obama2.jpg", "cloth"), ("obama3.jpg", "n95")]


@pytest.mark.parametrize("photo,kind", PROBES)
def test_masked_obama_is_granted_from_one_unmasked_enrolment_photo(recognizer, pipeline, rgb, photo, kind):
    recs = recognizer.recognize(masked_frame(pipeline, rgb(photo), kind, 11), max_faces=1)
    assert len(recs) == 1
    r = recs[0]
    assert r.masked and r.face.mask_probability is not None and r.face.mask_probability >= 0.5
    assert r.threshold == recognizer.policy.masked_threshold
    assert r.name == "Obama" and r.reason is Reason.MATCH and r.granted
    # The calibrated policy decides which templates a masked face meets.
    assert r.match is not None
    if recognizer.policy.masked_gallery == "plain":
        assert not r.match.masked_template


@pytest.mark.parametrize("photo,kind", PROBES)
def test_synthetic_masked_templates_lift_a_masked_probe(recognizer, pipeline, rgb, photo, kind):
    face = recognizer.recognize(masked_frame(pipeline, rgb(photo), kind, 11), max_faces=1)[0].face
    best_all = recognizer.matcher.match(face.embedding, k=2)
    plain = recognizer.matcher.match(face.embedding, k=1, use_masked=False)[0]
    assert best_all[0].name == plain.name == "Obama"
    assert best_all[0].score >= plain.score
    assert best_all[1].name == "Biden" and best_all[0].score > best_all[1].score + 0.2


def test_masked_gallery_policy_is_obeyed(gallery_db, pipeline, model_set, rgb):
    with Gallery(gallery_db) as g:
        matcher = Matcher.from_gallery(g, model_set.embedder_sha)
    t = model_set.thresholds()
    frame = masked_frame(pipeline, rgb("obama3.jpg"), "cloth", 11)
    both = Recognizer(pipeline, matcher, RecognitionPolicy(t.plain, t.masked, masked_gallery="plain+masked"))
    plain = Recognizer(pipeline, matcher, RecognitionPolicy(t.plain, t.masked, masked_gallery="plain"))
    r_both, r_plain = both.recognize(frame, max_faces=1)[0], plain.recognize(frame, max_faces=1)[0]
    assert r_both.match is not None and r_both.match.masked_template  # a masked template is nearer here
    assert r_plain.match is not None and not r_plain.match.masked_template
    with pytest.raises(ValueError, match="masked_gallery must be one of"):
        RecognitionPolicy(0.5, 0.5, masked_gallery="masked")


def test_unmasked_probe_is_matched_against_plain_templates_only(recognizer, rgb):
    for photo in ("obama2.jpg", "obama3.jpg", "obama_partial_face2.jpg"):
        r = recognizer.recognize(rgb(photo), max_faces=1)[0]
        assert r.masked is False and r.threshold == recognizer.policy.threshold
        assert r.name == "Obama" and r.match is not None and r.match.masked_template is False
        assert r.granted


def test_masked_stranger_is_not_taken_for_an_enrolled_person(recognizer, pipeline, rgb, faces_dev):
    # Faces in the multi-person photos are nobody in this gallery, masked or not.
    from edge_app.imageio import read_image

    seen = 0
    for name in ("dlib_2008_001009.jpg", "dlib_2008_001322.jpg", "dlib_2009_004587.jpg"):
        img = read_image(faces_dev / name)
        for face in pipeline.process(img):
            if not face.quality.passed:
                continue
            rng = np.random.default_rng(seen)
            masked = draw_mask(img, face.detection.keypoints, random_style(rng), rng)
            for r in recognizer.recognize(masked):
                assert not r.known, (name, r.match)
            seen += 1
    assert seen >= 3


def test_require_mask_refuses_a_bare_face_and_grants_a_masked_one(gallery_db, pipeline, model_set, rgb):
    with Gallery(gallery_db) as g:
        matcher = Matcher.from_gallery(g, model_set.embedder_sha)
    policy = RecognitionPolicy.from_thresholds(model_set.thresholds(), require_mask=True)
    rec = Recognizer(pipeline, matcher, policy)
    bare = rec.recognize(rgb("obama2.jpg"), max_faces=1)[0]
    assert bare.known and not bare.granted and bare.reason is Reason.NO_MASK
    assert bare.as_dict()["reason"] == "no_mask"
    masked = rec.recognize(masked_frame(pipeline, rgb("obama2.jpg"), "kn95", 5), max_faces=1)[0]
    assert masked.masked and masked.granted and masked.reason is Reason.MATCH


def test_masked_templates_are_deterministic_and_still_this_person(pipeline, rgb):
    img = rgb("obama.jpg")
    face = pipeline.process(img, max_faces=1)[0]
    biden = pipeline.process(rgb("biden.jpg"), max_faces=1)[0].embedding
    a = masked_embeddings(pipeline, img, face.detection.keypoints, 4, seed=42)
    b = masked_embeddings(pipeline, img, face.detection.keypoints, 4, seed=42)
    c = masked_embeddings(pipeline, img, face.detection.keypoints, 4, seed=43)
    assert len(a) == 4
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))
    for e in a:
        assert abs(float(np.linalg.norm(e)) - 1) < 1e-4
        assert float(e @ face.embedding) < 0.99  # a mask changes the embedding
        assert float(e @ face.embedding) > float(e @ biden) + 0.3  # but it is still this person


def test_dlib_embedder_works_through_the_same_code(dlib_model_set, dlib_pipeline, rgb, tmp_path):
    # Sites enrolled with dlib's embedder keep working when they choose it ([recognition] embedder = "dlib").
    with Gallery(tmp_path / "g.db") as g:
        g.add_person("Obama")
        e = dlib_pipeline.process(rgb("obama.jpg"), max_faces=1)[0].embedding
        g.add_templates("Obama", e[None], model_sha=dlib_model_set.embedder_sha, masked=False)
        matcher = Matcher.from_gallery(g, dlib_model_set.embedder_sha)
    rec = Recognizer(dlib_pipeline, matcher, RecognitionPolicy.from_thresholds(dlib_model_set.thresholds()))
    r = rec.recognize(rgb("obama_partial_face2.jpg"), max_faces=1)[0]
    assert r.name == "Obama" and r.threshold == dlib_model_set.thresholds().plain > 0.9


def test_policy_rejects_out_of_range_thresholds():
    with pytest.raises(ValueError, match="masked_threshold is a cosine"):
        RecognitionPolicy(0.9, 1.5)


def test_thresholds_missing_foreign_or_malformed(models_copy, caplog):
    edit_manifest(models_copy, lambda m: m["recognition"].pop("face_embedder"))
    assert ModelSet(models_copy, embedder="sface").thresholds() == FALLBACK_THRESHOLDS
    assert "no calibrated thresholds" in caplog.text

    def foreign(m):  # type: ignore[no-untyped-def]
        m["recognition"]["face_embedder"] = {"threshold": 0.9, "masked_threshold": 0.9, "embedder_sha256": "ab" * 32}

    edit_manifest(models_copy, foreign)
    with pytest.raises(ModelError, match="calibrated for embedder abababababab"):
        ModelSet(models_copy, embedder="sface").thresholds()

    def malformed(m):  # type: ignore[no-untyped-def]
        m["recognition"]["face_embedder"] = {"threshold": "high", "masked_threshold": 0.9, "embedder_sha256": "x"}

    edit_manifest(models_copy, malformed)
    with pytest.raises(ModelError, match="bad 'recognition' thresholds"):
        ModelSet(models_copy, embedder="sface").thresholds()

    def bad_gallery(m):  # type: ignore[no-untyped-def]
        m["recognition"]["face_embedder"] = {"threshold": 0.5, "masked_threshold": 0.5, "masked_gallery": "xyz",
                                             "embedder_sha256": m["models"]["face_embedder"]["sha256"]}

    edit_manifest(models_copy, bad_gallery)
    with pytest.raises(ModelError, match="masked_gallery 'xyz' is not one of"):
        ModelSet(models_copy, embedder="sface").thresholds()


def test_margin_refuses_a_face_close_to_two_enrolled_people(pipeline, model_set, faces_dev, tmp_path):
    """A face that matches two persons about equally (here: the same photo under two names) is nobody
    at a margin above their gap, and is granted without one."""
    r = embed_photo(pipeline, faces_dev / "obama.jpg")
    assert r.embedding is not None
    with Gallery(tmp_path / "g.db") as g:
        for name in ("Obama", "Obama twin"):
            g.add_person(name)
            g.add_templates(name, r.embedding[None], model_sha=model_set.embedder_sha, masked=[False])
        matcher = Matcher.from_gallery(g, model_set.embedder_sha)
    probe = read_image(faces_dev / "obama2.jpg")
    no_margin = Recognizer(pipeline, matcher, RecognitionPolicy(0.3, 0.3, masked_gallery="plain"))
    with_margin = Recognizer(pipeline, matcher, RecognitionPolicy(0.3, 0.3, masked_gallery="plain", margin=0.05))
    a, b = no_margin.recognize(probe)[0], with_margin.recognize(probe)[0]
    assert a.known and a.granted and a.runner_up is not None and abs(a.score - a.runner_up) < 1e-5  # type: ignore[operator]
    assert not b.known and b.reason is Reason.UNKNOWN and b.name == "unknown"
    assert b.as_dict()["margin"] == 0.05 and b.as_dict()["runner_up_score"] is not None


def test_policy_rejects_a_negative_margin():
    with pytest.raises(ValueError, match="margin is a cosine difference in \\[0, 1\\], got -0.1"):
        RecognitionPolicy(0.5, 0.5, margin=-0.1)
