#!/usr/bin/env python3
"""Presentation-attack detection figures (ISO/IEC 30107-3 APCER / BPCER) of the shipped liveness check.

    python scripts/evaluate_liveness.py [--data ../shared/data] [--step 4] [--json] [--plot out.png]

Bona fide presentations (real faces of <data>): faces-dev (faces >= --min-face px wide),
real-masked-dev masked and unmasked (160x160 tight crops, as they are), masks-chandrikadeb7 with_mask
without RMFRD's photos (every --step-th). The tight crops are also placed in a 640x480 frame (rest of the frame
mirrored from the photo, no hard edge) and reported apart ("in frame").

Attack presentations: the upstream sample spoofs (real attacks, reference/minifasnet/sample/image_F*),
and SYNTHETIC attacks made from real photos by scripts/pad_attacks.py: paper prints, screen replays,
cut-out masks held over another real face, each at face widths --sizes and camera blurs --blurs; plus
short videos of them moving rigidly, judged as the door judges them (live in >= --votes of the first
--window frames). Every figure from a synthetic attack is labelled "synthetic".

APCER(kind, t) = attacks of that kind with p(live) >= t / attacks of that kind whose face was found;
BPCER(t) = bona fide with p(live) < t / bona fide whose face was found. A presentation without a detected
face cannot be recognised, so it is counted apart (failure to acquire), not in the rates.
Two operating points are given: the highest threshold with BPCER <= --max-bpcer on the bona fide set
(all but "in frame"), and the equal-error threshold against single print and screen frames.

Exit codes: 0 done, 2 bad arguments or missing data, 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.errors import ImageError  # noqa: E402
from edge_app.imageio import read_image  # noqa: E402
from edge_app.models import ModelSet  # noqa: E402
from edge_app.vision.cascade import FaceCascade  # noqa: E402
from edge_app.vision.detector import Detection, FaceDetector  # noqa: E402
from edge_app.vision.liveness import LivenessChecker, planar_residual  # noqa: E402
from scripts import pad_attacks  # noqa: E402
from scripts.common import DATA_ROOT, UsageError, image_files, not_rmfrd, run_main  # noqa: E402

THRESHOLDS = np.unique(np.round(np.concatenate([np.arange(0.001, 0.02, 0.001), np.arange(0.02, 1.0, 0.01)]), 3))
BONA_FIDE_EXTRA = "in frame"  # groups reported but not used to choose the threshold
SYNTHETIC = "synthetic"


@dataclass
class Group:
    name: str
    attack: bool
    scores: list[float] = field(default_factory=list)
    no_face: int = 0
    synthetic: bool = False

    def rate(self, t: float) -> float | None:
        """APCER (attack) or BPCER (bona fide) at threshold t; None when no face was scored."""
        if not self.scores:
            return None
        s = np.asarray(self.scores)
        return float((s >= t).mean() if self.attack else (s < t).mean())


class Scorer:
    def __init__(self, detector: FaceDetector | FaceCascade, checker: LivenessChecker) -> None:
        self.detector, self.checker = detector, checker
        self.ms: list[float] = []

    def largest(self, rgb: np.ndarray) -> Detection | None:
        found = self.detector.detect(rgb)
        return max(found, key=lambda d: d.width * d.height) if found else None

    def score(self, rgb: np.ndarray, det: Detection) -> float:
        t = time.perf_counter()
        p = self.checker.probability(rgb, det.box)
        self.ms.append((time.perf_counter() - t) * 1e3)
        return p

    def add(self, group: Group, rgb: np.ndarray) -> Detection | None:
        det = self.largest(rgb)
        if det is None:
            group.no_face += 1
        else:
            group.scores.append(self.score(rgb, det))
        return det


def read_rgb(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except ImageError:
        return None


def bona_fide(args: argparse.Namespace, scorer: Scorer, bar: Any) -> tuple[list[Group], list[tuple[Any, Any]]]:
    """The bona fide groups, and (photo, face box) pairs to make attacks from."""
    data = args.data
    dev = Group("faces-dev", False)
    sources: list[tuple[Any, Any]] = []
    for path in image_files(data / "faces-dev"):
        rgb = read_rgb(path)
        if rgb is None:
            continue
        for det in scorer.detector.detect(rgb):
            if det.width >= args.min_face:
                dev.scores.append(scorer.score(rgb, det))
        big = scorer.largest(rgb)
        if big is not None and big.width >= args.min_face:
            sources.append((rgb, big.box))
        bar.update()
    groups = [dev]
    masked_root = data / "real-masked-dev"
    for kind in ("masked", "unmasked"):
        g, framed = Group(f"real-masked-dev {kind}", False), Group(f"real-masked-dev {kind} {BONA_FIDE_EXTRA}", False)
        for person in sorted(p for p in masked_root.iterdir() if p.is_dir()):
            files = image_files(person / kind)
            for i, path in enumerate(files):
                rgb = read_rgb(path)
                if rgb is None:
                    continue
                det = scorer.add(g, rgb)
                if det is not None:
                    scorer.add(framed, pad_attacks.in_frame(rgb, det.box, args.sizes[len(framed.scores) %
                                                                                    len(args.sizes)]))
                    if kind == "unmasked" and i == 0:
                        sources.append((rgb, det.box))
                bar.update()
        groups += [g, framed]
    with_mask = Group("masks-chandrikadeb7 with_mask", False)
    for path in not_rmfrd(image_files(data / "masks-chandrikadeb7" / "dataset" / "with_mask", args.step)):
        rgb = read_rgb(path)
        if rgb is not None:
            scorer.add(with_mask, rgb)
        bar.update()
    groups.append(with_mask)
    return groups, sources


def attack_list(args: argparse.Namespace) -> Iterator[pad_attacks.Attack]:
    seed = 0
    for kind in pad_attacks.KINDS:
        for size in args.sizes:
            for blur in args.blurs:
                seed += 1
                yield pad_attacks.Attack(kind, size, blur, seed)


def attacks(args: argparse.Namespace, scorer: Scorer, sources: list[tuple[Any, Any]], bar: Any
            ) -> tuple[list[Group], dict[str, Any]]:
    samples = Group("upstream sample spoofs (real attacks)", True)
    for path in sorted((args.minifasnet / "sample").glob("image_F*.jpg")):
        rgb = read_rgb(path)
        if rgb is not None:
            scorer.add(samples, rgb)
    groups = {k: Group(f"{k} ({SYNTHETIC})", True, synthetic=True) for k in pad_attacks.KINDS}
    videos = {k: Group(f"{k} video ({SYNTHETIC}, per video)", True, synthetic=True) for k in pad_attacks.KINDS}
    video_frames: dict[str, list[list[float]]] = {k: [] for k in pad_attacks.KINDS}
    residuals: dict[str, list[float]] = {k: [] for k in pad_attacks.KINDS}
    for i, (rgb, box) in enumerate(sources):
        wearer, wearer_box = sources[(i + 1) % len(sources)]
        for a in attack_list(args):
            try:
                frame = next(pad_attacks.attack_frames(rgb, box, a, wearer, wearer_box))
            except ValueError:  # a cut-out too large for the frame at this size
                continue
            scorer.add(groups[a.kind], frame)
            bar.update()
        if i % args.video_every:
            continue
        for kind in pad_attacks.KINDS:
            a = pad_attacks.Attack(kind, args.sizes[i % len(args.sizes)], args.blurs[0], 1000 + i)
            try:
                frames = list(pad_attacks.attack_frames(rgb, box, a, wearer, wearer_box, n_frames=args.window))
            except ValueError:
                continue
            ps, kps = [], []
            for f in frames:
                det = scorer.largest(f)
                if det is not None:
                    ps.append(scorer.score(f, det))
                    kps.append(np.asarray(det.keypoints))
            if len(ps) < args.votes:
                videos[kind].no_face += 1
                continue
            video_frames[kind].append(ps)
            r = planar_residual(kps)
            if r is not None:
                residuals[kind].append(r)
            bar.update()
    # A video passes at t when >= votes of its frames are live: its score is the votes-th highest p.
    for kind, per in video_frames.items():
        videos[kind].scores = [sorted(ps, reverse=True)[args.votes - 1] for ps in per]
    # APCER of the motion cue alone: rigid videos whose residual reaches the configured minimum pass it.
    cut = args.motion_residual
    motion = {k: {"videos": len(v), "residual_max": round(max(v), 4) if v else None,
                  "residual_median": round(float(np.median(v)), 4) if v else None,
                  f"APCER_at_{cut:g}": round(float(np.mean(np.asarray(v) >= cut)), 4) if v else None}
              for k, v in residuals.items()}
    return [samples, *groups.values(), *videos.values()], motion


def pooled_bona_fide(bona: list[Group]) -> Group:
    return Group("bona fide (pooled)", False, [s for g in bona if BONA_FIDE_EXTRA not in g.name for s in g.scores])


def pooled_attacks(att: list[Group]) -> Group:
    """Single frames of the print and screen attacks: the ones the issue's APCER goal names."""
    return Group("print + screen (pooled)", True,
                 [s for g in att if g.name.split(" ")[0] in ("print", "screen") and "video" not in g.name
                  for s in g.scores], synthetic=True)


