#!/usr/bin/env python3
"""Face detection under masks, at close range and at the sizes a door sees, measured on real faces.

    python scripts/detection_eval.py [--widths 48,64,...] [--step N] [--patches N] [--baseline]
                                     [--threads 2] [--json] [--plot out/detection.png]

Faces: every crop of <data>/real-masked-dev/<person>/{masked,unmasked}/*.jpg (160x160, tight), run
- as-crop: the crop as it is, a face filling the whole image (a person stepping up to the kiosk);
- framed at W px: the crop scaled to W px and pasted at a random place of a 640x480 frame on a plain
  colour or a blurred photo (faces-dev, blurred: no face a detector could find), for each --widths W.
And the portraits of faces-dev (obama*.jpg, biden.jpg) scaled so their face box is W px wide, with the
rest of the photo around it, at a random place of a 640x480 frame. And in context (--context N): N photos of
each of masks-chandrikadeb7's with_mask and without_mask (RMFRD's left out) placed the same way, each used only
when the pipeline finds its face at full size: a pasted crop has no head, neck or shoulders around the face,
which costs a masked face most; these rows show detection with them.

For each condition and masked/unmasked: the share of faces found (a detection whose centre lies in the
pasted crop), the share of those whose eye keypoints lie in the crop's eye band (alignment sanity), the
cosine score against the person's template (their first unmasked crop framed at 200 px; probes are all their
other photos) and its drop from the same photo at 200 px, the detect-stage time (p50/p95) and the number of
model passes. False faces: detections on --patches face-less patches cut from faces-dev photos outside every
face (dlib's HOG and ours, boxes grown 1.6x), as a 160x160 crop and filling a 640x480 frame, plus a blank and
a noise frame. --baseline measures the single short-range pass (the detector before vision/cascade.py).

Data: --data, $EDGE_APP_DATA or <repo>/../shared/data. Exit codes: 0 done, 2 bad arguments or data, 1 other.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.errors import ImageError  # noqa: E402
from edge_app.imageio import read_image  # noqa: E402
from edge_app.models import ModelSet  # noqa: E402
from edge_app.vision.cascade import CascadeOptions, FaceCascade  # noqa: E402
from edge_app.vision.detector import Detection  # noqa: E402
from edge_app.vision.embedder import first_part  # noqa: E402
from edge_app.vision.pipeline import Face, Pipeline, StageTimes  # noqa: E402
from scripts.bench import door_frame, positive_int, spread_order, summary  # noqa: E402
from scripts.common import DATA_ROOT, UsageError, image_files, not_rmfrd, run_main  # noqa: E402

FRAME_W, FRAME_H = 640, 480
REFERENCE_WIDTH = 200  # the score drop is measured against the same photo at this face width
TOLERANCE = 0.05  # goal: from 64 px up, the score stays within this of its value at 200 px
KINDS = ("masked", "unmasked")
AS_CROP = "as-crop"


# ---------------------------------------------------------------- samples

@dataclass
class Sample:
    person: str
    kind: str  # masked | unmasked | portrait
    name: str
    rgb: np.ndarray


@dataclass
class Result:
    found: bool
    sane: bool  # eye keypoints inside the crop's eye band
    embedding: np.ndarray | None
    detect_ms: float
    passes: int
    masked: bool | None = None  # the mask classifier's call


@dataclass
class Table:
    """condition -> kind -> sample index -> Result"""

    rows: dict[str, dict[str, dict[int, Result]]] = field(default_factory=dict)

    def put(self, cond: str, kind: str, i: int, r: Result) -> None:
        self.rows.setdefault(cond, {}).setdefault(kind, {})[i] = r


def crops(data: Path, step: int) -> list[Sample]:
    root = data / "real-masked-dev"
    if not root.is_dir():
        raise UsageError(f"real-masked-dev not found: {root} (set --data or $EDGE_APP_DATA)")
    out = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for kind in KINDS:
            folder = person / kind
            if folder.is_dir():
                out += [Sample(person.name, kind, f"{person.name}/{kind}/{f.name}", read_image(f))
                        for f in image_files(folder)]
    if not out:
        raise UsageError(f"no <person>/masked|unmasked/*.jpg under {root}")
    return out[::step]


def backgrounds(faces_dev: Path) -> list[np.ndarray]:
    """640x480 blurred photos (sigma 12 px: a face in them is a smudge) and plain colours."""
    photos = [p for p in sorted(faces_dev.glob("dlib_*.jpg"))]
    out = [cv2.GaussianBlur(cv2.resize(read_image(p), (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA),
                            (0, 0), 12) for p in photos]
    for colour in ((128, 128, 128), (40, 45, 50), (200, 195, 185), (90, 120, 150)):
        out.append(np.full((FRAME_H, FRAME_W, 3), colour, np.uint8))
    return out


def framed(crop: np.ndarray, width: int, bg: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """The crop scaled to width x width at a random place of a copy of bg; returns frame and top-left."""
    interp = cv2.INTER_AREA if width < crop.shape[1] else cv2.INTER_LINEAR
    face = cv2.resize(crop, (width, width), interpolation=interp)
    x, y = int(rng.integers(0, FRAME_W - width + 1)), int(rng.integers(0, FRAME_H - width + 1))
    frame = bg.copy()
    frame[y:y + width, x:x + width] = face
    return frame, (x, y)


def eye_band_ok(det: Detection, x: float, y: float, w: float) -> bool:
    """Eyes where a tight crop has them: measured on the unmasked crops found in large frames (every one
    within this band): both eyes 12-62 % down, the subject's right eye in the left 58 %, the left eye in the
    right 58 %, 18-62 % of the crop apart."""
    (rx, ry), (lx, ly) = (det.keypoints[0] - (x, y)) / w, (det.keypoints[1] - (x, y)) / w
    return bool(0.12 < ry < 0.62 and 0.12 < ly < 0.62 and 0.0 < rx < 0.58 and 0.42 < lx < 1.0
                and 0.18 < np.hypot(lx - rx, ly - ry) < 0.62)


def match(faces: list[Face], x: float, y: float, w: float) -> Face | None:
    """The face of the pasted crop: centre inside it, box 0.4-2.5x its width; the largest such."""
    hits = [f for f in faces if x <= (f.detection.box[0] + f.detection.box[2]) / 2 <= x + w
            and y <= (f.detection.box[1] + f.detection.box[3]) / 2 <= y + w
            and 0.4 * w <= f.detection.width <= 2.5 * w]
    return max(hits, key=lambda f: f.detection.width, default=None)


def run_one(pipe: Pipeline, frame: np.ndarray, x: float, y: float, w: float, sanity: bool = True) -> Result:
    faces = pipe.process(frame)
    assert pipe.times is not None
    ms = pipe.times.detect[-1]
    passes = pipe.detector.passes if isinstance(pipe.detector, FaceCascade) else 1
    f = match(faces, x, y, w)
    if f is None:
        return Result(False, False, None, ms, passes)
    return Result(True, eye_band_ok(f.detection, x, y, w) if sanity else True, f.embedding, ms, passes, f.masked)


def pair_score(template: np.ndarray, probe: np.ndarray, head: int) -> float:
    """Cosine of a probe with a bare template as the door compares them: a masked face of a fused embedder (zeros
    after its first ``head`` components, vision/embedder.py) on the first network's part of both, made unit."""
    if probe[head:].any() or head >= len(probe):
        return float(template @ probe)
    return float(first_part(template, head) @ first_part(probe, head))


