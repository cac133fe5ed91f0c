"""Scores, door decisions, figures and calibration of the open-set protocol (scripts/openset.py).

Everything here is numpy on cached embeddings. A frame is matched as the kiosk matches it
(edge_app.recognizer): unmasked faces meet the plain templates, masked faces (the classifier's call)
meet the plain ones or plain + synthetic-masked ones as ``masked_gallery`` says; the best template of
each person is that person's score. A frame is *accepted* for its best person when the face passed the
quality gates, the score reaches the threshold of its mask status, and it beats the second-best person
by the margin. A walk-up is granted when ``votes`` of its frames are accepted for one person
(edge_app.access.tracker.Tracker decides the same for one track; tests check they agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_app.gallery.matcher import centroids, fuse
from scripts.openset import PRESENTATIONS, Embedded, FrameSet, Person, is_enrolled

FPIRS = (1e-2, 1e-3)


@dataclass(frozen=True)
class Rule:
    threshold: float
    masked_threshold: float
    margin: float = 0.0
    masked_margin: float = 0.0
    masked_gallery: str = "plain"
    votes: int = 3


@dataclass
class Gallery:
    names: list[str]  # person index -> name (filler persons included)
    plain: np.ndarray  # (n, d) unit rows
    plain_pid: np.ndarray
    masked: np.ndarray  # (m, d)
    masked_pid: np.ndarray


@dataclass
class Probes:
    """Frames of one presentation, probe photos in rows."""

    pid: np.ndarray  # (n,) gallery person index, -1 for a stranger
    real_mask: np.ndarray  # (n,) the photo is from a masked/ folder
    frames: FrameSet


def build_gallery(people: Sequence[Person], emb: Embedded, k: int, salt: int,
                  fillers: Sequence[str], masked_k: int = 0) -> tuple[Gallery, list[Person]]:
    """Enrolled people of this split with their first k unmasked photos (and, with ``masked_k``, their first
    masked photos too, as a site that enrols people with their mask on), plus filler persons."""
    assert emb.enrolment is not None
    names: list[str] = []
    rows: list[np.ndarray] = []
    pids: list[int] = []
    mrows: list[np.ndarray] = []
    mpids: list[int] = []
    enrolled: list[Person] = []

    def add(name: str, files: Sequence[str]) -> bool:
        assert emb.enrolment is not None
        got = [i for i in (emb.index[f] for f in files) if emb.enrolment.status[i] in ("ok", "ok_masked")]
        if not got:
            return False
        pid = len(names)
        names.append(name)
        for i in got:
            plain = emb.enrolment.plain[i]
            if plain is not None:
                rows.append(plain)
                pids.append(pid)
            for m in emb.enrolment.masked[i]:
                mrows.append(m)
                mpids.append(pid)
        return True

    for p in people:
        photos = [str(f) for f in p.unmasked[:k] + p.masked[:masked_k]]
        if is_enrolled(p.name, salt) and len(p.unmasked) >= k and add(p.name, photos):
            enrolled.append(p)
    for f in fillers:
        add(f"filler:{f}", [f])
    dim = emb.frames[PRESENTATIONS[0]].emb.shape[-1]
    unit = _unit(np.asarray(rows, np.float32).reshape(-1, dim))
    munit = _unit(np.asarray(mrows, np.float32).reshape(-1, dim))
    return Gallery(names, unit, np.asarray(pids), munit, np.asarray(mpids, dtype=np.int64)), enrolled


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def probes_of(people: Sequence[Person], enrolled: Sequence[Person], gallery: Gallery, emb: Embedded, k: int,
              how: str, masked_k: int = 0) -> Probes:
    """Enrolled people's photos not used to enrol them, and every photo of the strangers."""
    pid_of = {n: i for i, n in enumerate(gallery.names)}
    enrolled_names = {p.name for p in enrolled}
    rows, pid, real = [], [], []
    for p in people:
        known = p.name in enrolled_names
        photos = [(f, False) for f in (p.unmasked[k:] if known else p.unmasked)]
        photos += [(f, True) for f in (p.masked[masked_k:] if known else p.masked)]
        for f, masked in photos:
            rows.append(emb.index[str(f)])
            pid.append(pid_of[p.name] if known else -1)
            real.append(masked)
    fs = emb.frames[how]
    idx = np.asarray(rows, np.intp)
    return Probes(np.asarray(pid), np.asarray(real, bool),
                  FrameSet(fs.found[idx], fs.masked[idx], fs.quality[idx], fs.emb[idx]))


@dataclass
class Cohort:
    """Background faces for template-side score normalisation (t-norm, an experiment: --tnorm): the cosines of
    a template with the ``top`` most alike cohort faces give its own impostor mean and spread. ``plain`` meets
    templates when the probe is bare, ``masked`` (synthetic-masked faces) when it is masked."""

    plain: np.ndarray
    masked: np.ndarray
    top: int = 300
    masked_only: bool = False  # bare probes keep raw cosines


