"""Liveness and the motion cue on REAL videos: what they cost live people, what real attacks get through.

    python scripts/liveness_videos.py DIR [--fps 10] [--window 5] [--votes 3] [--threshold T]
                                      [--motion-residual R] [--max-side 640] [--json]

DIR holds one sub-folder per kind of presentation: ``bonafide/`` (live people in front of a camera) and any
other name for attacks (``print/``, ``screen/``, ...). Each entry of a sub-folder is a video file or a
folder of frames. A video is read at about --fps frames a second (every n-th frame of the file: a kiosk's
camera rate), shrunk to --max-side (a kiosk camera's resolution), and each frame goes through the kiosk's own
pipeline (detection cascade, eye centres, liveness) on its largest face. The frames with a face are cut into
consecutive windows of --window frames, each judged as the door judges a track's window:

  liveness  at least --votes of its frames have p(live) >= --threshold
  motion    the keypoints' planar residual over the window >= --motion-residual (a photo or a screen moves
            as one plane; edge_app.vision.liveness.planar_residual)

Per kind: the share of windows each check refuses (bona fide: BPCER) or lets through (attacks: APCER),
alone and together. Exit codes: 0 done, 2 bad arguments or nothing to read, 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_app.errors import EdgeAppError
from edge_app.hardware.camera import open_source
from edge_app.vision.liveness import planar_residual
from edge_app.vision.pipeline import Pipeline
from scripts.bench import positive_int
from scripts.common import UsageError, run_main

BONA_FIDE = "bonafide"


@dataclass
class Window:
    p_live: list[float]
    residual: float | None


@dataclass
class Clip:
    path: str
    kind: str
    frames: int = 0  # frames looked at (after the --fps step)
    faces: int = 0
    windows: list[Window] = field(default_factory=list)
    error: str | None = None


def clips_of(root: Path) -> list[tuple[str, Path]]:
    """(kind, video file or frame folder) for every entry of root's sub-folders, sorted."""
    if not root.is_dir():
        raise UsageError(f"video folder not found: {root}")
    found = [(kind.name, entry) for kind in sorted(p for p in root.iterdir() if p.is_dir())
             for entry in sorted(kind.iterdir()) if not entry.name.startswith(".")]
    if not found:
        raise UsageError(f"{root}: no videos (expected sub-folders such as {BONA_FIDE}/ and print/ holding "
                         "video files or folders of frames)")
    return found


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def read_clip(pipe: Pipeline, kind: str, path: Path, args: argparse.Namespace) -> Clip:
    """One clip through the pipeline; a clip that cannot be read is kept with its error, not raised."""
    clip = Clip(str(path), kind)
    p_live: list[float] = []
    kps: list[np.ndarray] = []
    try:
        with open_source(str(path)) as src:
            step = max(1, round(src.fps / args.fps)) if src.fps else 1
            for frame in src:
                if frame.index % step:
                    continue
                clip.frames += 1
                faces = pipe.process(shrink(frame.image, args.max_side), max_faces=1)
                if not faces or faces[0].live_probability is None:
                    continue
                clip.faces += 1
                p_live.append(faces[0].live_probability)
                kps.append(np.asarray(faces[0].detection.keypoints, np.float64))
    except (EdgeAppError, OSError, cv2.error) as exc:
        clip.error = f"{type(exc).__name__}: {exc}"
        return clip
    if clip.frames == 0:
        clip.error = "no frame could be read"
    w = args.window
    for i in range(0, len(p_live) - w + 1, w):
        clip.windows.append(Window(p_live[i:i + w], planar_residual(kps[i:i + w])))
    return clip


def window_score(w: Window, votes: int) -> float:
    """The highest threshold at which the window's liveness vote still passes: its votes-th best p(live)."""
    return sorted(w.p_live, reverse=True)[votes - 1]


def judge(w: Window, args: argparse.Namespace) -> dict[str, bool]:
    live = window_score(w, args.votes) >= args.threshold
    moves = w.residual is not None and w.residual >= args.motion_residual
    return {"liveness": live, "motion": moves, "both": live and moves}