# ---------------------------------------------------------------- portraits (faces-dev)

def portraits(pipe: Pipeline, faces_dev: Path, widths: list[int], seed: int) -> dict[str, Any]:
    """obama2/obama3 against obama.jpg, obama.jpg against obama2.jpg: score per face width."""
    pairs = [("obama2.jpg", "obama.jpg"), ("obama3.jpg", "obama.jpg"), ("obama.jpg", "obama2.jpg")]
    out: dict[str, Any] = {}
    for probe, enrolled in pairs:
        ref, img = read_image(faces_dev / enrolled), read_image(faces_dev / probe)
        tf, pf = pipe.process(ref), pipe.process(img)
        if not tf or not pf or tf[0].embedding is None:
            raise RuntimeError(f"no face in {enrolled} or {probe} at full size")
        template, box = tf[0].embedding, pf[0].detection.box
        rng = np.random.default_rng(seed)
        per: dict[int, float | None] = {}
        for w in widths:
            frame, (x, y, fw) = door_frame(img, box, w, rng)
            r = run_one(pipe, frame, x, y, fw, sanity=False)
            per[w] = None if r.embedding is None else round(pair_score(template, r.embedding,
                                                                          pipe.embedder.primary_dim), 4)
        out[f"{probe} vs {enrolled}"] = per
    return out


