"""The fused embedders (SFace + EdgeFace-XS [+ Intel's face-reidentification-retail-0095] for bare faces, SFace alone
for masked ones) on real photos and models."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edge_app.config import EMBEDDER_NAMES
from edge_app.enrol import embed_photo
from edge_app.errors import GalleryInputError, ModelNotFoundError
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.store import Gallery
from edge_app.models import EMBEDDERS, FUSION_WEIGHT, ModelSet, embedder_for_gallery, fusion_weights
from edge_app.recognizer import RecognitionPolicy, Recognizer
from edge_app.vision.align import align
from edge_app.vision.embedder import FaceEmbedder, FusedEmbedder
from edge_app.vision.synth_mask import draw_mask, random_style
from tests.conftest import edit_manifest, kiosk_frame


@pytest.fixture(scope="module")
def fused_set() -> ModelSet:
    return ModelSet(embedder="sface+edgeface")


@pytest.fixture(scope="module")
def fused(fused_set):  # type: ignore[no-untyped-def]
    return fused_set.pipeline(num_threads=2)


@pytest.fixture(scope="module")
def sface_set() -> ModelSet:
    return ModelSet(embedder="sface")


@pytest.fixture(scope="module")
def sface_pipe(sface_set):  # type: ignore[no-untyped-def]
    return sface_set.pipeline(num_threads=2)


@pytest.fixture(scope="module")
def parts(fused_set):  # type: ignore[no-untyped-def]
    """The two networks on their own, loaded from the same files."""
    return tuple(FaceEmbedder(fused_set.load(p)) for p in fused_set.embedder_parts)


def chip(pipeline, rgb, name):  # type: ignore[no-untyped-def]
    face = pipeline.process(rgb(name), max_faces=1)[0]
    return align(rgb(name), face.detection.keypoints, pipeline.geometry)


def test_config_and_model_set_offer_the_same_embedders():
    assert set(EMBEDDER_NAMES) == set(EMBEDDERS)


def test_fused_cosine_is_the_weighted_mean_of_the_two_networks(fused, parts, rgb):
    sface, edge = parts
    assert isinstance(fused.embedder, FusedEmbedder)
    assert (fused.embedder.dim, fused.embedder.primary_dim) == (sface.dim + edge.dim, sface.dim)
    chips = [chip(fused, rgb, n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg")]
    e = [fused.embedder.embed(c) for c in chips]
    assert all(abs(float(np.linalg.norm(v)) - 1.0) < 1e-5 for v in e)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        want = (FUSION_WEIGHT * float(sface.embed(chips[i]) @ sface.embed(chips[j]))
                + (1 - FUSION_WEIGHT) * float(edge.embed(chips[i]) @ edge.embed(chips[j])))
        assert float(e[i] @ e[j]) == pytest.approx(want, abs=1e-5)
    # The same person scores higher than another, fused as each network alone does.
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_a_masked_face_is_sfaces_embedding_alone(fused, parts, rgb):
    sface, _ = parts
    c = chip(fused, rgb, "obama.jpg")
    m = fused.embedder.embed(c, masked=True)
    d = fused.embedder.primary_dim
    np.testing.assert_allclose(m[:d], sface.embed(c), atol=1e-6)
    assert not m[d:].any()
    # The bare embedding's first part is SFace's too, scaled: the prefix the masked faces are matched on.
    b = fused.embedder.embed(c)
    np.testing.assert_allclose(b[:d] / np.linalg.norm(b[:d]), sface.embed(c), atol=1e-6)


def test_fused_identity_names_both_models_and_the_weight(fused_set, sface_set, monkeypatch):
    sha = fused_set.embedder_sha
    assert len(sha) == 64 and sha not in {fused_set.info(p).sha256 for p in fused_set.embedder_parts}
    assert sha != sface_set.embedder_sha and fused_set.embedder_dim == 128 + 512
    assert fused_set.embedder_entry == "face_embedder+face_embedder_edgeface"
    # Templates made with another fusion weight are another model's: the identity changes with it.
    monkeypatch.setattr("edge_app.models.FUSION_WEIGHT", 0.6)
    assert ModelSet(embedder="sface+edgeface").embedder_sha != sha
    # Two networks' identity keeps the form galleries enrolled since 2026-12-01 file their templates under.
    parts = [fused_set.info(p).sha256 for p in fused_set.embedder_parts]
    assert sha == hashlib.sha256(f"fused:{'+'.join(parts)}:0.5".encode()).hexdigest()


def test_a_model_set_without_edgeface_names_the_missing_model(models_copy):
    edit_manifest(models_copy, lambda m: m["models"].pop("face_embedder_edgeface"))
    with pytest.raises(ModelNotFoundError, match="no sface\\+edgeface embedder \\('face_embedder_edgeface'\\)"):
        ModelSet(models_copy, embedder="sface+edgeface")
    ModelSet(models_copy, embedder="sface")  # SFace alone still loads


def test_fusion_refuses_mismatched_networks(parts):
    sface, edge = parts
    with pytest.raises(ValueError, match="fusion weights must be in \\(0, 1\\) and sum to 1"):
        FusedEmbedder((sface, edge), (1.0, 0.0))
    with pytest.raises(ValueError, match="sum to 1"):
        FusedEmbedder((sface, edge), (0.5, 0.6))
    with pytest.raises(ValueError, match="two or more networks and a weight each, got 1 networks"):
        FusedEmbedder((sface,), (1.0,))
    with pytest.raises(ValueError, match="2 networks and 3 weights"):
        FusedEmbedder((sface, edge), (0.3, 0.3, 0.4))
    with pytest.raises(ValueError, match="same models, in the same order"):
        FusedEmbedder((sface, edge), (0.5, 0.5), side_by_side=(edge, sface))


def test_the_two_networks_side_by_side_give_the_embeddings_of_the_two_in_turn(fused_set, fused, rgb):
    """With 2 threads a bare face runs SFace and EdgeFace at the same time (one thread each, the second on the
    "embed_0" worker); with 1 thread, or asked not to, in turn. Same numbers either way, masked faces too."""
    import threading

    in_turn = fused_set.pipeline(num_threads=2, embed_side_by_side=False).embedder
    one_thread = fused_set.pipeline(num_threads=1).embedder
    assert isinstance(in_turn, FusedEmbedder) and isinstance(one_thread, FusedEmbedder)
    assert isinstance(fused.embedder, FusedEmbedder) and fused.embedder.parallel
    assert not in_turn.parallel and not one_thread.parallel
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        c = chip(fused, rgb, name)
        for masked in (False, True):
            want = in_turn.embed(c, masked=masked)
            np.testing.assert_allclose(fused.embedder.embed(c, masked=masked), want, atol=1e-6)
            np.testing.assert_allclose(one_thread.embed(c, masked=masked), want, atol=1e-6)
    assert any(t.name.startswith("embed_") for t in threading.enumerate())


@pytest.fixture(scope="module")
def three_set() -> ModelSet:
    return ModelSet(embedder="sface+edgeface+reid")


def test_three_networks_fuse_to_the_mean_of_their_cosines_side_by_side_or_in_turn(three_set, fused, rgb):
    """The default embedder: SFace, EdgeFace-XS and face-reidentification-retail-0095, a third each; the third
    network's cosines order these faces as the others do; run side by side (one worker thread per extra network)
    or in turn, the same numbers; a masked face is SFace's alone."""
    import threading

    assert three_set.embedder == "sface+edgeface+reid" and fusion_weights(3) == pytest.approx((1 / 3,) * 3)
    assert three_set.embedder_entry == "face_embedder+face_embedder_edgeface+face_embedder_reid"
    assert three_set.embedder_dim == 128 + 512 + 256
    side = three_set.pipeline(num_threads=2).embedder
    in_turn = three_set.pipeline(num_threads=2, embed_side_by_side=False).embedder
    assert isinstance(side, FusedEmbedder) and side.parallel and not in_turn.parallel
    nets = [FaceEmbedder(three_set.load(p)) for p in three_set.embedder_parts]
    chips = [chip(fused, rgb, n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg")]
    e = [side.embed(c) for c in chips]
    for c, v in zip(chips, e, strict=True):
        np.testing.assert_allclose(v, in_turn.embed(c), atol=1e-6)
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    for i, j in ((0, 1), (0, 2), (1, 2)):
        want = sum(float(n.embed(chips[i]) @ n.embed(chips[j])) for n in nets) / 3
        assert float(e[i] @ e[j]) == pytest.approx(want, abs=1e-5)
    reid = nets[2]
    same, other = (float(reid.embed(chips[0]) @ reid.embed(chips[k])) for k in (1, 2))
    assert same > other + 0.2  # Obama is nearer Obama than Biden for the third network too
    m = side.embed(chips[0], masked=True)
    np.testing.assert_allclose(m[:128], nets[0].embed(chips[0]), atol=1e-6)
    assert not m[128:].any()
    assert sum(t.name.startswith("embed_") for t in threading.enumerate()) >= 2


def test_three_network_identity_differs_from_the_two_network_one(three_set, fused_set, models_copy):
    assert three_set.embedder_sha not in (fused_set.embedder_sha, *(three_set.info(p).sha256
                                                                    for p in three_set.embedder_parts))
    edit_manifest(models_copy, lambda m: m["models"].pop("face_embedder_reid"))
    with pytest.raises(ModelNotFoundError, match="face_embedder_reid"):
        ModelSet(models_copy, embedder="sface+edgeface+reid")
    assert ModelSet(models_copy, embedder="sface+edgeface").embedder_sha == fused_set.embedder_sha


def test_matcher_prefix_is_the_first_networks_gallery(tmp_path):
    rng = np.random.default_rng(3)
    with Gallery(tmp_path / "g.db") as g:
        for name in ("Ann", "Ben", "Cat"):
            g.add_person(name)
            g.add_templates(name, rng.normal(size=(3, 12)), model_sha="e" * 64, masked=[False, True, False])
        full = Matcher.from_gallery(g, "e" * 64)
        ts = g.load_templates("e" * 64)
    cut = full.prefix(5)
    assert (cut.dim, cut.n_templates, cut.n_persons) == (5, 9, 3) and full.prefix(5) is cut
    assert full.prefix(12) is full
    # The same answers as a gallery holding only the first 5 components.
    with Gallery(tmp_path / "h.db") as h:
        for pid, name in ts.names.items():
            rows = ts.person_ids == pid
            h.add_person(name)
            h.add_templates(name, ts.embeddings[rows, :5], model_sha="e" * 64, masked=ts.masked[rows].tolist())
        ref = Matcher.from_gallery(h, "e" * 64)
    for _ in range(5):
        p = rng.normal(size=5)
        for use in (None, False, True):
            got, want = cut.match(p, k=3, use_masked=use), ref.match(p, k=3, use_masked=use)
            assert [(m.name, m.masked_template) for m in got] == [(m.name, m.masked_template) for m in want]
            np.testing.assert_allclose([m.score for m in got], [m.score for m in want], atol=1e-6)
    for bad in (0, 13, -1, True):
        with pytest.raises(GalleryInputError, match="prefix length"):
            full.prefix(bad)


def test_masked_faces_score_as_with_sface_alone_bare_faces_fused(fused, fused_set, sface_pipe, sface_set, rgb,
                                                                  faces_dev, tmp_path):
    """One gallery per embedder from the same enrolment photos: a masked probe gets SFace's own score from
    the fused gallery, a bare probe the fused score."""
    recognizers = {}
    for key, pipe, ms in (("fused", fused, fused_set), ("sface", sface_pipe, sface_set)):
        with Gallery(tmp_path / f"{key}.db") as g:
            for name, photo in (("Obama", "obama.jpg"), ("Biden", "biden.jpg")):
                r = embed_photo(pipe, faces_dev / photo, n_masked=2)
                assert r.embedding is not None and len(r.masked_embeddings) == 2
                g.add_person(name)
                g.add_templates(name, np.stack([r.embedding, *r.masked_embeddings]), model_sha=ms.embedder_sha,
                                masked=[False, True, True])
            matcher = Matcher.from_gallery(g, ms.embedder_sha)
        assert matcher.dim == pipe.embedder.dim
        recognizers[key] = Recognizer(pipe, matcher, RecognitionPolicy(0.3, 0.3))
    img = rgb("obama2.jpg")
    face = sface_pipe.process(img, max_faces=1)[0]
    rng = np.random.default_rng(5)
    frame = kiosk_frame(draw_mask(img, face.detection.keypoints, random_style(rng, "surgical"), rng),
                        face.detection.box)
    masked = {k: r.recognize(frame, max_faces=1)[0] for k, r in recognizers.items()}
    assert masked["fused"].masked and masked["sface"].masked
    assert masked["fused"].name == "Obama" and masked["fused"].score is not None
    assert masked["fused"].score == pytest.approx(masked["sface"].score, abs=1e-5)
    bare = {k: r.recognize(img, max_faces=1)[0] for k, r in recognizers.items()}
    assert not bare["fused"].masked and bare["fused"].name == bare["sface"].name == "Obama"
    assert bare["fused"].score != pytest.approx(bare["sface"].score, abs=1e-3)  # EdgeFace has its say


def test_auto_takes_the_galleries_own_embedder_only_when_it_is_not_the_default(fused_set, sface_set):
    dlib = ModelSet(embedder="dlib").embedder_sha
    sface, fused = sface_set.embedder_sha, fused_set.embedder_sha
    three = ModelSet().embedder_sha
    default = "sface+edgeface+reid"
    assert embedder_for_gallery(None, {}) == (default, None)  # a new gallery
    assert embedder_for_gallery(None, {three: 8}) == (default, None)
    name, warning = embedder_for_gallery(None, {sface: 12})
    assert name == "sface" and warning is not None and "12 templates were made by the sface embedder" in warning
    # A gallery enrolled with the default of 2026-12-01 keeps its embedder, and is told how to move.
    name, warning = embedder_for_gallery(None, {fused: 7})
    assert name == "sface+edgeface" and warning is not None and f'embedder = "{default}"' in warning
    assert embedder_for_gallery(None, {dlib: 3})[0] == "dlib"
    # Mixed (people being enrolled again), or templates of no embedder of this model set: the default.
    assert embedder_for_gallery(None, {sface: 12, three: 4}) == (default, None)
    assert embedder_for_gallery(None, {fused: 12, three: 4}) == (default, None)
    assert embedder_for_gallery(None, {sface: 12, dlib: 3}) == (default, None)
    assert embedder_for_gallery(None, {"ab" * 32: 5}) == (default, None)


def test_detection_eval_scores_a_masked_probe_as_the_door_does():
    """scripts/detection_eval.py compares probes with bare templates pairwise: a fused masked probe (zeros after SFace's
    part) on SFace's part alone, made unit, as Matcher.prefix does; anything else by the plain cosine."""
    from scripts.detection_eval import pair_score

    rng = np.random.default_rng(2)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    a_t, b_t, a_p, b_p = (unit(rng.normal(size=n)) for n in (4, 6, 4, 6))
    h = np.sqrt(0.5)
    template = np.concatenate([h * a_t, h * b_t])
    masked = np.concatenate([a_p, np.zeros(6)])
    bare = np.concatenate([h * a_p, h * b_p])
    assert pair_score(template, masked, 4) == pytest.approx(float(a_t @ a_p), abs=1e-9)
    assert pair_score(template, bare, 4) == pytest.approx(0.5 * float(a_t @ a_p) + 0.5 * float(b_t @ b_p), abs=1e-9)
    assert pair_score(a_t, a_p, 4) == pytest.approx(float(a_t @ a_p), abs=1e-9)  # one network: the cosine