def summarise(clips: list[Clip], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({c.kind for c in clips}):
        mine = [c for c in clips if c.kind == kind]
        wins = [w for c in mine for w in c.windows]
        verdicts = [judge(w, args) for w in wins]
        attack = kind != BONA_FIDE
        rates: dict[str, float | None] = {}
        for check in ("liveness", "motion", "both"):
            passed = [v[check] for v in verdicts]
            rate = None if not passed else float(np.mean(passed) if attack else 1 - np.mean(passed))
            rates[check] = None if rate is None else round(rate, 4)
        res = [w.residual for w in wins if w.residual is not None]
        ps = [p for w in wins for p in w.p_live]
        out[kind] = {
            "attack": attack, "rate": "APCER" if attack else "BPCER", "clips": len(mine),
            "unreadable": sum(c.error is not None for c in mine), "frames": sum(c.frames for c in mine),
            "frames_with_face": sum(c.faces for c in mine), "windows": len(wins), **rates,
            "p_live_median": round(float(np.median(ps)), 4) if ps else None,
            "residual_p10_median_p90": [round(float(x), 4) for x in np.percentile(res, [10, 50, 90])] if res else None,
        }
    return out


SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def sweep(clips: list[Clip], votes: int, thresholds: tuple[float, ...] = SWEEP) -> dict[str, dict[str, float]]:
    """{kind: {threshold: rate}} of the liveness vote alone: BPCER for bona fide, APCER for attacks."""
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({c.kind for c in clips}):
        scores = np.array([window_score(w, votes) for c in clips if c.kind == kind for w in c.windows])
        if not len(scores):
            continue
        attack = kind != BONA_FIDE
        out[kind] = {f"{t:g}": round(float(np.mean(scores >= t) if attack else np.mean(scores < t)), 4)
                     for t in thresholds}
    return out


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, rates in r["sweep"].items():
        ts = [float(t) for t in rates]
        attack = r["kinds"][kind]["attack"]
        ax.plot(ts, [100 * v for v in rates.values()], marker="o", ls="--" if attack else "-",
                label=f"{kind}: {'APCER' if attack else 'BPCER'} ({r['kinds'][kind]['windows']} windows)")
    ax.axvline(r["settings"]["threshold"], color="grey", lw=0.8)
    ax.set_xlabel("[liveness] threshold (p(live) of a live frame)")
    ax.set_ylabel("% of windows")
    ax.set_title(f"Real videos: {r['settings']['votes']} live frames of {r['settings']['window']} needed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def text(r: dict[str, Any]) -> str:
    a = r["settings"]
    lines = [f"windows of {a['window']} frames at ~{a['fps']:g} frames/s; liveness: >= {a['votes']} frames with "
             f"p(live) >= {a['threshold']:g}; motion: planar residual >= {a['motion_residual']:g} eye distances",
             f"{'kind':<12}{'clips':>6}{'frames':>8}{'faces':>7}{'windows':>9}{'rate':>7}{'liveness':>10}"
             f"{'motion':>8}{'both':>7}   residual p10/median/p90"]
    for kind, s in r["kinds"].items():
        spread = s["residual_p10_median_p90"]
        res = "-" if spread is None else " / ".join(f"{x:.3f}" for x in spread)
        lines.append(f"{kind:<12}{s['clips']:>6}{s['frames']:>8}{s['frames_with_face']:>7}{s['windows']:>9}"
                     f"{s['rate']:>7}{_pct(s['liveness']):>10}{_pct(s['motion']):>8}{_pct(s['both']):>7}   {res}")
    lines.append("liveness vote alone, by threshold:")
    lines.append(f"{'':<22}" + "".join(f"{t:>7g}" for t in SWEEP))
    for kind, rates in r["sweep"].items():
        lines.append(f"  {kind:<12}{r['kinds'][kind]['rate']:>6}  " + "".join(f"{v:>7.1%}" for v in rates.values()))
    bad = [c for c in r["clips"] if c["error"]]
    lines += [f"unreadable: {c['path']}: {c['error']}" for c in bad]
    lines.append("BPCER: bona fide windows refused; APCER: attack windows let through ('both': the door with "
                 "[liveness] motion = true).")
    return "\n".join(lines)


def positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def main(argv: list[str] | None = None) -> int:
    from edge_app.config import DEFAULT

    ap = argparse.ArgumentParser(prog="liveness_videos", description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", type=Path, help="folder of <kind>/<video or frame folder>")
    ap.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled ones)")
    ap.add_argument("--fps", type=positive_float, default=10.0, help="frames a second looked at (10)")
    ap.add_argument("--window", type=positive_int, default=DEFAULT.access.window,
                    help=f"frames per window ({DEFAULT.access.window}, the door's)")
    ap.add_argument("--votes", type=positive_int, default=DEFAULT.liveness.votes,
                    help=f"live frames needed per window ({DEFAULT.liveness.votes})")
    ap.add_argument("--threshold", type=float, default=DEFAULT.liveness.threshold,
                    help=f"p(live) of a live frame ({DEFAULT.liveness.threshold})")
    ap.add_argument("--motion-residual", type=float, default=DEFAULT.liveness.motion_residual,
                    help=f"least planar residual of a live window ({DEFAULT.liveness.motion_residual})")
    ap.add_argument("--max-side", type=positive_int, default=640, help="frames shrunk to this longer side (640)")
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write BPCER/APCER against the threshold")
    args = ap.parse_args(argv)

    def body() -> None:
        if args.votes > args.window:
            raise UsageError(f"--votes {args.votes} exceeds --window {args.window}")
        if not 0 < args.threshold < 1 or not 0 < args.motion_residual < 1:
            raise UsageError("--threshold and --motion-residual must be in (0, 1)")
        found = clips_of(args.videos)
        from tqdm import tqdm

        from edge_app.models import ModelSet

        pipe = ModelSet(args.models).pipeline(num_threads=args.threads, liveness=True)
        clips = [read_clip(pipe, kind, path, args)
                 for kind, path in tqdm(found, desc="clips", unit="clip", file=sys.stderr,
                                        disable=not sys.stderr.isatty())]
        report = {"settings": {k: getattr(args, k) for k in ("fps", "window", "votes", "threshold",
                                                             "motion_residual", "max_side")},
                  "kinds": summarise(clips, args), "sweep": sweep(clips, args.votes),
                  "clips": [{"path": c.path, "kind": c.kind, "frames": c.frames, "faces": c.faces,
                             "windows": len(c.windows), "error": c.error,
                             "residuals": [None if w.residual is None else round(w.residual, 4) for w in c.windows],
                             "p_live": [[round(p, 4) for p in w.p_live] for w in c.windows]} for c in clips]}
        if args.plot is not None:
            plot(report, args.plot)
            report["plot"] = str(args.plot)
        print(json.dumps(report, indent=2) if args.json else text(report))

    return run_main("liveness_videos", body)


if __name__ == "__main__":
    sys.exit(main())
