"""Masked-face recognition: the gallery protocol behind `scripts/evaluate.py --masked`.

People: the identity-labelled faces of ../shared/data (scripts/facedata.py; about 100 people).
Near-copies of one photo are collapsed to one. The people are split in two halves by a hash of
their name: thresholds are *calibrated* on one half and *reported* on the other, so the figures
are not fitted to the faces they describe.

For each person with at least K+1 photos: the first K (in hash order) are enrolled the way the
device enrols (edge_app.enrol: plain templates plus synthetic-masked ones), the rest, at most
MAX_PROBES, are probes. Probes are scored three ways:

    plain    unmasked probe  vs plain templates
    masked   masked probe    vs plain templates         (synthetic mask on the probe photo,
    augment  masked probe    vs plain + masked templates  then detected again like a camera frame)

A score is the cosine of the person's best template (as the matcher does). Genuine: the probe's
own person; impostor: every other enrolled person, plus every unlabelled face of the data set
(strangers walking up to the door) against every person.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_app.enrol import masked_embeddings
from edge_app.vision.embedder import first_part
from edge_app.vision.pipeline import Pipeline
from edge_app.vision.synth_mask import draw_mask, random_style
from scripts import evalkit, facedata

SCENARIOS = ("plain", "masked", "augment")
TITLES = {"plain": "unmasked probe vs plain gallery", "masked": "masked probe vs plain gallery",
          "augment": "masked probe vs mask-augmented gallery"}
FARS = (1e-2, 1e-3)
MAX_PROBES = 12
SEED = 7


def half_of(name: str) -> str:
    """'calibrate' or 'test', fixed by the person's name."""
    return "test" if hashlib.sha256(f"half:{name}".encode()).digest()[0] % 2 else "calibrate"


def photo_seed(face: facedata.FaceRecord) -> int:
    return int.from_bytes(hashlib.sha256(face.path.name.encode()).digest()[:4], "little") ^ SEED


@dataclass
class Person:
    name: str
    photos: list[facedata.FaceRecord]


@dataclass
class Enrolled:
    """Templates of one half: rows of plain and masked embeddings, each with a person index."""

    names: list[str]
    plain: np.ndarray
    plain_pid: np.ndarray
    masked: np.ndarray
    masked_pid: np.ndarray


@dataclass
class Probes:
    pid: np.ndarray  # person index in Enrolled.names; -1 = stranger
    plain: np.ndarray
    masked: np.ndarray  # masked probes that were detected again (row i <-> masked_pid[i])
    masked_pid: np.ndarray
    masked_p: np.ndarray  # the classifier's p(mask) on each masked probe
    plain_p: np.ndarray  # and on each plain probe
    lost: list[str] = field(default_factory=list)  # masked probes the detector missed


def persons(faces: Sequence[facedata.FaceRecord]) -> tuple[list[Person], list[facedata.FaceRecord]]:
    """Labelled people (near-copies collapsed, quality-passed photos only) and the unlabelled strangers."""
    keys = facedata.group_keys(faces)
    labelled_groups = {k for f, k in zip(faces, keys, strict=True) if f.identity}
    by_name: dict[str, list[facedata.FaceRecord]] = {}
    strangers: list[facedata.FaceRecord] = []
    bits = {id(f): facedata.upper_bits(f.chip) for f in faces}
    for f, k in zip(faces, keys, strict=True):
        if f.masked or not f.quality_ok:
            continue
        if f.identity is None:
            if k not in labelled_groups:  # not a copy of a labelled photo
                strangers.append(f)
            continue
        kept = by_name.setdefault(f.identity, [])
        if all(np.sum(bits[id(f)] != bits[id(g)]) > 24 for g in kept):
            kept.append(f)
    out = []
    for name, photos in sorted(by_name.items()):
        photos.sort(key=lambda f: hashlib.sha256(f.path.name.encode()).hexdigest())
        out.append(Person(name, photos))
    return out, strangers


def plain_embedding(face: facedata.FaceRecord) -> np.ndarray:
    if face.embedding is None:
        raise ValueError(f"{face.path.name}: collected without an embedding")
    return face.embedding


def enrol(pipeline: Pipeline, people: Sequence[Person], k: int, n_masked: int,
          progress: Callable[[Iterable[Person]], Iterable[Person]] = iter) -> Enrolled:
    names: list[str] = []
    plain, plain_pid, masked, masked_pid = [], [], [], []
    for person in progress(people):
        pid = len(names)
        names.append(person.name)
        for f in person.photos[:k]:
            plain.append(plain_embedding(f))
            plain_pid.append(pid)
            for e in masked_embeddings(pipeline, f.rgb, f.keypoints, n_masked, photo_seed(f)):
                masked.append(e)
                masked_pid.append(pid)
    dim = pipeline.embedder.dim
    return Enrolled(names, np.array(plain, np.float32).reshape(-1, dim), np.array(plain_pid, np.int64),
                    np.array(masked, np.float32).reshape(-1, dim), np.array(masked_pid, np.int64))


