"""The deciding check: REAL masked photos of real-masked-dev (63 people, 160 px web crops).

Each crop is pasted into a 320x320 frame padded by replicating its border (so detection is not what
is measured) and goes through the project's detector and alignment: unmasked photos as the pipeline
cuts an unmasked face (all keypoints), masked photos as it cuts a masked one (eyes only).

Per person the first K unmasked photos (sorted names) are enrolled with the TEACHER (the gallery
never changes); probes are the real masked photos and, to see whether the student could serve every
face, the unmasked photos 4 and 5 (never enrolled at K <= 3). A score is the person's best template.

  rank-1      63-way identification.
  pairs       genuine = probe vs its own person, impostor = probe vs each other person; TAR at FAR 1 %.
  open set    leave-one-person-out strangers: each probe also walks up as a stranger to a gallery of
              the other 62 people (its best score there is a stranger trial). The threshold is set for
              FPIR 1 % on those trials; TPIR = probes ranked first as themselves at or above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_app.enrol import MASK_CYCLE, photo_seed, redetect
from edge_app.vision.align import align
from edge_app.vision.pipeline import Pipeline
from edge_app.vision.synth_mask import draw_mask, random_style
from scripts import evalkit
from scripts.common import image_files
from scripts.evalmask import person_scores, rank1, split_scores, threshold_at
from scripts.modelbuild.faces import read_rgb

FRAME = 320
N_PROBE_UNMASKED_FROM = 3  # unmasked photos from this index on are probes


def framed(rgb: np.ndarray, size: int = FRAME, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = max(0, (size - h) // 2), max(0, (size - w) // 2)
    return cv2.copyMakeBorder(rgb, top, max(0, size - h - top), left, max(0, size - w - left), border)


@dataclass
class DevChips:
    names: list[str]
    chips: np.ndarray  # (n, S, S, 3)
    pid: np.ndarray  # (n,)
    masked: np.ndarray  # (n,) bool
    index: np.ndarray  # (n,) photo index within the person's masked / unmasked folder
    missed: dict[str, int]
    files: list[str]


def dev_chips(pipeline: Pipeline, root: Path, black_border: bool = False) -> DevChips:
    """black_border: the chip cut from the crop with black beyond its edges, as the kiosk's pipeline cuts a
    tight crop (the detection is the same: on the replicate-padded frame)."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    chips, pid, masked, index, files = [], [], [], [], []
    missed = {"masked": 0, "unmasked": 0}
    for p, name in enumerate(names):
        for kind in ("unmasked", "masked"):
            for i, f in enumerate(image_files(root / name / kind)):
                rgb = read_rgb(f)
                frame = framed(rgb) if rgb is not None else None
                found = pipeline.detector.detect(frame) if frame is not None else []
                if rgb is None or not found:
                    missed[kind] += 1
                    continue
                det = max(found, key=lambda d: d.width * d.height)
                src = framed(rgb, border=cv2.BORDER_CONSTANT) if black_border else frame
                chips.append(align(src, det.keypoints, pipeline.geometry, eyes_only=kind == "masked"))
                pid.append(p)
                masked.append(kind == "masked")
                index.append(i)
                files.append(f"{name}/{kind}/{f.name}")
    s = pipeline.geometry.size
    return DevChips(names, np.array(chips, np.uint8).reshape(-1, s, s, 3), np.array(pid), np.array(masked),
                    np.array(index), missed, files)


@dataclass
class SynChips:
    """Synthetic-masked chips of the enrolment photos, cut as edge_app.enrol does (MASK_CYCLE styles,
    detected again, aligned on the eyes): the templates enrolment adds for masked probes."""

    chips: np.ndarray
    pid: np.ndarray
    index: np.ndarray  # the enrolment photo's index within its person


def synthetic_chips(pipeline: Pipeline, root: Path, names: list[str], per_photo: int = 3,
                    max_k: int = 3) -> SynChips:
    chips, pid, index = [], [], []
    for p, name in enumerate(names):
        for i, f in enumerate(image_files(root / name / "unmasked")[:max_k]):
            rgb = read_rgb(f)
            frame = framed(rgb) if rgb is not None else None
            found = pipeline.detector.detect(frame) if frame is not None else []
            if frame is None or not found:
                continue
            kps = np.asarray(max(found, key=lambda d: d.width * d.height).keypoints, np.float64)
            rng = np.random.default_rng(photo_seed(f.read_bytes()))
            for j in range(per_photo):
                img = draw_mask(frame, kps, random_style(rng, MASK_CYCLE[j % len(MASK_CYCLE)]), rng)
                use = redetect(pipeline, img, kps)
                chips.append(align(img, kps if use is None else use, pipeline.geometry, eyes_only=True))
                pid.append(p)
                index.append(i)
    s = pipeline.geometry.size
    return SynChips(np.array(chips, np.uint8).reshape(-1, s, s, 3), np.array(pid), np.array(index))