def _tnorm(scores: np.ndarray, rows: np.ndarray, cohort: np.ndarray, top: int) -> np.ndarray:
    """Each column's cosines as z-scores against that template's cohort, put back on the cosine scale (mean
    and spread of all the templates' cohorts) so that thresholds keep their meaning and the calibration grid."""
    c = _unit(rows) @ _unit(cohort).T
    c = -np.sort(-c, axis=1)[:, :top]
    mu, sd = c.mean(1), c.std(1) + 1e-6
    return np.asarray(mu.mean() + sd.mean() * (scores - mu[None]) / sd[None], np.float32)


def _best_per_person(e: np.ndarray, t: np.ndarray, tpid: np.ndarray, n_persons: int,
                     cohort: np.ndarray | None = None, top: int = 300) -> np.ndarray:
    """Each person's score as the kiosk's Matcher gives it (best and mean template fused)."""
    out = np.full((e.shape[0], n_persons), -1.0, np.float32)
    if t.shape[0]:
        order = np.argsort(tpid, kind="stable")  # rows grouped by person, as the Matcher keeps them
        pid = tpid[order]
        rows = _unit(t[order]).astype(np.float32)
        starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
        u = _unit(e).astype(np.float32)
        cent = centroids(rows, starts)
        s_rows, s_cent = u @ rows.T, u @ cent.T
        if cohort is not None:
            s_rows, s_cent = _tnorm(s_rows, rows, cohort, top), _tnorm(s_cent, cent, cohort, top)
        out[:, pid[starts]] = fuse(np.maximum.reduceat(s_rows, starts, axis=1), s_cent)
    return out


@dataclass
class Scored:
    """Per frame (n, F): best person, its score, the runner-up's score; found/masked/quality flags."""

    top: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    found: np.ndarray
    masked: np.ndarray
    quality: np.ndarray
    pid: np.ndarray  # (n,)
    real_mask: np.ndarray  # (n,)


def score(g: Gallery, pr: Probes, masked_gallery: str, cohort: Cohort | None = None,
          masked_dim: int | None = None) -> Scored:
    """``masked_dim``: masked probes are matched on the first masked_dim components of probes and templates, as the
    Recognizer does with a fused embedder (None: all of them)."""
    n, f, d = pr.frames.emb.shape
    md = d if masked_dim is None else masked_dim
    if md != d and cohort is not None:
        raise ValueError("t-norm (--tnorm) is not defined for a fused embedder")
    e = pr.frames.emb.reshape(-1, d)
    np_ = len(g.names)
    is_masked = pr.frames.masked.reshape(-1, 1)
    # --tnorm: bare probes meet templates normalised against bare background faces, masked ones against masked.
    bare_bank = None if cohort is None or cohort.masked_only else cohort.plain
    masked_bank = None if cohort is None else cohort.masked
    top = 0 if cohort is None else cohort.top

    def per_person(t: np.ndarray, tpid: np.ndarray, bank: np.ndarray | None, dim: int = d) -> np.ndarray:
        return _best_per_person(e[:, :dim], t[:, :dim], tpid, np_, bank, top)

    plain = per_person(g.plain, g.plain_pid, bare_bank)
    if masked_bank is not None or md != d:
        plain = np.where(is_masked, per_person(g.plain, g.plain_pid, masked_bank, md), plain)
    if masked_gallery == "plain+masked" and g.masked.shape[0]:
        # As the Matcher does with use_masked=None: one set of templates per person, bare and masked together.
        both = per_person(np.concatenate([g.plain, g.masked]), np.concatenate([g.plain_pid, g.masked_pid]),
                          masked_bank, md)
        best = np.where(is_masked, both, plain)
    else:
        best = plain
    order = np.argsort(-best, axis=1)
    top = order[:, 0]
    rows = np.arange(best.shape[0])
    s1 = best[rows, top]
    s2 = best[rows, order[:, 1]] if np_ > 1 else np.full_like(s1, -1.0)
    found = pr.frames.found.reshape(-1)
    s1 = np.where(found, s1, -2.0)
    return Scored(top.reshape(n, f), s1.reshape(n, f), s2.reshape(n, f), pr.frames.found, pr.frames.masked,
                  pr.frames.quality, pr.pid, pr.real_mask)


def accepted(sc: Scored, rule: Rule) -> np.ndarray:
    """(n, F): the frame is accepted for its best person."""
    thr = np.where(sc.masked, rule.masked_threshold, rule.threshold)
    margin = np.where(sc.masked, rule.masked_margin, rule.margin)
    return sc.found & sc.quality & (sc.s1 >= thr) & (sc.s1 - sc.s2 >= margin)


