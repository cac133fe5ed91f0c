"""The masked-face evaluation protocol's bookkeeping (scripts/evalmask.py, scripts/facedata.py):
scores per person, genuine/impostor split, rank-1, identity labels, near-copy grouping."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scripts import evalmask, facedata


def unit(v):  # type: ignore[no-untyped-def]
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_person_scores_take_each_persons_best_template():
    templates = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    tpid = np.array([0, 0, 1, 1])
    probes = unit([[1, 0.1, 0], [0, 0, 1]])
    s = evalmask.person_scores(probes, templates, tpid, 3)
    assert s.shape == (2, 3)
    np.testing.assert_allclose(s[0, 0], max(probes[0] @ templates[0], probes[0] @ templates[1]), rtol=1e-6)
    np.testing.assert_allclose(s[1, 1], 1.0, rtol=1e-6)
    assert (s[:, 2] == -1).all()  # a person without templates never matches


def test_masked_probes_of_a_fused_embedder_are_scored_on_the_first_networks_part():
    """masked_dim: a masked probe and the templates it meets are cut to their first components and made unit again,
    as the kiosk's Recognizer does (gallery.Matcher.prefix); bare probes keep the whole fused vector."""
    a = unit([[1, 0], [0, 1], [1, 1]])  # the first network's part of three templates
    b = unit([[0, 1, 0], [1, 0, 0], [0, 0, 1]])  # the second network's
    h = np.sqrt(0.5)
    templates = np.hstack([h * a, h * b]).astype(np.float32)
    enrolled = evalmask.Enrolled(["p0", "p1", "p2"], templates, np.arange(3), templates[:0], np.arange(0))
    masked = np.hstack([unit([[1, 0.2]]), np.zeros((1, 3))]).astype(np.float32)  # SFace alone, zeros after
    probes = evalmask.Probes(np.array([0]), templates[:1], masked, np.array([0]), np.zeros(1), np.zeros(1))
    cut = evalmask.scenario_scores(enrolled, probes, masked_dim=2)
    np.testing.assert_allclose(cut["masked"][0][0], (unit([[1, 0.2]]) @ a.T)[0], atol=1e-6)
    np.testing.assert_allclose(cut["augment"][0][0], (unit([[1, 0.2]]) @ a.T)[0], atol=1e-6)
    whole = evalmask.scenario_scores(enrolled, probes)
    # Uncut, the same probe would score only sqrt(0.5) of its first network's cosine.
    np.testing.assert_allclose(whole["masked"][0][0], h * (unit([[1, 0.2]]) @ a.T)[0], atol=1e-6)
    np.testing.assert_allclose(cut["plain"][0][0], whole["plain"][0][0])  # bare probes: the fused vector


def test_split_scores_and_rank1_with_strangers():
    scores = np.array([[0.9, 0.2], [0.3, 0.4], [0.1, 0.95]], np.float32)
    pid = np.array([0, 0, -1])  # the last probe is a stranger
    genuine, impostor = evalmask.split_scores(scores, pid)
    np.testing.assert_allclose(genuine, [0.9, 0.3])
    np.testing.assert_allclose(sorted(impostor), sorted([0.2, 0.4, 0.1, 0.95]))
    r = evalmask.rank1(scores, pid)
    assert r == {"rate": 0.5, "hits": 1, "n": 2}


def test_threshold_keeps_far_at_target():
    impostor = np.linspace(0, 1, 2000)
    t = evalmask.threshold_at(impostor, 1e-3)
    assert (impostor >= t).sum() <= 2 and (impostor >= np.nextafter(t, -1)).sum() >= 2


def test_halves_are_fixed_by_name_and_both_used():
    names = [f"person{i}" for i in range(200)]
    halves = [evalmask.half_of(n) for n in names]
    assert halves == [evalmask.half_of(n) for n in names]
    assert 60 < halves.count("test") < 140


def test_identity_labels_from_file_names():
    assert facedata.identity_of("1_0_anhu_0004.jpg") == "anhu"
    assert facedata.identity_of("0_0_aidai_0014.jpg") == "aidai"
    assert facedata.identity_of("0_0_0 copy 12.jpg") is None
    assert facedata.identity_of("augmented_image_3.jpg") is None


def record(name: str, chip: np.ndarray, identity: str | None = None) -> facedata.FaceRecord:
    return facedata.FaceRecord(Path(name), False, identity, chip, np.zeros((6, 2)), True, chip)


def test_near_copies_share_a_group_and_split_together():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    a_bright = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)  # an augmented copy
    a_masked = a.copy()
    a_masked[90:] = 200  # the same photo with its lower half covered
    faces = [record("x.jpg", a), record("y.jpg", b), record("x_aug.jpg", a_bright), record("x_mask.jpg", a_masked),
             record("0_0_7 copy 2.jpg", b[::-1].copy()), record("0_0_7 copy 3.jpg", rng.integers(0, 256, (150, 150, 3),
                                                                                             dtype=np.uint8)),
             record("1_0_qiqi_0001.jpg", a[::-1].copy(), "qiqi"),
             record("1_0_qiqi_0002.jpg", rng.integers(0, 256, (150, 150, 3), dtype=np.uint8), "qiqi")]
    keys = facedata.group_keys(faces)
    assert keys[0] == keys[2] == keys[3]  # copies by hash
    assert keys[4] == keys[5]  # copies by name
    assert keys[6] == keys[7]  # one identity
    assert len({keys[0], keys[1], keys[4], keys[6]}) == 4
    val = facedata.split_by_group(keys * 50, 0.5)
    by_key: dict[str, set[bool]] = {}
    for k, v in zip(keys * 50, val, strict=True):
        by_key.setdefault(k, set()).add(bool(v))
    assert all(len(sides) == 1 for sides in by_key.values())
