"""scripts/evalkit.py on small hand-made scores; every expected value is worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.evalkit import (
    all_pairs,
    distribution,
    equal_error_rate,
    listed_pairs,
    rank1_identification,
    rates_at,
    roc_points,
    tar_at_far,
)


def unit(deg: float) -> list[float]:
    r = np.radians(deg)
    return [float(np.cos(r)), float(np.sin(r))]


# ---------------------------------------------------------------- TAR at FAR

def test_tar_at_far_threshold_is_the_safe_impostor_quantile() -> None:
    imp = np.arange(100) / 100  # 0.00 .. 0.99
    gen = np.array([0.995, 0.99, 0.985, 0.5])
    op = tar_at_far(gen, imp, 1e-2)
    # k = floor(0.01 * 100) = 1 impostor may pass; the 2nd largest (0.98) must not, so the
    # threshold is the smallest impostor score above it: 0.99. Genuine >= 0.99: 0.995 and 0.99;
    # 0.985 lies between 0.98 and 0.99 and is rejected.
    assert op.measurable
    assert op.threshold == pytest.approx(0.99)
    assert op.false_accepts == 1
    assert op.far == pytest.approx(0.01)
    assert op.tar == pytest.approx(0.5)


def test_tar_at_far_allows_floor_far_times_n_false_accepts() -> None:
    imp = np.arange(200) / 200  # 0.000, 0.005, .., 0.995
    gen = np.array([0.991, 0.989])
    op = tar_at_far(gen, imp, 1e-2)
    # k = 2: 0.995 and 0.990 may pass, 0.985 may not -> threshold 0.990; only 0.991 passes.
    assert op.threshold == pytest.approx(0.99)
    assert op.false_accepts == 2
    assert op.tar == pytest.approx(0.5)


def test_tar_at_far_not_measurable_with_too_few_impostors() -> None:
    op = tar_at_far([0.9], np.linspace(0, 0.5, 999), 1e-3)
    assert not op.measurable
    assert op.threshold is None and op.tar is None
    assert "1000" in (op.reason or "")
    assert tar_at_far([0.9], np.linspace(0, 0.5, 1000), 1e-3).measurable


def test_tar_at_far_ties_at_the_top_never_exceed_the_far() -> None:
    # Three impostors tie at 0.9 but only one may pass: no impostor score works as threshold,
    # so it goes just above 0.9 and no impostor passes (genuine 0.9 is rejected too).
    imp = np.array([0.9, 0.9, 0.9] + [0.1] * 97)
    op = tar_at_far([0.95, 0.9], imp, 1e-2)
    assert op.threshold is not None and 0.9 < op.threshold < 0.9 + 1e-12
    assert op.false_accepts == 0
    assert op.tar == pytest.approx(0.5)
    # One higher score above the tie: it is the threshold, with exactly one false accept.
    imp2 = np.array([0.95, 0.9, 0.9] + [0.1] * 97)
    op2 = tar_at_far([0.95, 0.93], imp2, 1e-2)
    assert op2.threshold == pytest.approx(0.95)
    assert op2.false_accepts == 1
    assert op2.tar == pytest.approx(0.5)


def test_tar_at_far_without_genuine_pairs_or_bad_far() -> None:
    assert not tar_at_far([], np.zeros(100), 1e-2).measurable
    with pytest.raises(ValueError):
        tar_at_far([0.5], np.zeros(100), 1.0)


def test_rates_at_a_fixed_threshold_count_ties_as_accepted() -> None:
    # cos >= 0.93: genuine 0.95 and 0.93 pass (2/3), impostors 0.94 and 0.93 pass (2/4).
    r = rates_at([0.95, 0.93, 0.9], [0.94, 0.93, 0.5, 0.1], 0.93)
    assert r["tar"] == pytest.approx(2 / 3)
    assert r["false_accepts"] == 2
    assert r["far"] == pytest.approx(0.5)


# ---------------------------------------------------------------- EER and ROC

def test_eer_between_overlapping_scores() -> None:
    # Thresholds (accept >= t): t=0.6 -> FAR 1/4 (0.7), FRR 0; t=0.7 -> FAR 1/4, FRR 1/3 (0.6);
    # t=0.8 -> FAR 0, FRR 1/3. Closest FAR/FRR at t=0.7: EER = (1/4 + 1/3) / 2 = 7/24.
    e = equal_error_rate([0.9, 0.8, 0.6], [0.7, 0.5, 0.4, 0.3])
    assert e is not None
    assert e.threshold == pytest.approx(0.7)
    assert e.far == pytest.approx(0.25)
    assert e.frr == pytest.approx(1 / 3)
    assert e.eer == pytest.approx(7 / 24)


def test_eer_zero_when_separated() -> None:
    e = equal_error_rate([0.9, 0.8], [0.3, 0.5])
    assert e is not None
    assert e.eer == 0.0
    assert e.threshold == pytest.approx(0.8)  # the lowest threshold with FAR = FRR = 0
    assert equal_error_rate([], [0.1]) is None


def test_roc_points() -> None:
    far, tar, t = roc_points([0.9, 0.6], [0.7, 0.3])
    np.testing.assert_allclose(t, [0.9, 0.7, 0.6, 0.3])
    np.testing.assert_allclose(far, [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tar, [0.5, 0.5, 1.0, 1.0])


# ---------------------------------------------------------------- pairs

# Faces 0, 1: person A at 0 and 60 degrees; 2: person B at 90; 3: a distractor along 0 degrees,
# not unit length (dlib's descriptors are not). Cosines: (0,1) 0.5 genuine; impostors
# (0,2) 0, (0,3) 1, (1,2) cos 30 = 0.866, (1,3) 0.5, (2,3) 0.
EMB = np.array([unit(0), unit(60), unit(90), [2.0, 0.0]])
IDS = np.array([0, 0, 1, -1])


def test_all_pairs_genuine_and_impostor() -> None:
    ps = all_pairs(EMB, IDS)
    np.testing.assert_allclose(ps.genuine, [0.5])
    assert ps.genuine_pairs.tolist() == [[0, 1]]
    order = np.argsort(ps.impostor)
    np.testing.assert_allclose(ps.impostor[order], [0, 0, 0.5, np.sqrt(3) / 2, 1], atol=1e-12)
    assert sorted(map(tuple, ps.impostor_pairs.tolist())) == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert ps.excluded == 0


def test_all_pairs_blocks_give_the_same_pairs() -> None:
    a, b = all_pairs(EMB, IDS), all_pairs(EMB, IDS, block=1)
    assert a.impostor_pairs.tolist() == b.impostor_pairs.tolist()
    np.testing.assert_allclose(a.impostor, b.impostor)


def test_all_pairs_groups_drop_only_impostor_pairs_within_a_group() -> None:
    ps = all_pairs(EMB, IDS, groups=np.array([-1, -1, 5, 5]))  # B and the distractor: maybe one person
    assert (2, 3) not in map(tuple, ps.impostor_pairs.tolist())
    assert len(ps.impostor) == 4 and ps.excluded == 1
    ps2 = all_pairs(EMB, IDS, groups=np.array([7, 7, -1, -1]))  # a genuine pair is never dropped
    assert len(ps2.genuine) == 1 and len(ps2.impostor) == 5


def test_all_pairs_skip_marked_pairs() -> None:
    ps = all_pairs(EMB, IDS, skip=np.array([True, True, False, False]))
    assert len(ps.genuine) == 0  # (0, 1) was the only pair between two skipped faces
    assert len(ps.impostor) == 5


def test_listed_pairs() -> None:
    ps = listed_pairs(EMB, [(0, 1, True), (0, 2, False), (1, 3, False)])
    np.testing.assert_allclose(ps.genuine, [0.5])
    np.testing.assert_allclose(ps.impostor, [0.0, 0.5], atol=1e-12)
    assert ps.impostor_pairs.tolist() == [[0, 2], [1, 3]]


# ---------------------------------------------------------------- rank-1

def test_rank1_with_a_distractor_closer_than_the_mate() -> None:
    # A at 0 and 20 deg, a distractor at 25, B at 90 and 100, C alone at 180 (not a probe:
    # no other face of C), the distractor is not a probe either.
    # A@0: nearest A@20 (20 deg) before D (25) -> hit. A@20: nearest D (5 deg) -> miss.
    # B@90 and B@100: each other (10 deg) -> hits. Rank-1 = 3 / 4.
    emb = np.array([unit(0), unit(20), unit(25), unit(90), unit(100), unit(180)])
    ids = np.array([0, 0, -1, 1, 1, 2])
    labeled = np.array([True, True, False, True, True, True])
    r = rank1_identification(emb, ids, labeled)
    assert r.probes == 4
    assert r.hits == 3
    assert r.misses == [(1, 2)]
    assert r.rate == pytest.approx(0.75)


def test_rank1_without_probes() -> None:
    r = rank1_identification(np.array([unit(0), unit(90)]), np.array([0, 1]), np.array([True, True]))
    assert r.probes == 0 and r.rate is None


# ---------------------------------------------------------------- distribution

def test_distribution_percentiles_need_enough_scores() -> None:
    d = distribution(np.arange(1, 101, dtype=float))  # 1 .. 100
    assert d["n"] == 100 and d["min"] == 1 and d["max"] == 100 and d["mean"] == pytest.approx(50.5)
    assert d["p50"] == pytest.approx(50.5)
    assert d["p99"] == pytest.approx(99.01)  # 1 + 0.99 * 99
    assert d["p99.9"] is None and d["p99.99"] is None  # need 1000 and 10000 scores
    assert distribution([]) == {"n": 0}
    # Low percentiles (genuine scores) by the same rule: p1 needs 100 scores.
    assert distribution(np.arange(1, 101, dtype=float), (1,))["p1"] == pytest.approx(1.99)  # 1 + 0.01 * 99
    assert distribution(np.arange(1, 100, dtype=float), (1,))["p1"] is None