# ---------------------------------------------------------------- in context (mask-set photos)

CONTEXT_SETS = (("masked", "with_mask", True), ("unmasked", "without_mask", False))
MASK_SET = Path("masks-chandrikadeb7") / "dataset"
CONTEXT_MIN_WIDTH = 60.0  # px at full size: smaller faces would be enlarged for the big widths


def in_context(pipe: Pipeline, data: Path, widths: list[int], n: int, seed: int) -> dict[str, Any]:
    """Faces with what a camera sees around them: mask-set photos (RMFRD's left out), each scaled so its face is
    W px wide with the rest of the photo around it in a 640x480 frame (grey beyond), as bench.py builds frames.
    Only photos whose face the pipeline finds at full size (one face, >= 60 px, its mask status that of the
    folder) take part, so the rates say how detection holds as the face shrinks, not how often it finds a face
    at all. with_mask holds real masked photos and some with a mask pasted on (its SOURCE.md)."""
    out: dict[str, Any] = {}
    for kind, folder, masked in CONTEXT_SETS:
        files = spread_order(not_rmfrd(image_files(data / MASK_SET / folder)), n)[:n]
        rng = np.random.default_rng(seed)
        found: dict[int, list[bool]] = {w: [] for w in widths}
        for f in files:
            try:
                img = read_image(f)
            except ImageError:
                continue
            faces = pipe.process(img)
            if len(faces) != 1 or bool(faces[0].masked) != masked or faces[0].detection.width < CONTEXT_MIN_WIDTH:
                continue
            for w in widths:
                frame, (x, y, fw) = door_frame(img, faces[0].detection.box, w, rng)
                found[w].append(run_one(pipe, frame, x, y, fw, sanity=False).found)
        out[kind] = {"tried": len(files), "used": len(found[widths[0]]),
                     "found": {w: round(float(np.mean(v)), 4) if v else None for w, v in found.items()}}
    return out


# ---------------------------------------------------------------- false faces

