"""Verification and identification metrics on cosine scores, for scripts/evaluate.py.

Pure numpy, no models: tests/unit/test_evalkit.py checks every function on hand-made scores.

One decision rule throughout, the kiosk's (edge_app.recognizer): a pair is *accepted* when
its cosine similarity is >= the threshold. So at threshold t

    FAR(t) = #(impostor >= t) / #impostor        TAR(t) = #(genuine >= t) / #genuine
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class PairScores:
    """Cosine scores of the pairs, with the face indices of each pair ((n, 2), i < j)."""

    genuine: FloatArray
    impostor: FloatArray
    genuine_pairs: IntArray
    impostor_pairs: IntArray
    excluded: int = 0  # pairs left out by `groups` (see all_pairs)

    @staticmethod
    def concat(parts: list[PairScores]) -> PairScores:
        def cat(arrays: list[Any], empty: Any) -> Any:
            arrays = [a for a in arrays if len(a)]
            return np.concatenate(arrays) if arrays else empty

        f0, i0 = np.zeros(0, np.float64), np.zeros((0, 2), np.int64)
        return PairScores(cat([p.genuine for p in parts], f0), cat([p.impostor for p in parts], f0),
                          cat([p.genuine_pairs for p in parts], i0), cat([p.impostor_pairs for p in parts], i0),
                          sum(p.excluded for p in parts))


def unit_rows(emb: ArrayLike) -> FloatArray:
    """Rows scaled to unit length in float64 (dlib's descriptors are not normalised)."""
    e = np.asarray(emb, np.float64)
    return np.asarray(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))


def all_pairs(emb: ArrayLike, ids: ArrayLike, groups: ArrayLike | None = None,
              skip: ArrayLike | None = None, block: int = 512) -> PairScores:
    """Every unordered pair i < j: genuine when ids[i] == ids[j], impostor otherwise.

    groups: pairs with different ids but the same group >= 0 are left out altogether — used
    for distractors that may show the same person (a celebrity's many photos) without that
    being a verified label, so they are neither genuine nor impostor.
    skip: pairs with both faces marked are left out (the faces of a pairs CSV, which are
    only compared as the CSV lists).
    """
    e = unit_rows(emb)
    ids = np.asarray(ids)
    n = len(e)
    g = np.full(n, -1, np.int64) if groups is None else np.asarray(groups, np.int64)
    sk = np.zeros(n, bool) if skip is None else np.asarray(skip, bool)
    parts: list[PairScores] = []
    # Row blocks keep memory at block x n instead of n x n for large sets.
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        s = e[r0:r1] @ e.T
        ii, jj = np.nonzero(np.arange(n)[None, :] > np.arange(r0, r1)[:, None])
        ii = ii + r0
        keep = ~(sk[ii] & sk[jj])
        grouped = keep & (g[ii] >= 0) & (g[ii] == g[jj]) & (ids[ii] != ids[jj])
        keep &= ~grouped
        ii, jj = ii[keep], jj[keep]
        sc = s[ii - r0, jj]
        same = ids[ii] == ids[jj]
        pairs = np.stack([ii, jj], axis=1).astype(np.int64)
        parts.append(PairScores(sc[same], sc[~same], pairs[same], pairs[~same], int(grouped.sum())))
    return PairScores.concat(parts)


def listed_pairs(emb: ArrayLike, pairs: list[tuple[int, int, bool]]) -> PairScores:
    """Scores of explicit (i, j, same_person) pairs, as in a pairs CSV."""
    e = unit_rows(emb)
    idx = np.array([(i, j) for i, j, _ in pairs], np.int64).reshape(-1, 2)
    same = np.array([s for _, _, s in pairs], bool)
    sc = np.einsum("ij,ij->i", e[idx[:, 0]], e[idx[:, 1]]) if len(idx) else np.zeros(0)
    return PairScores(sc[same], sc[~same], idx[same], idx[~same])


@dataclass(frozen=True)
class OperatingPoint:
    target_far: float
    measurable: bool
    threshold: float | None = None  # accept when score >= threshold
    tar: float | None = None
    far: float | None = None  # the FAR actually reached on this set (<= target)
    false_accepts: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def tar_at_far(genuine: ArrayLike, impostor: ArrayLike, far: float) -> OperatingPoint:
    """TAR at the lowest threshold that accepts at most floor(far * n) of the n impostors.

    That threshold is the smallest impostor score strictly above the (k+1)-th largest one,
    i.e. the empirical (1 - far) quantile taken on the safe side: on this set the FAR is
    never above the target, also with tied scores. With fewer than 1/far impostor pairs even
    one false accept exceeds the target, so the point is reported as not measurable.
    """
    if not 0 < far < 1:
        raise ValueError(f"far must be in (0, 1), got {far}")
    imp = np.sort(np.asarray(impostor, np.float64))[::-1]
    gen = np.asarray(genuine, np.float64)
    n = len(imp)
    need = math.ceil(1 / far - 1e-9)
    if n < need:
        return OperatingPoint(far, False, reason=f"needs >= {need} impostor pairs, have {n}")
    if len(gen) == 0:
        return OperatingPoint(far, False, reason="no genuine pairs")
    k = math.floor(far * n + 1e-9)
    v = imp[k]  # the (k+1)-th largest: must be rejected
    above = imp[imp > v]
    # Ties at the top can leave no impostor score to use: then just above v (FAR 0).
    t = float(above.min()) if len(above) else float(np.nextafter(v, np.inf))
    fa = int((imp >= t).sum())
    return OperatingPoint(far, True, t, float((gen >= t).mean()), fa / n, fa)