def probe_set(pipeline: Pipeline, people: Sequence[Person], strangers: Sequence[facedata.FaceRecord], k: int,
              progress: Callable[[Iterable[tuple[int, facedata.FaceRecord]]],
                                 Iterable[tuple[int, facedata.FaceRecord]]] = iter) -> Probes:
    items = [(i, f) for i, p in enumerate(people) for f in p.photos[k:k + MAX_PROBES]]
    items += [(-1, f) for f in strangers]
    pid, plain, plain_p, masked, masked_pid, masked_p, lost = [], [], [], [], [], [], []
    clf = pipeline.mask_classifier
    for i, f in progress(items):
        pid.append(i)
        plain.append(plain_embedding(f))
        plain_p.append(clf.probability(f.chip) if clf else np.nan)
        rng = np.random.default_rng(photo_seed(f) + 1)
        img = draw_mask(f.rgb, f.keypoints, random_style(rng), rng)
        found = pipeline.process(img, max_faces=1)  # as a camera would see the masked face
        if not found or found[0].embedding is None:
            lost.append(f.path.name)
            continue
        masked.append(found[0].embedding)
        masked_pid.append(i)
        masked_p.append(found[0].mask_probability if found[0].mask_probability is not None else np.nan)
    dim = pipeline.embedder.dim
    return Probes(np.array(pid, np.int64), np.array(plain, np.float32).reshape(-1, dim),
                  np.array(masked, np.float32).reshape(-1, dim), np.array(masked_pid, np.int64),
                  np.array(masked_p, np.float32), np.array(plain_p, np.float32), lost)


def person_scores(probes: np.ndarray, templates: np.ndarray, tpid: np.ndarray, n_persons: int) -> np.ndarray:
    """(m, n_persons): cosine of each person's best template."""
    s = probes @ templates.T
    out = np.full((len(probes), n_persons), -1.0, np.float32)
    for p in range(n_persons):
        cols = tpid == p
        if cols.any():
            out[:, p] = s[:, cols].max(1)
    return out


def _head(x: np.ndarray, dim: int | None) -> np.ndarray:
    """The first ``dim`` components of each row, unit again: a fused embedder's masked faces are matched on them."""
    return x if dim is None or dim == x.shape[1] else first_part(x, dim)