def walkup_grants(sc: Scored, rule: Rule) -> np.ndarray:
    """(n,) the person a walk-up is granted as, -1 when nobody reaches ``votes`` accepted frames."""
    acc = accepted(sc, rule)
    out = np.full(sc.top.shape[0], -1)
    for i in range(sc.top.shape[0]):
        people, counts = np.unique(sc.top[i][acc[i]], return_counts=True)
        if counts.size and counts.max() >= rule.votes:
            out[i] = people[np.argmax(counts)]
    return out


def _rates(granted: np.ndarray, pid: np.ndarray) -> dict[str, Any]:
    gen, strg = pid >= 0, pid < 0
    return {
        "granted_self": _frac(granted[gen] == pid[gen]),
        "granted_other": _frac((granted[gen] >= 0) & (granted[gen] != pid[gen])),
        "strangers_granted": _frac(granted[strg] >= 0),
        "genuine": int(gen.sum()), "strangers": int(strg.sum()),
    }


def _frac(x: np.ndarray) -> float | None:
    return None if x.size == 0 else round(float(np.mean(x)), 4)


def tpir_at_fpir(sc: Scored, sel: np.ndarray, fpir: float) -> dict[str, Any]:
    """Frame 0 (the photo as it is): the lowest threshold with stranger acceptance <= fpir, and the
    share of enrolled probes that are then their own best match above it (missed faces count as lost)."""
    gen, strg = sel & (sc.pid >= 0), sel & (sc.pid < 0)
    imp = np.sort(sc.s1[strg, 0])[::-1]
    if imp.size == 0 or not gen.any():
        return {"threshold": None, "tpir": None, "strangers": int(imp.size)}
    allowed = int(np.floor(fpir * imp.size))  # strangers that may score at or above the threshold
    thr = float(imp[allowed]) + 1e-6 if allowed < imp.size else -1.0
    hit = (sc.top[gen, 0] == sc.pid[gen]) & (sc.s1[gen, 0] >= thr) & sc.found[gen, 0]
    return {"threshold": round(thr, 4), "tpir": _frac(hit), "strangers": int(imp.size),
            "resolution": round(1 / imp.size, 4)}