def open_set(scores: np.ndarray, pid: np.ndarray, fpir: float = 0.01) -> dict[str, Any]:
    rows = np.arange(len(pid))
    own = scores[rows, pid]
    others = scores.copy()
    others[rows, pid] = -np.inf
    stranger = others.max(1)  # the probe walking up to a gallery without its person
    out: dict[str, Any] = {"stranger_trials": len(stranger)}
    try:
        t = threshold_at(stranger, fpir)
    except ValueError as exc:
        return out | {"error": str(exc)}
    hit = (scores.argmax(1) == pid) & (own >= t)
    return out | {"threshold": round(t, 4), "tpir": round(float(hit.mean()), 4),
                  "fpir": round(float((stranger >= t).mean()), 4)}


Embed = Callable[[np.ndarray], np.ndarray]


def evaluate(dev: DevChips, teacher: Embed, probe_models: dict[str, Embed], ks: tuple[int, ...] = (1, 3),
             syn: SynChips | None = None, syn_models: dict[str, Embed] | None = None) -> dict[str, Any]:
    """{model[+syn:<embedder>]: {K: {probe kind: figures}}}. Plain templates always come from ``teacher``;
    with ``syn``, each probe model is also scored against plain + synthetic-masked templates embedded by
    each of ``syn_models`` (masked probes only: a bare probe never meets masked templates)."""
    n = len(dev.names)
    unm = ~dev.masked
    t_emb = teacher(dev.chips[unm])
    probe_sel = {"masked": dev.masked, "unmasked": unm & (dev.index >= N_PROBE_UNMASKED_FROM)}
    report: dict[str, Any] = {"missed_faces": dev.missed,
                              "probes": {k: int(v.sum()) for k, v in probe_sel.items()}}
    galleries: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {"": None}
    for s_name, s_model in (syn_models or {}).items():
        if syn is not None:
            galleries[f"+syn:{s_name}"] = (s_model(syn.chips), syn.pid, syn.index)
    for model_name, model in probe_models.items():
        embs = {kind: model(dev.chips[sel]) for kind, sel in probe_sel.items()}
        for g_name, extra in galleries.items():
            for k in ks:
                use = dev.index[unm] < k
                tmpl, tpid = t_emb[use], dev.pid[unm][use]
                for kind, sel in probe_sel.items():
                    if extra is not None:
                        if kind != "masked":
                            continue
                        tmpl = np.concatenate([tmpl, extra[0][extra[2] < k]])
                        tpid = np.concatenate([tpid, extra[1][extra[2] < k]])
                    report.setdefault(model_name + g_name, {}).setdefault(f"K={k}", {})[kind] = figures(
                        person_scores(embs[kind], tmpl, tpid, n), dev.pid[sel])
    return report


def figures(scores: np.ndarray, pid: np.ndarray) -> dict[str, Any]:
    genuine, impostor = split_scores(scores, pid)
    op = evalkit.tar_at_far(genuine, impostor, 0.01)
    return {
        "rank1": rank1(scores, pid)["rate"],
        "open_set_fpir_1pct": open_set(scores, pid),
        "pair_tar_at_far_1pct": None if op.tar is None else round(op.tar, 4),
        "genuine_mean": round(float(genuine.mean()), 4),
        "impostor_mean": round(float(impostor.mean()), 4),
        "impostor_p99": round(float(np.percentile(impostor, 99)), 4),
    }


def table(report: dict[str, Any], models: list[str]) -> str:
    lines = ["| probes | K | model | rank-1 | TPIR @ FPIR 1 % (thr) | pair TAR @ FAR 1 % | genuine mean "
             "| impostor mean / p99 |",
             "|---|---|---|---|---|---|---|---|"]
    for kind in ("masked", "unmasked"):
        for k in sorted({k for m in models for k in report[m]}):
            for m in models:
                if kind not in report[m][k]:
                    continue
                r = report[m][k][kind]
                o = r["open_set_fpir_1pct"]
                tp = f"{o['tpir']:.3f} ({o['threshold']:.3f})" if "tpir" in o else "n/a"
                lines.append(f"| {kind} | {k[2:]} | {m} | {r['rank1']:.3f} | {tp} | {r['pair_tar_at_far_1pct']} | "
                             f"{r['genuine_mean']:.3f} | {r['impostor_mean']:.3f} / {r['impostor_p99']:.3f} |")
    return "\n".join(lines)