def thresholds(bona: list[Group], att: list[Group], max_bpcer: float) -> dict[str, float]:
    """Two operating points: the highest t with pooled BPCER <= max_bpcer, and the equal-error t
    (pooled BPCER = APCER of single print/screen frames), where neither kind of error is favoured."""
    b, a = pooled_bona_fide(bona), pooled_attacks(att)
    ok = [t for t in THRESHOLDS if (b.rate(t) or 0.0) <= max_bpcer]
    gap = [abs((b.rate(t) or 0.0) - (a.rate(t) or 0.0)) for t in THRESHOLDS]
    return {"bpcer_bound": float(max(ok)) if ok else float(THRESHOLDS[0]),
            "equal_error": float(THRESHOLDS[int(np.argmin(gap))])}


def report(args: argparse.Namespace, bona: list[Group], att: list[Group], motion: dict[str, Any], ms: list[float],
           points: dict[str, float]) -> dict[str, Any]:
    def row(g: Group, t: float) -> dict[str, Any]:
        r = g.rate(t)
        return {"n": len(g.scores), "no_face": g.no_face, ("APCER" if g.attack else "BPCER"):
                None if r is None else round(r, 4), "synthetic": g.synthetic}

    pooled, pa = pooled_bona_fide(bona), pooled_attacks(att)
    shown = sorted({*points.values(), args.threshold, *args.also})
    return {
        "thresholds": points,
        "threshold_rules": {"bpcer_bound": f"highest t with pooled BPCER <= {args.max_bpcer:.0%} (bona fide, "
                                           "'in frame' excluded)",
                            "equal_error": "pooled BPCER = APCER of single synthetic print + screen frames"},
        "shipped_threshold": args.threshold,
        "at": {str(t): {"bona_fide_pooled_BPCER": round(pooled.rate(t) or 0.0, 4),
                        "print_screen_pooled_APCER (synthetic)": round(pa.rate(t) or 0.0, 4),
                        **{g.name: row(g, t) for g in bona + att}} for t in shown},
        "motion_cue_planar_residual_rigid_videos": motion,
        "liveness_ms_per_face": {"median": round(float(np.median(ms)), 3),
                                 "p95": round(float(np.percentile(ms, 95)), 3), "n": len(ms)},
        "config": {"sizes": args.sizes, "blurs": args.blurs, "votes": args.votes, "window": args.window,
                   "min_face": args.min_face, "step": args.step},
        "note": "groups marked synthetic are simulated attacks made from real photos (scripts/pad_attacks.py); "
                "only 'upstream sample spoofs' are real attacks",
    }