def scenario_scores(enrolled: Enrolled, probes: Probes, masked_dim: int | None = None
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scenario: (person scores (m, P), probe person index (m,)). ``masked_dim``: masked probes meet the
    templates on their first masked_dim components (vision/embedder.py FusedEmbedder; None: all)."""
    n = len(enrolled.names)
    both = np.concatenate([enrolled.plain, enrolled.masked])
    both_pid = np.concatenate([enrolled.plain_pid, enrolled.masked_pid])
    masked_probes = _head(probes.masked, masked_dim)
    return {
        "plain": (person_scores(probes.plain, enrolled.plain, enrolled.plain_pid, n), probes.pid),
        "masked": (person_scores(masked_probes, _head(enrolled.plain, masked_dim), enrolled.plain_pid, n),
                   probes.masked_pid),
        "augment": (person_scores(masked_probes, _head(both, masked_dim), both_pid, n), probes.masked_pid),
    }


def split_scores(scores: np.ndarray, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine (one per labelled probe) and impostor (every other person) scores."""
    labelled = pid >= 0
    genuine = scores[labelled, pid[labelled]]
    mask = np.ones_like(scores, bool)
    mask[np.flatnonzero(labelled), pid[labelled]] = False
    return genuine, scores[mask]


def rank1(scores: np.ndarray, pid: np.ndarray) -> dict[str, Any]:
    labelled = pid >= 0
    if not labelled.any():
        return {"rate": None, "n": 0}
    hits = int((scores[labelled].argmax(1) == pid[labelled]).sum())
    return {"rate": round(hits / int(labelled.sum()), 4), "hits": hits, "n": int(labelled.sum())}


class NotEnoughPairs(ValueError):
    """Too few impostor pairs to place a threshold at the target FAR."""


def threshold_at(impostor: np.ndarray, far: float) -> float:
    op = evalkit.tar_at_far(np.array([1.0]), impostor, far)
    if op.threshold is None:
        raise NotEnoughPairs(f"cannot calibrate at FAR {far:g}: {op.reason}; add people or strangers, "
                             "or ask for a higher --target-far")
    return op.threshold


def summarise(scores: np.ndarray, pid: np.ndarray, thresholds: dict[str, float] | None) -> dict[str, Any]:
    genuine, impostor = split_scores(scores, pid)
    out: dict[str, Any] = {
        "genuine_pairs": len(genuine), "impostor_pairs": len(impostor),
        "rank1": rank1(scores, pid),
        "tar_at_far": {f"{far:g}": evalkit.tar_at_far(genuine, impostor, far).as_dict() for far in FARS},
        "genuine": evalkit.distribution(genuine, (1, 5, 50)),
        "impostor": evalkit.distribution(impostor, (50, 99, 99.9)),
    }
    if thresholds:
        out["at_calibrated"] = {name: evalkit.rates_at(genuine, impostor, t) | {"threshold": round(t, 4)}
                                for name, t in thresholds.items()}
    return out


# ---------------------------------------------------------------- the whole protocol

def evaluate(pipeline: Pipeline, faces: Sequence[facedata.FaceRecord], enrol_counts: Sequence[int],
             n_masked: int, target_far: float,
             progress: Callable[[Iterable[Any], str, int], Iterable[Any]] = lambda it, _d, _n: it,
             ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Calibrate on one half of the people, report on the other. Returns the report and, for the
    plot, (genuine, impostor) scores of each scenario on the test half at the middle enrolment count."""
    def bar(desc: str, total: int) -> Callable[[Iterable[Any]], Iterable[Any]]:
        return lambda it: progress(it, desc, total)

    people, strangers = persons(faces)
    halves = {h: [p for p in people if half_of(p.name) == h] for h in ("calibrate", "test")}
    # Strangers are split the same way so no face serves both halves.
    stranger_half = {h: [f for f in strangers if half_of(f.path.name) == h] for h in halves}
    report: dict[str, Any] = {
        "people": {h: len(v) for h, v in halves.items()},
        "photos": {h: sum(len(p.photos) for p in v) for h, v in halves.items()},
        "strangers": {h: len(v) for h, v in stranger_half.items()},
        "protocol": {"enrol_photos": list(enrol_counts), "masked_templates_per_photo": n_masked,
                     "max_probes_per_person": MAX_PROBES, "target_far": target_far},
        "calibration": {}, "test": {},
    }
    scores: dict[str, dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]] = {"calibrate": {}, "test": {}}
    probes_of: dict[str, dict[int, Probes]] = {"calibrate": {}, "test": {}}
    for half in ("calibrate", "test"):
        for k in enrol_counts:
            eligible = [p for p in halves[half] if len(p.photos) > k]
            enrolled = enrol(pipeline, eligible, k, n_masked, bar(f"{half} enrol k={k}", len(eligible)))
            n_items = sum(min(len(p.photos) - k, MAX_PROBES) for p in eligible) + len(stranger_half[half])
            probes = probe_set(pipeline, eligible, stranger_half[half], k, bar(f"{half} probes k={k}", n_items))
            scores[half][k] = scenario_scores(enrolled, probes, pipeline.embedder.primary_dim)
            probes_of[half][k] = probes
    # Thresholds: the lowest cosine that keeps FAR <= target for every enrolment count (the
    # highest of the per-count thresholds), one per scenario.
    per_k: dict[str, dict[str, float]] = {sc: {} for sc in SCENARIOS}
    for k in enrol_counts:
        for sc in per_k:
            _, imp = split_scores(*scores["calibrate"][k][sc])
            per_k[sc][str(k)] = round(threshold_at(imp, target_far), 4)
    use = {sc: max(v.values()) for sc, v in per_k.items()}
    # Which templates a masked probe meets is chosen on the calibration half too: the synthetic-masked
    # templates lift genuine scores, but masks also make strangers alike; whichever accepts more
    # genuine masked probes at its own threshold wins (it differs between embedders).
    cal_tar = {sc: round(float(np.mean([np.mean(split_scores(*scores["calibrate"][k][sc])[0] >= use[sc])
                                        for k in enrol_counts])), 4) for sc in ("masked", "augment")}
    masked_sc = "augment" if cal_tar["augment"] >= cal_tar["masked"] else "masked"
    thresholds = {"threshold": use["plain"], "masked_threshold": use[masked_sc],
                  "masked_gallery": "plain+masked" if masked_sc == "augment" else "plain"}
    report["calibration"] = {
        "thresholds": thresholds, "per_enrol_count": per_k, "scenario_thresholds": use,
        "masked_gallery_choice": {"calibration_tar_at_own_threshold": cal_tar, "chosen": masked_sc},
        "rule": f"per scenario and enrolment count, the lowest cosine with FAR <= {target_far:g} on the calibration "
                "half's impostor pairs (people x other people + strangers x people); the highest over the counts; "
                "masked probes meet the templates (plain, or plain + synthetic-masked) that give the higher "
                "calibration-half TAR at their own threshold",
        "impostor_pairs": {sc: {str(k): len(split_scores(*scores["calibrate"][k][sc])[1]) for k in enrol_counts}
                           for sc in SCENARIOS},
    }
    for k in enrol_counts:
        pr = probes_of["test"][k]
        row: dict[str, Any] = {"masked_probes_lost_by_detector": len(pr.lost),
                               "mask_status": {
                                   "masked_probes_called_masked": _rate(pr.masked_p >= 0.5),
                                   "plain_probes_called_unmasked": _rate(pr.plain_p < 0.5)}}
        for sc in SCENARIOS:
            row[sc] = summarise(*scores["test"][k][sc], {"calibrated": use[sc]})
        report["test"][str(k)] = row
    mid = list(enrol_counts)[len(enrol_counts) // 2]
    plot = {sc: split_scores(*scores["test"][mid][sc]) for sc in SCENARIOS}
    report["plot_enrol_count"] = mid
    return report, plot


def _rate(hits: np.ndarray) -> dict[str, Any]:
    hits = hits[~np.isnan(hits)] if hits.dtype.kind == "f" else hits
    return {"rate": round(float(hits.mean()), 4) if hits.size else None, "n": int(hits.size)}


def text(report: dict[str, Any]) -> str:
    cal = report["calibration"]
    lines = [
        f"people: calibrate {report['people']['calibrate']}, test {report['people']['test']} "
        f"(photos {report['photos']['calibrate']} / {report['photos']['test']}; strangers "
        f"{report['strangers']['calibrate']} / {report['strangers']['test']})",
        f"calibrated on the calibration half at FAR {report['protocol']['target_far']:g}: "
        f"threshold {cal['thresholds']['threshold']:.4f} (plain), masked_threshold "
        f"{cal['thresholds']['masked_threshold']:.4f} (masked probes meet {cal['thresholds']['masked_gallery']} "
        "templates); each scenario below at its own calibrated threshold",
        "test half:",
        f"{'k':>2}  {'scenario':<40} {'rank-1':>7} {'TAR@1e-2':>9} {'TAR@1e-3':>9}   "
        f"{'at calibrated thr: TAR':>22} {'FAR':>8} {'pairs gen/imp':>15}",
    ]
    for k, row in report["test"].items():
        for sc in SCENARIOS:
            r = row[sc]
            t2, t3 = (r["tar_at_far"][f] for f in ("0.01", "0.001"))
            at = r["at_calibrated"]["calibrated"]

            def tar(op: dict[str, Any]) -> str:
                return f"{op['tar']:.3f}" if op.get("measurable") else "n/m"

            lines.append(f"{k:>2}  {TITLES[sc]:<40} {r['rank1']['rate']:>7.3f} {tar(t2):>9} {tar(t3):>9}   "
                         f"{at['tar']:>15.3f} @{at['threshold']:.3f} {at['far']:>8.5f} "
                         f"{r['genuine_pairs']:>6}/{r['impostor_pairs']:<8}")
        ms = row["mask_status"]
        lines.append(f"    mask status: masked probes called masked {ms['masked_probes_called_masked']['rate']}, "
                     f"plain probes called unmasked {ms['plain_probes_called_unmasked']['rate']}; "
                     f"masked probes the detector missed: {row['masked_probes_lost_by_detector']}")
    lines += ["", "for a site's config.toml (edge-app --config):", "[recognition]",
              f"threshold = {cal['thresholds']['threshold']}",
              f"masked_threshold = {cal['thresholds']['masked_threshold']}",
              f"masked_gallery = \"{cal['thresholds']['masked_gallery']}\""]
    return "\n".join(lines)


def plot_roc(plot: dict[str, tuple[np.ndarray, np.ndarray]], report: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    k = str(report["plot_enrol_count"])
    colours = {"plain": "tab:blue", "masked": "tab:red", "augment": "tab:green"}
    for sc, (gen, imp) in plot.items():
        far, tar, _ = evalkit.roc_points(gen, imp)
        ok = far > 0
        ax.step(far[ok], tar[ok], where="post", color=colours[sc], lw=1.8,
                label=f"{TITLES[sc]} ({len(gen):,} gen / {len(imp):,} imp)")
        at = report["test"][k][sc]["at_calibrated"]["calibrated"]
        if at["far"]:
            ax.plot(at["far"], at["tar"], "o", color=colours[sc], mec="black", ms=7,
                    label=f"  calibrated cos >= {at['threshold']:.3f}: TAR {at['tar']:.3f}, FAR {at['far']:.4f}")
        else:
            ax.plot([], [], "o", color=colours[sc], mec="black",
                    label=f"  calibrated cos >= {at['threshold']:.3f}: TAR {at['tar']:.3f}, FAR 0")
    for target in FARS:
        ax.axvline(target, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0.0, 1.005)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"Masked-face ROC, test half ({report['people']['test']} people), {k} enrolment photo(s)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