def rates_at(genuine: ArrayLike, impostor: ArrayLike, threshold: float) -> dict[str, Any]:
    """TAR, FAR and the number of false accepts at a given threshold (e.g. the kiosk's default)."""
    gen, imp = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    fa = int((imp >= threshold).sum())
    return {"threshold": threshold, "tar": float((gen >= threshold).mean()) if len(gen) else None,
            "far": fa / len(imp) if len(imp) else None, "false_accepts": fa}


@dataclass(frozen=True)
class EER:
    eer: float
    threshold: float
    far: float
    frr: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def equal_error_rate(genuine: ArrayLike, impostor: ArrayLike) -> EER | None:
    """The threshold (one of the scores) where FAR and FRR are closest; EER = their mean there."""
    gen = np.sort(np.asarray(genuine, np.float64))
    imp = np.sort(np.asarray(impostor, np.float64))
    if len(gen) == 0 or len(imp) == 0:
        return None
    t = np.unique(np.concatenate([gen, imp]))
    far = (len(imp) - np.searchsorted(imp, t, side="left")) / len(imp)  # impostors >= t
    frr = np.searchsorted(gen, t, side="left") / len(gen)  # genuines < t
    gap = np.abs(far - frr)
    best = int(np.flatnonzero(gap == gap.min())[0])  # ties: the lowest threshold
    return EER(float((far[best] + frr[best]) / 2), float(t[best]), float(far[best]), float(frr[best]))


def roc_points(genuine: ArrayLike, impostor: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(far, tar, threshold) at every distinct score, threshold descending (far, tar rising)."""
    gen = np.sort(np.asarray(genuine, np.float64))
    imp = np.sort(np.asarray(impostor, np.float64))
    t = np.unique(np.concatenate([gen, imp]))[::-1]
    far = (len(imp) - np.searchsorted(imp, t, side="left")) / max(len(imp), 1)
    tar = (len(gen) - np.searchsorted(gen, t, side="left")) / max(len(gen), 1)
    return np.asarray(far, np.float64), np.asarray(tar, np.float64), np.asarray(t, np.float64)


@dataclass(frozen=True)
class Rank1:
    probes: int
    hits: int
    misses: list[tuple[int, int]]  # (probe, nearest face) of each miss

    @property
    def rate(self) -> float | None:
        return self.hits / self.probes if self.probes else None


def rank1_identification(emb: ArrayLike, ids: ArrayLike, labeled: ArrayLike) -> Rank1:
    """Each labeled face whose id has another face is a probe against every other face
    (labeled or distractor); a hit when its nearest face carries the same id."""
    e = unit_rows(emb)
    ids = np.asarray(ids)
    lab = np.asarray(labeled, bool)
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    probes = np.flatnonzero(lab & (counts[inverse] >= 2))
    hits, misses = 0, []
    for p in probes:
        s = e @ e[p]
        s[p] = -np.inf
        nearest = int(np.argmax(s))
        if ids[nearest] == ids[p]:
            hits += 1
        else:
            misses.append((int(p), nearest))
    return Rank1(len(probes), hits, misses)


def distribution(scores: ArrayLike, percentiles: tuple[float, ...] = (50, 99, 99.9, 99.99)) -> dict[str, Any]:
    """n, min, max, mean and percentiles (linear interpolation). A percentile p needs enough
    scores to mean anything, at least 1 / tail where tail = min(p, 100 - p) / 100 (1000 for
    p99.9, 100 for p1); with fewer it is None rather than an interpolated guess."""
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        return {"n": 0}
    out: dict[str, Any] = {"n": len(s), "min": float(s.min()), "max": float(s.max()), "mean": float(s.mean())}
    for p in percentiles:
        tail = min(p, 100 - p) / 100
        enough = tail <= 0 or len(s) >= math.ceil(1 / tail - 1e-9)
        out[f"p{p:g}"] = float(np.percentile(s, p)) if enough else None
    return out
