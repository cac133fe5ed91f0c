#!/usr/bin/env python3
"""Speed, kernels, size and accuracy of the SFace builds (float32, float16, dynamic-range, dynamic on
XNNPACK, full int8), each against the float32 build measured in the same process.

    python scripts/embedder_variants.py [--work DIR] [--runs 200] [--threads 1,2] [--json]

--work holds sface_<variant>.tflite (scripts/modelbuild/sface.py VARIANTS); the files missing there
are built first from the ONNX source exactly as scripts/build_models.py builds them (needs
pip install -e '.[build]', a few minutes). dlib's embedder of the model set is timed beside them.

Chips: every photo of <data>/real-masked-dev/*/{masked,unmasked} and <data>/faces-dev, through the
shipped pipeline (BlazeFace -> mask status -> alignment; a masked face gets its eyes-only chip, as at
the door); a tight crop in which no face is found is tried again centred in a 640x480 grey frame.
Accuracy: cosine of each build's embedding to the float32 one over all chips; rank-1 on
real-masked-dev with one unmasked photo of each person enrolled and the other photos as probes
(masked and unmasked apart), each unmasked photo enrolled in turn and the rounds summed.
Latency: the builds take turns chip by chip (a load change hits them all alike); median and p95
wall time per call at each thread count, and the CPU time of the calling thread with 1 thread
(XNNPACK runs there), which a busy machine inflates far less than wall time.

--also NAME=PATH adds another SFace build (e.g. an earlier shipped one, from git) to the table.

Exit codes: 0 done, 2 bad arguments or missing data/models, 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.imageio import read_image  # noqa: E402
from edge_app.models import ModelSet  # noqa: E402
from edge_app.vision.embedder import FaceEmbedder  # noqa: E402
from edge_app.vision.pipeline import Pipeline  # noqa: E402
from edge_app.vision.runtime import TFLiteModel  # noqa: E402
from scripts.bench import machine_info, positive_int, summary  # noqa: E402
from scripts.common import DATA_ROOT, UsageError, image_files, run_main  # noqa: E402
from scripts.modelbuild.sface import SHIPPED, VARIANTS  # noqa: E402

REFERENCE = "float32"
FRAME = (480, 640)
GREY = 114  # a neutral border; black makes some masked chins vanish into it


@dataclass
class Chip:
    name: str  # "<set>/<person>/<kind>/<file>"
    person: str | None  # real-masked-dev identity, None for faces-dev
    kind: str  # "masked", "unmasked" or "faces-dev"
    chip: np.ndarray
    framed: bool  # found only once placed in a 640x480 frame


@dataclass
class Variant:
    name: str
    path: Path
    models: dict[int, TFLiteModel] = field(default_factory=dict)  # threads -> interpreter
    wall: dict[int, list[float]] = field(default_factory=dict)
    cpu_1: list[float] = field(default_factory=list)


def in_frame(crop: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    if h > FRAME[0] or w > FRAME[1]:
        return crop
    canvas = np.full((*FRAME, 3), GREY, np.uint8)
    y, x = (FRAME[0] - h) // 2, (FRAME[1] - w) // 2
    canvas[y:y + h, x:x + w] = crop
    return canvas


def photos(data: Path) -> list[tuple[Path, str | None, str]]:
    rmd, dev = data / "real-masked-dev", data / "faces-dev"
    for folder in (rmd, dev):
        if not folder.is_dir():
            raise UsageError(f"data folder not found: {folder} (set --data or $EDGE_APP_DATA)")
    out: list[tuple[Path, str | None, str]] = []
    for person in sorted(p for p in rmd.iterdir() if p.is_dir()):
        for kind in ("unmasked", "masked"):
            if (person / kind).is_dir():
                out += [(f, person.name, kind) for f in image_files(person / kind)]
    out += [(f, None, "faces-dev") for f in image_files(dev)]
    if not out:
        raise UsageError(f"no photos in {rmd}/*/{{masked,unmasked}} or {dev}")
    return out


def collect_chips(pipe: Pipeline, data: Path) -> tuple[list[Chip], list[str]]:
    chips, missed = [], []
    for path, person, kind in photos(data):
        name = str(path.relative_to(data))
        rgb = read_image(path)
        faces, framed = pipe.process(rgb, max_faces=1), False
        if not faces:
            faces, framed = pipe.process(in_frame(rgb), max_faces=1), True
        if not faces:
            missed.append(name)
            continue
        chips.append(Chip(name, person, kind, faces[0].chip, framed))
    return chips, missed


def ensure_variants(work: Path, data: Path, models: Path) -> dict[str, Path]:
    paths = {name: work / f"sface_{name}.tflite" for name in VARIANTS}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        try:
            import tensorflow  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"{work} lacks {', '.join(paths[n].name for n in missing)} and building them needs "
                             f"TensorFlow: pip install -e '.[build]' ({exc})") from exc
        from edge_app.vision.detector import FaceDetector
        from scripts.build_models import build_files
        from scripts.modelbuild import sface

        work.mkdir(parents=True, exist_ok=True)
        detector = FaceDetector(TFLiteModel(models / "face_detector.tflite"))
        with tempfile.TemporaryDirectory() as tmp:
            built = sface.prepare(detector, build_files(data, 3), Path(tmp)).variants
            for name in VARIANTS:
                built[name].replace(paths[name])
    return paths


def time_all(variants: list[Variant], chips: list[np.ndarray], threads: list[int], runs: int, warmup: int) -> None:
    for nt in threads:
        embedders = [(v, FaceEmbedder(v.models[nt])) for v in variants]
        for v, e in embedders:
            v.wall[nt] = []
            for i in range(warmup):
                e.embed(chips[i % len(chips)])
        for i in range(runs):
            chip = chips[i % len(chips)]
            for v, e in embedders:  # round robin: a burst of load falls on every build alike
                t0, c0 = time.perf_counter(), time.thread_time()
                e.embed(chip)
                c1, t1 = time.thread_time(), time.perf_counter()
                v.wall[nt].append((t1 - t0) * 1e3)
                if nt == 1:
                    v.cpu_1.append((c1 - c0) * 1e3)


def rank1(emb: np.ndarray, chips: list[Chip]) -> dict[str, dict[str, Any]]:
    """real-masked-dev rank-1, one enrolment photo a person: each unmasked photo is enrolled in turn
    (round r enrols the r-th of each person) and all the person's other photos probe; the hits of all
    rounds are summed, which steadies a rate that one choice of photo would leave to chance."""
    unmasked: dict[str, list[int]] = {}
    for i, c in enumerate(chips):
        if c.kind == "unmasked" and c.person is not None:
            unmasked.setdefault(c.person, []).append(i)
    rounds = max((len(v) for v in unmasked.values()), default=0)
    hits = {"masked": 0, "unmasked": 0}
    probes = {"masked": 0, "unmasked": 0}
    for r in range(rounds):
        gallery = {p: v[r] for p, v in unmasked.items() if len(v) > r}
        names = sorted(gallery)
        g = emb[[gallery[n] for n in names]]
        for kind in hits:
            idx = [i for i, c in enumerate(chips)
                   if c.kind == kind and c.person in gallery and i != gallery[c.person]]
            best = np.argmax(emb[idx] @ g.T, axis=1)
            hits[kind] += sum(names[b] == chips[i].person for b, i in zip(best, idx, strict=True))
            probes[kind] += len(idx)
    out: dict[str, dict[str, Any]] = {k: {"rank1": round(hits[k] / max(1, probes[k]), 4), "hits": int(hits[k]),
                                          "probes": probes[k]} for k in hits}
    out["gallery"] = {"people": len(unmasked), "rounds": rounds}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    model_set = ModelSet(args.models)
    pipe = model_set.pipeline(num_threads=2)
    machine = machine_info()
    paths = ensure_variants(args.work, args.data, model_set.dir)
    chips, missed = collect_chips(pipe, args.data)
    if len(chips) < 2:
        raise RuntimeError(f"faces found in {len(chips)} photos only")
    variants = [Variant(n, p) for n, p in paths.items()] + [Variant(n, p) for n, p in args.also]
    variants.append(Variant("dlib (int8)", model_set.info("face_embedder_dlib").path))
    for v in variants:
        v.models = {nt: TFLiteModel(v.path, num_threads=nt) for nt in args.threads}
    sface_variants = variants[:-1]
    embs = {v.name: np.array([FaceEmbedder(v.models[args.threads[0]]).embed(c.chip) for c in chips])
            for v in sface_variants}
    dlib = variants[-1]
    dlib_chips = [np.asarray(_resize(c.chip, FaceEmbedder(dlib.models[args.threads[0]]).chip_size)) for c in chips]
    time_all(sface_variants, [c.chip for c in chips], args.threads, args.runs, args.warmup)
    time_all([dlib], dlib_chips, args.threads, args.runs, args.warmup)
    ref = next(v for v in variants if v.name == REFERENCE)
    rows = []
    for v in variants:
        k = v.models[args.threads[0]].kernels()
        row: dict[str, Any] = {
            "variant": v.name, "file": str(v.path), "bytes": v.path.stat().st_size,
            "shipped": v.name == SHIPPED,
            "precision": VARIANTS.get(v.name) or ("dlib ResNet-29, full int8" if v is dlib else "given with --also"),
            "kernels": str(k), "ops": k.ops, "delegated": k.delegated, "partitions": k.partitions,
            "on_builtin_kernels": k.on_cpu,
            "latency": {str(nt): summary(v.wall[nt]) for nt in args.threads},
            "speedup_vs_float32": {str(nt): round(float(np.median(ref.wall[nt]) / np.median(v.wall[nt])), 2)
                                   for nt in args.threads},
        }
        if v.cpu_1:
            row["cpu_ms_1_thread"] = summary(v.cpu_1)
            row["cpu_speedup_vs_float32"] = round(float(np.median(ref.cpu_1) / np.median(v.cpu_1)), 2)
        if v.name in embs:
            cos = (embs[v.name] * embs[REFERENCE]).sum(1)
            row["cosine_to_float32"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5),
                                        "p1": round(float(np.percentile(cos, 1)), 5), "n": len(cos)}
            row["real_masked_dev"] = rank1(embs[v.name], chips)
        rows.append(row)
    kinds = {k: sum(c.kind == k for c in chips) for k in ("masked", "unmasked", "faces-dev")}
    return {"machine": machine, "command": " ".join(["scripts/embedder_variants.py", *sys.argv[1:]]),
            "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
            "chips": {"n": len(chips), **kinds, "found_only_in_frame": sum(c.framed for c in chips),
                      "photos_without_face": missed},
            "reference": REFERENCE, "shipped": SHIPPED, "variants": rows}


def _resize(chip: np.ndarray, size: int) -> np.ndarray:
    import cv2

    # dlib's chip has another geometry; a resized SFace chip costs the same to run, which is all that is timed.
    return cv2.resize(chip, (size, size), interpolation=cv2.INTER_LINEAR)


def text_report(r: dict[str, Any]) -> str:
    m, ch = r["machine"], r["chips"]
    load = " ".join(f"{x:g}" for x in m["load_avg_1_5_15"]) if m["load_avg_1_5_15"] else "n/a"
    lines = [
        f"SFace builds, {m['date']}: {m['cpu']} ({m['machine']}), {m['logical_cores']} cores, load avg {load}, "
        f"{m['runtime']} {m['runtime_version'] or ''}",
        f"chips: {ch['n']} ({ch['masked']} real masked, {ch['unmasked']} unmasked of real-masked-dev, "
        f"{ch['faces-dev']} faces-dev; {ch['found_only_in_frame']} found only inside a frame, "
        f"{len(ch['photos_without_face'])} photos without a face); {r['runs']} timed calls a build and thread count",
        "",
    ]
    th = [str(t) for t in r["threads"]]
    head = f"{'build':<18}{'MB':>6}  " + "".join(f"{t + ' thr p50/p95 ms':>20}{'x f32':>7}" for t in th)
    head += f"{'CPU ms 1 thr':>13}{'x f32':>7}{'cos f32 mean/min':>19}{'rank-1 masked':>15}{'unmasked':>10}"
    lines.append(head)
    for v in r["variants"]:
        line = f"{v['variant'] + (' *' if v['shipped'] else ''):<18}{v['bytes'] / 1e6:>6.1f}  "
        for t in th:
            lat = v["latency"][t]
            line += f"{lat['median_ms']:>11.2f} /{lat['p95_ms']:>6.2f}{v['speedup_vs_float32'][t]:>7.2f}"
        cpu = v.get("cpu_ms_1_thread")
        line += f"{cpu['median_ms']:>13.2f}{v['cpu_speedup_vs_float32']:>7.2f}" if cpu else f"{'-':>13}{'-':>7}"
        if "cosine_to_float32" in v:
            c, rm = v["cosine_to_float32"], v["real_masked_dev"]
            line += f"{c['mean']:>11.4f}/{c['min']:.4f}{rm['masked']['rank1'] * 100:>14.1f}%"
            line += f"{rm['unmasked']['rank1'] * 100:>9.1f}%"
        else:
            line += f"{'(another model)':>19}"
        lines.append(line)
    lines += ["", "kernels (ops on XNNPACK / all ops; the rest run on TFLite's built-in kernels):"]
    lines += [f"  {v['variant']:<18}{v['kernels']}, {v['partitions']} partition(s)" for v in r["variants"]]
    rm = r["variants"][0]["real_masked_dev"]
    lines.append(f"rank-1: {rm['gallery']['people']} people enrolled from one unmasked photo, each photo in turn "
                 f"({rm['gallery']['rounds']} rounds): {rm['masked']['probes']} masked, {rm['unmasked']['probes']} "
                 "unmasked probes in all. * shipped")
    return "\n".join(lines)


def thread_list(text: str) -> list[int]:
    try:
        out = [positive_int(t) for t in text.split(",") if t.strip()]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"--threads takes counts like 1,2: {exc}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"--threads takes counts like 1,2, got {text!r}")
    return out


def named_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"--also takes NAME=PATH, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"--also {name}: model file not found: {path}")
    return name.strip(), Path(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edge-app-sface-variants",
                    help="folder of sface_<variant>.tflite, built there if missing (<tmp>/edge-app-sface-variants)")
    ap.add_argument("--data", type=Path, default=DATA_ROOT,
                    help="shared data folder (default $EDGE_APP_DATA or <repo>/../shared/data)")
    ap.add_argument("--models", type=Path, help="model set for detection, mask status and dlib (default: bundled)")
    ap.add_argument("--runs", type=positive_int, default=200, metavar="N", help="timed calls a build and thread count")
    ap.add_argument("--warmup", type=positive_int, default=10, metavar="N", help="untimed calls first (10)")
    ap.add_argument("--threads", type=thread_list, default=[1, 2], metavar="N,...", help="thread counts (1,2)")
    ap.add_argument("--also", type=named_model, action="append", default=[], metavar="NAME=PATH",
                    help="another SFace .tflite to measure beside them, e.g. an earlier shipped build (repeatable)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.models is not None and not args.models.is_dir():
        print(f"embedder_variants: error: --models folder not found: {args.models}", file=sys.stderr)
        return 2

    def body() -> None:
        report = run(args)
        print(json.dumps(report, indent=2) if args.json else text_report(report))

    return run_main("embedder_variants", body)


if __name__ == "__main__":
    sys.exit(main())
