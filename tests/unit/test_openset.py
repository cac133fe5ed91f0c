"""The open-set protocol's decisions (scripts/openset_report.py) agree with the door's own vote and rules."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.access.tracker import Observation, Tracker
from scripts import openset
from scripts import openset_report as rep


def random_scored(rng: np.random.Generator, n: int = 400, persons: int = 4) -> rep.Scored:
    f = openset.FRAMES
    s1 = rng.uniform(0.2, 0.9, (n, f)).astype(np.float32)
    return rep.Scored(top=rng.integers(0, persons, (n, f)), s1=s1, s2=s1 - rng.uniform(0, 0.2, (n, f)),
                      found=rng.random((n, f)) > 0.1, masked=rng.random((n, f)) > 0.5,
                      quality=rng.random((n, f)) > 0.1, pid=rng.integers(-1, persons, n),
                      real_mask=rng.random(n) > 0.5)


def test_walkup_vote_is_the_trackers_decision() -> None:
    rng = np.random.default_rng(3)
    sc = random_scored(rng)
    rule = rep.Rule(0.5, 0.45, 0.05, 0.03)
    grants = rep.walkup_grants(sc, rule)
    acc = rep.accepted(sc, rule)
    box = (10.0, 10.0, 110.0, 110.0)
    for i in range(sc.top.shape[0]):
        tracker = Tracker(votes=rule.votes, window=openset.FRAMES)
        decided = None
        for j in range(openset.FRAMES):
            obs = Observation(box, int(sc.top[i, j]) if acc[i, j] else None, float(sc.s1[i, j]),
                              bool(sc.masked[i, j]), bool(sc.quality[i, j] and sc.found[i, j]))
            for vote in tracker.update([obs]):
                decided = vote.person_id
        assert grants[i] == (-1 if decided is None else decided), i
    assert (grants >= 0).any() and (grants < 0).any()  # the sample exercises both outcomes


def test_margin_and_mask_status_pick_the_rule() -> None:
    sc = rep.Scored(top=np.zeros((2, 5), int), s1=np.full((2, 5), 0.6, np.float32),
                    s2=np.full((2, 5), 0.57, np.float32), found=np.ones((2, 5), bool),
                    masked=np.array([[False] * 5, [True] * 5]), quality=np.ones((2, 5), bool),
                    pid=np.array([0, 0]), real_mask=np.array([False, True]))
    acc = rep.accepted(sc, rep.Rule(0.5, 0.5, margin=0.05, masked_margin=0.0))
    assert not acc[0].any() and acc[1].all()  # gap 0.03: below the plain margin, enough for masked
    acc = rep.accepted(sc, rep.Rule(0.5, 0.65))
    assert acc[0].all() and not acc[1].any()  # masked frames meet the masked threshold


def test_calibration_meets_both_stranger_targets() -> None:
    rng = np.random.default_rng(5)
    parts = []
    for _ in range(3):
        sc = random_scored(rng, n=600)
        gen = sc.pid >= 0
        sc.top[gen] = sc.pid[gen, None]  # enrolled people are their own best match ...
        sc.s1[gen] += 0.15  # ... and score higher than strangers
        parts.append(sc)
    rule, detail = rep.calibrate(parts, target_frame=0.01, target_walkup=0.002, masked_gallery="plain", votes=3)
    for sc in parts:
        assert (rep.accepted(sc, rule) & (sc.pid < 0)[:, None]).mean() <= 0.01 + 1e-9
    assert detail["stranger_walkups_granted"] <= 0.002
    assert detail["unmasked"]["genuine_frames_accepted"] > 0.1  # not "refuse everybody"


def test_calibrated_threshold_holds_strangers_off_without_the_margin() -> None:
    """Scores that all sit high (dlib's cosines do) with a margin that separates well: a margin-only rule
    meets the frame target, but a one-person gallery has no runner-up, so the threshold must do it alone."""
    rng = np.random.default_rng(6)
    parts = []
    for _ in range(3):
        sc = random_scored(rng, n=600)
        gen = sc.pid >= 0
        sc.top[gen] = sc.pid[gen, None]
        sc.s1[:] = rng.uniform(0.90, 0.97, sc.s1.shape)
        sc.s1[gen] += 0.02
        sc.s2[:] = sc.s1 - np.where(gen[:, None], 0.2, rng.uniform(0, 0.03, sc.s1.shape))
        parts.append(sc)
    rule, _ = rep.calibrate(parts, target_frame=0.01, target_walkup=0.002, masked_gallery="plain", votes=3)
    for sc in parts:
        above = sc.found & sc.quality & (sc.s1 >= np.where(sc.masked, rule.masked_threshold, rule.threshold))
        assert above[sc.pid < 0].mean() <= rep.SOLO_FACTOR * 0.01 + 1e-9
    assert rule.threshold > 0.9 and rule.masked_threshold > 0.9


def test_split_is_fixed_by_name_and_salt() -> None:
    names = [f"person{i}" for i in range(400)]
    share = np.mean([openset.is_enrolled(n) for n in names])
    assert 0.5 < share < 0.7
    assert [openset.is_enrolled(n, 1) for n in names] != [openset.is_enrolled(n, 0) for n in names]
    assert [openset.is_enrolled(n, 1) for n in names] == [openset.is_enrolled(n, 1) for n in names]


def test_people_folder_layout_is_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "alice").mkdir()
    with pytest.raises(ValueError, match="alice: expected subfolders masked/ and/or unmasked/"):
        openset.load_people(tmp_path)
    with pytest.raises(FileNotFoundError, match="people folder not found"):
        openset.load_people(tmp_path / "missing")


@pytest.mark.parametrize("masked_dim", [None, 6])
@pytest.mark.parametrize("masked_gallery", ["plain", "plain+masked"])
def test_scores_are_the_matchers(tmp_path, masked_gallery: str, masked_dim: int | None) -> None:  # type: ignore[no-untyped-def]
    """The evaluation measures what the kiosk does: best person, its score and the runner-up's score equal
    the Matcher's (use_masked=False for bare probes; with plain+masked, every template for masked ones; with a
    fused embedder's masked_dim, masked probes on the templates' first masked_dim components, as the Recognizer)."""
    from edge_app.gallery.matcher import Matcher
    from edge_app.gallery.store import Gallery

    rng = np.random.default_rng(8)
    d, persons, f = 16, 5, openset.FRAMES
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    centres = unit(rng.normal(size=(persons, d)))
    plain_pid = np.repeat(np.arange(persons), 3)
    masked_pid = np.repeat(np.arange(persons), 2)
    g = rep.Gallery([f"p{i}" for i in range(persons)], unit(centres[plain_pid] + 0.6 * rng.normal(size=(15, d))),
                    plain_pid, unit(centres[masked_pid] + 0.6 * rng.normal(size=(10, d))), masked_pid)
    n = 12
    emb = unit(centres[rng.integers(0, persons, (n, f))] + 0.6 * rng.normal(size=(n, f, d))).astype(np.float32)
    masked = rng.random((n, f)) > 0.5
    frames = openset.FrameSet(np.ones((n, f), bool), masked, np.ones((n, f), bool), emb)
    sc = rep.score(g, rep.Probes(np.zeros(n, int), np.zeros(n, bool), frames), masked_gallery, None, masked_dim)
    with Gallery(tmp_path / "g.db") as db:
        for i, name in enumerate(g.names):
            db.add_person(name)
            db.add_templates(name, g.plain[plain_pid == i], model_sha="e" * 64, masked=False)
            db.add_templates(name, g.masked[masked_pid == i], model_sha="e" * 64, masked=True)
        m = Matcher.from_gallery(db, "e" * 64)
    for i in range(n):
        for j in range(f):
            every = masked[i, j] and masked_gallery == "plain+masked"
            cut = masked_dim if masked[i, j] and masked_dim else d
            top2 = m.prefix(cut).match(emb[i, j, :cut], k=2, use_masked=None if every else False)
            assert g.names[sc.top[i, j]] == top2[0].name
            assert sc.s1[i, j] == pytest.approx(top2[0].score, abs=1e-5)
            assert sc.s2[i, j] == pytest.approx(top2[1].score, abs=1e-5)


def test_enrolling_masked_photos_makes_them_masked_templates_and_not_probes() -> None:
    """`--enrol-masked N`: an enrolled person's first N masked photos become masked templates (a photo whose
    face is called masked is stored as `edge-app enroll` stores it), the rest of their masked photos probe."""
    from pathlib import Path

    names = [n for n in (f"person{i}" for i in range(50)) if openset.is_enrolled(n, 0)][:2]
    stranger = next(n for n in (f"other{i}" for i in range(50)) if not openset.is_enrolled(n, 0))
    people = [openset.Person(n, [Path(f"{n}/u{j}.jpg") for j in range(2)], [Path(f"{n}/m{j}.jpg") for j in range(2)])
              for n in (*names, stranger)]
    files = [str(f) for p in people for f in p.unmasked + p.masked]
    d, f = 4, openset.FRAMES
    vec = {s: np.eye(d, dtype=np.float32)[i % d] for i, s in enumerate(files)}
    plain = [vec[s] if "/u0" in s else None for s in files]
    masked = [((vec[s] * 2,) if "/u0" in s else (vec[s],) if "/m0" in s else ()) for s in files]
    status = ["ok" if "/u0" in s else "ok_masked" if "/m0" in s else "not_enrolled" for s in files]
    emb = openset.Embedded(files, {s: i for i, s in enumerate(files)})
    emb.enrolment = openset.Enrolment(plain, masked, status)
    n = len(files)
    emb.frames["crop"] = openset.FrameSet(np.ones((n, f), bool), np.zeros((n, f), bool), np.ones((n, f), bool),
                                          np.zeros((n, f, d), np.float32))
    g, enrolled = rep.build_gallery(people, emb, 1, 0, [], masked_k=1)
    assert [p.name for p in enrolled] == names and g.names == names
    assert g.plain.shape[0] == 2 and g.masked.shape[0] == 4  # per person: u0's synthetic + m0 itself
    assert sorted(g.masked_pid.tolist()) == [0, 0, 1, 1]
    pr = rep.probes_of(people, enrolled, g, emb, 1, "crop", masked_k=1)
    # enrolled: u1 and m1 probe (m0 enrolled); the stranger: all four photos
    assert pr.pid.tolist() == [0, 0, 1, 1, -1, -1, -1, -1]
    assert pr.real_mask.tolist() == [False, True, False, True, False, False, True, True]
    g0, _ = rep.build_gallery(people, emb, 1, 0, [])  # without the option: only the bare photo's templates
    assert g0.masked.shape[0] == 2 and rep.probes_of(people, enrolled, g0, emb, 1, "crop").pid.size == 10


def test_tnorm_lowers_a_template_that_resembles_everybody() -> None:
    """`--tnorm`: a template whose cohort cosines are high (a 'hub', e.g. a photo with a white mask) has its
    scores lowered against a template with low cohort cosines at the same raw cosine; with masked_only, bare
    probes keep the raw scores."""
    rng = np.random.default_rng(3)
    d = 16
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    hub_dir = unit(rng.normal(size=d))
    cohort = unit(hub_dir + 0.5 * rng.normal(size=(400, d)))  # background faces crowd around the hub
    plain = np.stack([hub_dir, unit(-hub_dir + 0.1 * rng.normal(size=d))])
    probe = unit(plain[0] + plain[1])  # the same raw cosine with both templates
    raw = probe @ plain.T
    assert raw[0] == pytest.approx(raw[1], abs=0.05)
    s = rep._tnorm(raw[None].astype(np.float32), plain, cohort, 100)[0]
    assert s[0] < s[1] - 0.1
    g = rep.Gallery(["hub", "other"], plain.astype(np.float32), np.array([0, 1]), np.zeros((0, d), np.float32),
                    np.zeros(0, np.int64))
    f = openset.FRAMES
    emb = np.repeat(probe[None, None], f, axis=1).astype(np.float32)
    for masked_only, expect_raw in ((False, False), (True, True)):
        frames = openset.FrameSet(np.ones((1, f), bool), np.zeros((1, f), bool), np.ones((1, f), bool), emb)
        sc = rep.score(g, rep.Probes(np.zeros(1, int), np.zeros(1, bool), frames), "plain",
                       rep.Cohort(cohort, cohort, 100, masked_only))
        plain_sc = rep.score(g, rep.Probes(np.zeros(1, int), np.zeros(1, bool), frames), "plain")
        assert (sc.s1[0, 0] == pytest.approx(plain_sc.s1[0, 0], abs=1e-6)) == expect_raw
        if not expect_raw:
            assert g.names[sc.top[0, 0]] == "other"