def text(r: dict[str, Any]) -> str:
    lines = [f"{k} threshold {v:g}: {r['threshold_rules'][k]}" for k, v in r["thresholds"].items()]
    lines.append(f"shipped threshold {r['shipped_threshold']}")
    for t, rows in r["at"].items():
        lines += ["", f"at threshold {t}: bona fide pooled BPCER {rows['bona_fide_pooled_BPCER']:.1%}, "
                      f"print + screen pooled APCER {rows['print_screen_pooled_APCER (synthetic)']:.1%} (synthetic)",
                  f"  {'group':<52}{'n':>6}{'no face':>9}{'rate':>14}"]
        for name, v in rows.items():
            if isinstance(v, dict):
                key = "APCER" if "APCER" in v else "BPCER"
                rate = "-" if v[key] is None else f"{v[key]:.1%}"
                lines.append(f"  {name:<52}{v['n']:>6}{v['no_face']:>9}{key + ' ' + rate:>14}")
    m = r["liveness_ms_per_face"]
    lines += ["", f"liveness: {m['median']:.2f} ms per face median, {m['p95']:.2f} ms p95 (both networks)",
              "motion cue, planar residual of rigid synthetic videos (eye distances): "
              + ", ".join(f"{k} median {v['residual_median']} max {v['residual_max']}"
                          for k, v in r["motion_cue_planar_residual_rigid_videos"].items()),
              "  (APCER of the motion cue alone at the configured minimum residual: "
              + ", ".join(f"{k} {next(x for n, x in v.items() if n.startswith('APCER'))}"
                          for k, v in r["motion_cue_planar_residual_rigid_videos"].items()) + ")",
              "", r["note"]]
    return "\n".join(lines)