def summarise(sc: Scored, rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    single = np.where(accepted(sc, rule)[:, 0], sc.top[:, 0], -1)
    walk = walkup_grants(sc, rule)
    for kind, sel in (("masked", sc.real_mask), ("unmasked", ~sc.real_mask)):
        gen = sel & (sc.pid >= 0)
        out[kind] = {
            "probes": int(gen.sum()), "stranger_probes": int((sel & (sc.pid < 0)).sum()),
            "found": _frac(sc.found[sel, 0]),
            "called_masked": _frac(sc.masked[sel & sc.found[:, 0], 0]),
            "rank1": _frac((sc.top[gen, 0] == sc.pid[gen]) & sc.found[gen, 0]),
            "at_fpir": {str(f): tpir_at_fpir(sc, sel, f) for f in FPIRS},
            "photo": _rates(single[sel], sc.pid[sel]),
            "walkup": _rates(walk[sel], sc.pid[sel]),
        }
    return out


def det_curve(sc: Scored, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPIR, FNIR) of frame 0 over all thresholds (for the DET plot)."""
    gen, strg = sel & (sc.pid >= 0), sel & (sc.pid < 0)
    if not gen.any() or not strg.any():
        return np.zeros(0), np.zeros(0)
    thr = np.unique(np.r_[sc.s1[gen, 0], sc.s1[strg, 0]])
    own = (sc.top[gen, 0] == sc.pid[gen]) & sc.found[gen, 0]
    fpir = np.array([(sc.s1[strg, 0] >= t).mean() for t in thr])
    fnir = np.array([1 - (own & (sc.s1[gen, 0] >= t)).mean() for t in thr])
    return fpir, fnir


def rule_dict(rule: Rule) -> dict[str, Any]:
    return asdict(rule)


# ---------------------------------------------------------------- calibration

SOLO_FACTOR = 10  # the threshold alone keeps stranger frames accepted <= this x target_frame


def calibrate(scored: Sequence[Scored], target_frame: float, target_walkup: float,
              masked_gallery: str, votes: int) -> tuple[Rule, dict[str, Any]]:
    """Thresholds and margins, separately for frames the classifier calls masked and unmasked: over a grid,
    the pair that accepts most genuine frames (as their own person) while stranger frames are accepted
    at most ``target_frame``; then the two thresholds are raised (a grid) so that walk-ups of strangers are
    granted at most ``target_walkup``, masked and bare photos each (pooled over every split, enrolment count
    and presentation given), keeping most genuine walk-ups.

    The threshold must hold strangers off by itself too (at most SOLO_FACTOR x target_frame of stranger
    frames above it, margin ignored): the margin compares with the second-best person, and a gallery of
    one person has none, so a margin-only rule would let every stranger into a one-person door (dlib's
    embedder, whose cosines all sit near 0.9, calibrated to threshold 0.2 without this bound)."""
    grid_t = np.round(np.arange(0.20, 0.9951, 0.005), 4)
    grid_m = np.round(np.arange(0.0, 0.161, 0.02), 3)
    chosen: dict[bool, tuple[float, float]] = {}
    detail: dict[str, Any] = {}
    for status in (False, True):
        s1 = np.concatenate([s.s1[s.masked == status] for s in scored])
        gap = np.concatenate([(s.s1 - s.s2)[s.masked == status] for s in scored])
        ok = np.concatenate([(s.found & s.quality)[s.masked == status] for s in scored])
        own = np.concatenate([(s.top == s.pid[:, None])[s.masked == status] for s in scored])
        strg = np.concatenate([np.broadcast_to((s.pid < 0)[:, None], s.top.shape)[s.masked == status]
                               for s in scored])
        best: tuple[float, float, float, float] | None = None
        # Thresholds that hold strangers off without the margin (the share above falls as t rises).
        solo = np.array([(ok & (s1 >= t))[strg].mean() if strg.any() else 0.0 for t in grid_t])
        for m in grid_m:
            for t in grid_t[solo <= SOLO_FACTOR * target_frame]:
                acc = ok & (s1 >= t) & (gap >= m)
                fpir = acc[strg].mean() if strg.any() else 0.0
                if fpir <= target_frame:
                    tar = (acc & own)[~strg].mean() if (~strg).any() else 0.0
                    if best is None or tar > best[0]:
                        best = (float(tar), float(t), float(m), float(fpir))
                    break  # the lowest passing threshold is the best one for this margin
        if best is None:
            raise ValueError("no threshold reaches the target stranger rate")
        chosen[status] = (best[1], best[2])
        detail["masked" if status else "unmasked"] = {
            "genuine_frames_accepted": round(best[0], 4), "stranger_frames_accepted": round(best[3], 5),
            "frames": int(ok.size), "stranger_frames": int(strg.sum())}
    rule = Rule(chosen[False][0], chosen[True][0], chosen[False][1], chosen[True][1], masked_gallery, votes)
    # The vote lowers the stranger rate further, but not enough alone. Over a grid of the two thresholds
    # (margins as chosen above): stranger walk-ups granted at most target_walkup for masked photos and for
    # bare ones, each; of those pairs, the one that grants most genuine walk-ups, masked and bare photos
    # weighing the same (a kiosk for masked people must not buy bare-face accepts with masked ones).
    def rates(r: Rule) -> tuple[float, float, float]:
        g = [walkup_grants(s, r) for s in scored]
        out = []
        for real in (False, True):
            st = np.concatenate([w[(s.pid < 0) & (s.real_mask == real)] for w, s in zip(g, scored, strict=True)])
            own = np.concatenate([(w == s.pid)[(s.pid >= 0) & (s.real_mask == real)]
                                  for w, s in zip(g, scored, strict=True)])
            out.append((float((st >= 0).mean()) if st.size else 0.0, float(own.mean()) if own.size else 0.0))
        return max(out[0][0], out[1][0]), out[0][1], out[1][1]

    best_rule: tuple[float, Rule, tuple[float, float, float]] | None = None
    for t in np.round(np.arange(rule.threshold, rule.threshold + 0.30, 0.01), 3):
        for tm in np.round(np.arange(rule.masked_threshold, rule.masked_threshold + 0.30, 0.01), 3):
            cand = Rule(float(t), float(tm), rule.margin, rule.masked_margin, masked_gallery, votes)
            r = rates(cand)
            if r[0] <= target_walkup and (best_rule is None or (r[1] + r[2]) / 2 > best_rule[0]):
                best_rule = ((r[1] + r[2]) / 2, cand, r)
            if r[0] <= target_walkup:
                break  # higher masked thresholds only lose genuine walk-ups
    if best_rule is None:
        raise ValueError("no thresholds within 0.3 of the frame-level ones reach the target walk-up rate")
    _, rule, (worst, tpir_bare, tpir_masked) = best_rule
    walk = np.concatenate([walkup_grants(s, rule)[s.pid < 0] for s in scored])
    rate = float((walk >= 0).mean()) if walk.size else 0.0
    detail["genuine_walkups_granted"] = {"bare_photos": round(tpir_bare, 5), "masked_photos": round(tpir_masked, 5)}
    detail["stranger_walkups_granted_worst_kind"] = round(worst, 5)
    detail["stranger_walkups_granted"] = round(rate, 5)
    detail["stranger_walkups"] = int(walk.size)
    return rule, detail