def face_boxes(pipe: Pipeline, img: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Every face anyone finds: ours (all passes) and dlib's HOG (upsampled once), if installed."""
    boxes = [f.detection.box for f in pipe.process(img)]
    try:
        from scripts.modelbuild.dlib_ref import DlibReference

        boxes += [tuple(float(v) for v in f.rect) for f in DlibReference().faces(img, upsample=1)]  # type: ignore[misc]
    except ImportError:
        pass
    return boxes  # type: ignore[return-value]


def patches(pipe: Pipeline, faces_dev: Path, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    photos = [p for p in sorted(faces_dev.glob("*.jpg")) if "partial" not in p.name]
    sources = []
    for p in photos:
        img = read_image(p)
        grown = []
        for x0, y0, x1, y1 in face_boxes(pipe, img):
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * max(x1 - x0, y1 - y0)
            grown.append((cx - half, cy - half * 1.3, cx + half, cy + half * 1.6))  # hair above, neck below
        sources.append((img, grown))
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < n and tries < 200 * n:
        tries += 1
        img, grown = sources[int(rng.integers(len(sources)))]
        h, w = img.shape[:2]
        side = int(rng.integers(64, max(65, min(h, w) // 2)))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        if any(x < gx1 and gx0 < x + side and y < gy1 and gy0 < y + side for gx0, gy0, gx1, gy1 in grown):
            continue
        out.append(img[y:y + side, x:x + side])
    return out


def false_faces(pipe: Pipeline, faces_dev: Path, n: int, seed: int) -> dict[str, Any]:
    ps = patches(pipe, faces_dev, n, seed)
    as_crop = [len(pipe.process(cv2.resize(p, (160, 160), interpolation=cv2.INTER_AREA))) for p in ps]
    full = [len(pipe.process(cv2.resize(p, (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR))) for p in ps]
    rng = np.random.default_rng(seed)
    blank = len(pipe.process(np.zeros((FRAME_H, FRAME_W, 3), np.uint8)))
    noise = len(pipe.process(rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)))
    return {"patches": len(ps), "as_crop_images_with_a_face": int(np.count_nonzero(as_crop)),
            "frame_images_with_a_face": int(np.count_nonzero(full)),
            "faces_total": int(sum(as_crop) + sum(full) + blank + noise), "blank": blank, "noise": noise}


# ---------------------------------------------------------------- run and report

def measure(pipe: Pipeline, samples: list[Sample], widths: list[int], seed: int) -> Table:
    bgs = backgrounds_cache
    rng = np.random.default_rng(seed)
    table = Table()
    for i, s in enumerate(samples):
        table.put(AS_CROP, s.kind, i, run_one(pipe, s.rgb, 0, 0, s.rgb.shape[1]))
        for w in widths:
            frame, (x, y) = framed(s.rgb, w, bgs[int(rng.integers(len(bgs)))], rng)
            table.put(str(w), s.kind, i, run_one(pipe, frame, x, y, w))
    return table


backgrounds_cache: list[np.ndarray] = []


def templates(samples: list[Sample], table: Table) -> dict[str, tuple[int, np.ndarray]]:
    """Each person's template: their first unmasked crop found at the reference width."""
    ref = table.rows.get(str(REFERENCE_WIDTH), {}).get("unmasked", {})
    out: dict[str, tuple[int, np.ndarray]] = {}
    for i, s in enumerate(samples):
        r = ref.get(i)
        if s.kind == "unmasked" and s.person not in out and r is not None and r.embedding is not None:
            out[s.person] = (i, r.embedding)
    return out


def report(samples: list[Sample], table: Table, widths: list[int], head: int) -> dict[str, Any]:
    """``head``: the embedder's primary_dim (pair_score)."""
    tmpl = templates(samples, table)

    def score(i: int, r: Result | None) -> float | None:
        t = tmpl.get(samples[i].person)
        if r is None or r.embedding is None or t is None or t[0] == i:
            return None
        return pair_score(t[1], r.embedding, head)

    rows = []
    ref_rows = table.rows.get(str(REFERENCE_WIDTH), {})
    for cond in [AS_CROP] + [str(w) for w in widths]:
        for kind in KINDS:
            res = table.rows.get(cond, {}).get(kind, {})
            if not res:
                continue
            found = [r for r in res.values() if r.found]
            scores = {i: score(i, r) for i, r in res.items()}
            drops = [ref - sc for i, sc in scores.items()
                     if sc is not None and (ref := score(i, ref_rows.get(kind, {}).get(i))) is not None]
            ms = [r.detect_ms for r in res.values()]
            valid = [v for v in scores.values() if v is not None]
            rows.append({
                "condition": cond, "kind": kind, "n": len(res),
                "found": round(len(found) / len(res), 4),
                "keypoints_sane": round(sum(r.sane for r in found) / max(1, len(found)), 4),
                # the classifier's call against the folder: a wrong call routes the face to the other rule
                "mask_status_right": round(sum(r.masked == (kind == "masked") for r in found) / max(1, len(found)), 4),
                "mean_score": round(float(np.mean(valid)), 4) if valid else None,
                "drop_mean": round(float(np.mean(drops)), 4) if drops else None,
                "drop_median": round(float(np.median(drops)), 4) if drops else None,
                "within_tolerance": round(float(np.mean(np.array(drops) <= TOLERANCE)), 4) if drops else None,
                "detect_ms": summary(ms), "passes_mean": round(float(np.mean([r.passes for r in res.values()])), 2),
            })
    return {"rows": rows, "templates": len(tmpl)}


def text(r: dict[str, Any]) -> str:
    lines = [f"detection on real-masked-dev ({r['samples']} crops; {r['detector']}), {r['machine']}",
             f"{'condition':<9}{'kind':<10}{'n':>5}{'found':>8}{'kp ok':>8}{'mask ok':>8}{'score':>8}{'drop':>8}"
             f"{'drop50':>8}{'<=0.05':>8}{'det p50':>9}{'p95':>7}{'passes':>8}"]
    for row in r["rows"]:
        def f(v: float | None, pct: bool = False) -> str:
            return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.3f}")
        lines.append(f"{row['condition']:<9}{row['kind']:<10}{row['n']:>5}{f(row['found'], True):>8}"
                     f"{f(row['keypoints_sane'], True):>8}{f(row.get('mask_status_right'), True):>8}"
                     f"{f(row['mean_score']):>8}{f(row['drop_mean']):>8}"
                     f"{f(row['drop_median']):>8}{f(row['within_tolerance'], True):>8}"
                     f"{row['detect_ms']['median_ms']:>9.2f}{row['detect_ms']['p95_ms']:>7.2f}{row['passes_mean']:>8.2f}")
    lines.append("mask ok: found faces whose mask status is the folder's; score: cosine vs the person's first "
                 "unmasked crop framed at 200 px; drop: score at 200 px minus score here, same photo")
    lines.append("portraits (faces-dev), score by face width: ")
    for name, per in r["portraits"].items():
        lines.append(f"  {name:<24}" + " ".join(f"{w}:{'-' if s is None else f'{s:.3f}'}" for w, s in per.items()))
    for kind, c in r.get("in_context", {}).items():
        lines.append(f"in context, {kind} ({c['used']} of {c['tried']} mask-set photos found at full size), found: "
                     + " ".join(f"{w}:{'-' if v is None else f'{100 * v:.1f}%'}" for w, v in c["found"].items()))
    ff = r["false_faces"]
    lines.append(f"false faces: {ff['as_crop_images_with_a_face']} of {ff['patches']} face-less 160x160 patches, "
                 f"{ff['frame_images_with_a_face']} of {ff['patches']} as 640x480 frames, blank {ff['blank']}, "
                 f"noise {ff['noise']}")
    return "\n".join(lines)


def plot(r: dict[str, Any], widths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for kind, colour in (("masked", "tab:red"), ("unmasked", "tab:blue")):
        rows = {row["condition"]: row for row in r["rows"] if row["kind"] == kind}
        xs = [w for w in widths if str(w) in rows]
        a1.plot(xs, [rows[str(w)]["found"] * 100 for w in xs], "o-", color=colour, label=f"real-masked-dev {kind}")
        a2.plot(xs, [rows[str(w)]["mean_score"] for w in xs], "o-", color=colour, label=f"real-masked-dev {kind}")
    for name, per in r["portraits"].items():
        pts = [(int(w), s) for w, s in per.items() if s is not None]
        a2.plot([p[0] for p in pts], [p[1] for p in pts], "s--", lw=1, label=name)
    a1.set_ylabel("faces found (%)")
    a2.set_ylabel("cosine score vs the enrolled template")
    for a in (a1, a2):
        a.set_xlabel("face width in a 640x480 frame (px)")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"detection_eval: {r['detector']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="48,64,80,100,130,160,200,250,300",
                    help="face widths in px of the framed runs (48,64,80,100,130,160,200,250,300); 200 is needed")
    ap.add_argument("--step", type=positive_int, default=1, help="every N-th crop (1: all 498)")
    ap.add_argument("--patches", type=positive_int, default=200, help="face-less patches for false faces (200)")
    ap.add_argument("--context", type=int, default=160, metavar="N",
                    help="mask-set photos per kind for the in-context rows (160; 0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--baseline", action="store_true", help="one short-range pass, no cascade")
    ap.add_argument("--refine-below", type=float, default=CascadeOptions.refine_below)
    ap.add_argument("--refine-context", type=float, default=CascadeOptions.refine_context)
    ap.add_argument("--close-up-pads", default=",".join(map(str, CascadeOptions.close_up_pads)))
    ap.add_argument("--close-up-min-score", type=float, default=CascadeOptions.close_up_min_score)
    ap.add_argument("--close-up-lift", type=float, default=CascadeOptions.close_up_lift,
                    help="the last close-up pass's raise of the frame (share of its side; 0: off)")
    ap.add_argument("--close-up-turns", default=",".join(map(str, CascadeOptions.close_up_turns)),
                    help="angles (degrees) of the last pass, the frame turned for a tilted head ('': off)")
    ap.add_argument("--no-small-faces", action="store_true", help="no full-range pass")
    ap.add_argument("--tile", type=float, default=0.5,
                    help="side of the tile pass's squares / the frame's shorter side (0: no tile pass)")
    ap.add_argument("--data", type=Path, default=DATA_ROOT)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", type=Path, metavar="PATH.png")
    args = ap.parse_args(argv)
    try:
        args.widths = sorted({int(w) for w in args.widths.split(",")})
        args.close_up_pads = tuple(float(p) for p in args.close_up_pads.split(",") if p)
        args.close_up_turns = tuple(float(a) for a in args.close_up_turns.split(",") if a)
    except ValueError:
        ap.error(f"--widths, --close-up-pads and --close-up-turns are comma-separated numbers, got "
                 f"{args.widths!r} / {args.close_up_pads!r} / {args.close_up_turns!r}")
    if REFERENCE_WIDTH not in args.widths or min(args.widths) < 16 or max(args.widths) > FRAME_H:
        ap.error(f"--widths must lie in 16..{FRAME_H} and include {REFERENCE_WIDTH}, got {args.widths}")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        ap.error(f"--plot writes a PNG, got {args.plot}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from scripts.bench import machine_info

    faces_dev = args.data / "faces-dev"
    if args.context < 0:
        raise UsageError(f"--context is a number of photos (0: none), got {args.context}")
    if args.context and not (args.data / MASK_SET).is_dir():
        raise UsageError(f"mask set not found: {args.data / MASK_SET} (or --context 0)")
    if not faces_dev.is_dir():
        raise UsageError(f"faces-dev not found: {faces_dev}")
    try:
        options = None if args.baseline else CascadeOptions(
            args.refine_below, args.refine_context, close_up_pads=args.close_up_pads,
            close_up_min_score=args.close_up_min_score, close_up_lift=args.close_up_lift,
            close_up_turns=args.close_up_turns, small_faces=not args.no_small_faces, tile=args.tile)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    pipe = ModelSet().pipeline(num_threads=args.threads, cascade=options)
    samples = crops(args.data, args.step)
    backgrounds_cache[:] = backgrounds(faces_dev)
    pipe.process(samples[0].rgb)  # warm-up
    pipe.times = StageTimes()
    table = measure(pipe, samples, args.widths, args.seed)
    out = report(samples, table, args.widths, pipe.embedder.primary_dim)
    m = machine_info()
    out |= {"samples": len(samples), "machine": f"{m['cpu']}, {m['logical_cores']} cores, load {m['load_avg_1_5_15']}",
            "detector": "one short-range pass (baseline)" if options is None else f"cascade {options}",
            "portraits": portraits(pipe, faces_dev, args.widths, args.seed),
            "false_faces": false_faces(pipe, faces_dev, args.patches, args.seed)}
    if args.context > 0:
        out["in_context"] = in_context(pipe, args.data, args.widths, args.context, args.seed)
    if args.plot is not None:
        plot(out, args.widths, args.plot)
        out["plot"] = str(args.plot)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        r = run(args)
        print(json.dumps(r, indent=2) if args.json else text(r))

    return run_main("detection_eval", body)


if __name__ == "__main__":
    sys.exit(main())