def plot(bona: list[Group], att: list[Group], shipped: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    pooled = pooled_bona_fide(bona)
    ax.plot(THRESHOLDS, [pooled.rate(t) for t in THRESHOLDS], "k-", lw=2, label="BPCER, real faces (pooled)")
    for g in bona:
        if "masked" in g.name and g.scores:
            ax.plot(THRESHOLDS, [g.rate(t) for t in THRESHOLDS], "k:", lw=1, label=f"BPCER {g.name}")
    for g in att:
        if g.scores:
            ax.plot(THRESHOLDS, [g.rate(t) for t in THRESHOLDS], "--" if g.synthetic else "-", label=f"APCER {g.name}")
    ax.axvline(shipped, color="grey", lw=0.8, label=f"shipped threshold {shipped:g}")
    ax.axhline(0.02, color="grey", lw=0.5, ls=":")
    ax.axhline(0.05, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("threshold on p(live)")
    ax.set_ylabel("error rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Liveness threshold trade-off (dashed: synthetic attacks)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA_ROOT, help="shared data folder ($EDGE_APP_DATA)")
    ap.add_argument("--minifasnet", type=Path, default=None,
                    help="folder with sample/ (default $EDGE_APP_MINIFASNET or <data>/../reference/minifasnet)")
    ap.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled ones)")
    ap.add_argument("--step", type=int, default=4, help="every N-th with_mask photo (4)")
    ap.add_argument("--min-face", type=int, default=60, help="faces-dev faces narrower than this are skipped (60)")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in floats(s)], default=[90, 140, 200],
                    help="face widths in px of the synthetic attacks in a 640x480 frame (90,140,200)")
    ap.add_argument("--blurs", type=floats, default=[0.0, 1.2, 2.5], help="camera blur sigmas (0,1.2,2.5)")
    ap.add_argument("--votes", type=int, default=3, help="live frames needed of the video window (3)")
    ap.add_argument("--window", type=int, default=5, help="video length in frames (5)")
    ap.add_argument("--video-every", type=int, default=2, help="a video from every N-th source photo (2)")
    ap.add_argument("--max-bpcer", type=float, default=0.02, help="BPCER bound for the threshold choice (0.02)")
    ap.add_argument("--threshold", type=float, default=None, help="also report at this threshold (default: shipped)")
    ap.add_argument("--also", type=floats, default=[0.02, 0.1, 0.3, 0.5], help="and at these (0.02,0.1,0.3,0.5)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write the APCER/BPCER-vs-threshold plot")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    def body() -> None:
        from edge_app.config import DEFAULT
        from scripts.modelbuild.minifasnet import weights_dir

        args.minifasnet = weights_dir(args.minifasnet, args.data)
        for folder in (args.data / "faces-dev", args.data / "real-masked-dev",
                       args.data / "masks-chandrikadeb7" / "dataset" / "with_mask", args.minifasnet / "sample"):
            if not folder.is_dir():
                raise UsageError(f"data folder not found: {folder}")
        if args.step < 1 or args.video_every < 1 or not 1 <= args.votes <= args.window:
            raise UsageError("--step and --video-every must be >= 1, and 1 <= --votes <= --window")
        if args.threshold is None:
            args.threshold = DEFAULT.liveness.threshold
        args.motion_residual = DEFAULT.liveness.motion_residual
        ms = ModelSet(args.models)
        # The kiosk's own detection (the cascade): the faces it scores are the faces a door would judge.
        scorer = Scorer(ms.detector(num_threads=2), ms.liveness(1))
        with tqdm(desc="liveness", unit="image", disable=args.no_progress, file=sys.stderr, leave=False) as bar:
            bona, sources = bona_fide(args, scorer, bar)
            if not sources:
                raise UsageError("no face found to make attacks from")
            att, motion = attacks(args, scorer, sources, bar)
        r = report(args, bona, att, motion, scorer.ms, thresholds(bona, att, args.max_bpcer))
        if args.plot:
            plot(bona, att, args.threshold, args.plot)
            r["plot"] = str(args.plot)
        print(json.dumps(r, indent=2) if args.json else text(r))

    return run_main("evaluate_liveness", body)


if __name__ == "__main__":
    sys.exit(main())
