"""Distil a masked-face STUDENT of SFace: models_tflite/face_embedder_masked.tflite.

The student (a copy of SFace) learns to give a synthetic-masked, degraded face the embedding the
frozen teacher (SFace) gives the same face bare, loss 1 - cos. It would embed only faces the mask
classifier calls masked, templates staying the teacher's. It LOST to the teacher on real masks, so
none is shipped and the kiosk's pipeline does not load one; --export writes it beside a copy of the
models for evaluation in TFLite. Recipe, data sources and measurements: docs/masked_kd.md.

Needs torch (CPU), onnx2torch, onnxruntime and, for --export, the build extra (TensorFlow, onnx2tf):
    .venv/bin/pip install -e '.[build]' 'torch==2.13.0' onnx2torch
    nice -n 10 .venv/bin/python -m scripts.train_masked_kd --work /tmp/kd --export models_tflite
Stages are cached in --work (chips, teacher targets, the real-masked-dev chips, the student).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.models import ModelSet
from edge_app.vision.embedder import FaceEmbedder
from scripts.facedata import DATA_ROOT
from scripts.masked_kd import data, realdev, teacher
from scripts.masked_kd.export import ENTRY
from scripts.modelbuild.sface import fetch_onnx

log = logging.getLogger("train_masked_kd")
SEED = 11
NCE_SAME = 0.4


def set_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)


def prepare(work: Path, ms: ModelSet, extra: list[Path], variants: int,
            black_border: bool = False) -> tuple[data.ChipData, realdev.DevChips]:
    pipe = ms.pipeline(mask=False)
    chips_path = work / f"chips_v{variants}.npz"
    if not chips_path.exists():
        files = data.training_files(DATA_ROOT, extra)
        log.info("%d training photos", len(files))
        data.make_chips(pipe, files, variants, SEED).save(chips_path)
    dev_path = work / ("dev_black.npz" if black_border else "dev.npz")
    if not dev_path.exists():
        d = realdev.dev_chips(pipe, DATA_ROOT / "real-masked-dev", black_border)
        np.savez(dev_path, names=d.names, chips=d.chips, pid=d.pid, masked=d.masked, index=d.index,
                 missed=json.dumps(d.missed), files=d.files)
    z = np.load(dev_path)
    dev = realdev.DevChips([str(s) for s in z["names"]], z["chips"], z["pid"], z["masked"], z["index"],
                           json.loads(str(z["missed"])), [str(s) for s in z["files"]])
    return data.ChipData.load(chips_path), dev


def targets(work: Path, model: Any, chips: data.ChipData) -> tuple[np.ndarray, np.ndarray]:
    """Teacher embeddings of each plain chip and of its mirror image (for flipped student inputs)."""
    path = work / f"targets_{len(chips.plain)}.npz"
    if not path.exists():
        np.savez(path, plain=teacher.embed(model, chips.plain), flip=teacher.embed(model, chips.plain[:, :, ::-1]))
    z = np.load(path)
    return z["plain"], z["flip"]


def train(t_model: Any, chips: data.ChipData, tgt: tuple[np.ndarray, np.ndarray], dev: realdev.DevChips,
          args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]]]:
    import torch

    set_seed(SEED)
    student = copy.deepcopy(t_model).eval()  # eval: BatchNorm keeps the teacher's statistics
    params = list(student.parameters())
    cut = int(len(params) * args.freeze)
    for i, p in enumerate(params):
        p.requires_grad = i >= cut
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=args.lr)
    keep = np.ones(len(chips.student), bool) if args.plain_share else chips.masked
    idx_all = np.flatnonzero(keep)
    rng = np.random.default_rng(SEED)
    t_plain, t_flip = torch.from_numpy(tgt[0]), torch.from_numpy(tgt[1])
    history: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(idx_all)
        losses = []
        for b in range(0, len(order) - args.batch + 1, args.batch):
            sel = order[b:b + args.batch]
            x = chips.student[sel].copy()
            if args.tight > 0:
                tighten(x, rng, args.tight)
            flip = rng.random(len(sel)) < 0.5
            x[flip] = x[flip][:, :, ::-1]
            photo = torch.from_numpy(chips.photo[sel])
            target = torch.where(torch.from_numpy(flip)[:, None], t_flip[photo], t_plain[photo])
            out = torch.nn.functional.normalize(student(teacher.to_tensor(x)), dim=1)
            loss = (1 - (out * target).sum(1)).mean()
            if args.nce > 0:
                # Identification against every training face, not closeness alone: the student's masked
                # embedding must be nearer its own bare target than any other face's. Targets the teacher
                # finds alike (cosine > NCE_SAME: the same face mirrored, likely the same person) are
                # left out of the negatives: the photos carry no identity labels.
                pos = (out * target).sum(1) / args.nce_temperature
                neg = out @ t_plain.T / args.nce_temperature
                neg = neg.masked_fill(target @ t_plain.T > NCE_SAME, float("-inf"))
                loss = loss + args.nce * (torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos).mean()
            if args.keep > 0:
                # The student's clean bare chips held at the teacher's embedding: it must not drift from the
                # space the bare templates live in.
                ph = np.unique(chips.photo[sel])[: args.batch // 2]
                kept = torch.nn.functional.normalize(student(teacher.to_tensor(chips.plain[ph])), dim=1)
                loss = loss + args.keep * (1 - (kept * t_plain[torch.from_numpy(ph)]).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if args.validate_every and len(losses) % args.validate_every == 0:
                # The trajectory within an epoch: with tens of thousands of chips an epoch is long.
                history.append({"epoch": epoch, "batches": len(losses), "loss": round(float(np.mean(
                    losses[-args.validate_every:])), 4), "minutes": round((time.monotonic() - t0) / 60, 1),
                    **validate(t_model, student, dev)})
                log.info("%s", history[-1])
                torch.save(student.state_dict(), args.work / f"{args.tag}_e{epoch}_b{len(losses)}.pt")
            if time.monotonic() - t0 > args.minutes * 60:
                break
        figures = validate(t_model, student, dev)
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "batches": len(losses),
                        "minutes": round((time.monotonic() - t0) / 60, 1), **figures})
        log.info("%s", history[-1])
        if time.monotonic() - t0 > args.minutes * 60:
            log.info("time budget of %s min reached", args.minutes)
            break
    return student, history


def tighten(x: np.ndarray, rng: np.random.Generator, p: float) -> None:
    """In place, each chip with probability p: black beyond a random box, as the kiosk's chip of a tight face
    crop (the judged photos are 160 px crops ending at the cheeks; the warp fills the rest with black)."""
    s = x.shape[1]
    for i in np.flatnonzero(rng.random(len(x)) < p):
        left, right = rng.integers(0, int(0.22 * s)), rng.integers(int(0.78 * s), s + 1)
        top, bottom = rng.integers(0, int(0.09 * s)), rng.integers(int(0.82 * s), s + 1)
        x[i, :top] = 0
        x[i, bottom:] = 0
        x[i, :, :left] = 0
        x[i, :, right:] = 0


def validate(t_model: Any, student: Any, dev: realdev.DevChips) -> dict[str, Any]:
    rep = realdev.evaluate(dev, lambda c: teacher.embed(t_model, c), {"student": lambda c: teacher.embed(student, c)})
    out = {}
    for k in ("K=1", "K=3"):
        for kind in ("masked", "unmasked"):
            r = rep["student"][k][kind]
            out[f"{kind} {k} rank1"] = r["rank1"]
            out[f"{kind} {k} tpir"] = r["open_set_fpir_1pct"].get("tpir")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="cache folder (chips, targets, student)")
    ap.add_argument("--extra", type=Path, action="append", default=[], help="more unlabelled face photos")
    ap.add_argument("--variants", type=int, default=6, help="synthetic-masked inputs per photo")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=15.0, help="training time budget")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--freeze", type=float, default=0.3, help="share of the first parameter tensors kept frozen")
    ap.add_argument("--plain-share", action="store_true", help="also train on the degraded bare faces")
    ap.add_argument("--keep", type=float, default=0.0,
                    help="weight of a loss holding the student's clean bare chips at the teacher's embedding")
    ap.add_argument("--head-rows", type=int, nargs="*", default=[],
                    help="with --baseline: also the teacher with its spatial FC restricted to the top R of 7 rows")
    ap.add_argument("--nce", type=float, default=0.0,
                    help="weight of a contrastive loss: the student's masked chip against every face's bare target")
    ap.add_argument("--nce-temperature", type=float, default=0.05)
    ap.add_argument("--tight", type=float, default=0.0, metavar="P",
                    help="share of student chips given black beyond a random box (a tight crop's chip)")
    ap.add_argument("--dev-black", action="store_true",
                    help="real-masked-dev chips with black beyond the crop, as the kiosk cuts them")
    ap.add_argument("--validate-every", type=int, default=0, metavar="B",
                    help="also check on real-masked-dev (and save the student) every B batches")
    ap.add_argument("--write-cohort", type=Path, metavar="PATH.npz",
                    help="only write a cohort of background faces' embeddings (for evaluate.py --tnorm)")
    ap.add_argument("--cohort-size", type=int, default=3000)
    ap.add_argument("--tag", default="student")
    ap.add_argument("--export", type=Path, help="write face_embedder_masked.tflite + manifest entry here")
    ap.add_argument("--baseline", action="store_true", help="only report the teacher on real-masked-dev")
    ap.add_argument("--reuse", action="store_true", help="load <work>/<tag>.pt instead of training")
    ap.add_argument("--ship-precision", choices=("float32", "fp16"), default="float32")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    set_seed(SEED)
    onnx_path = args.work / "face_recognition_sface_2021dec.onnx"
    if not onnx_path.exists():
        fetch_onnx(args.work)
    t_model = teacher.load(onnx_path)
    ms = ModelSet()
    chips, dev = prepare(args.work, ms, args.extra, args.variants, args.dev_black)
    log.info("teacher vs onnxruntime, lowest cosine on 16 chips: %.6f",
             teacher.check_against_onnxruntime(t_model, onnx_path, chips.plain[:16]))
    log.info("%d photos, %d student chips (%d masked); real-masked-dev missed %s", len(chips.plain),
             len(chips.student), int(chips.masked.sum()), dev.missed)
    if args.write_cohort is not None:
        write_cohort(args.write_cohort, chips, ms, args.cohort_size, args.extra)
        return 0
    if args.baseline:
        def embed_t(c: np.ndarray) -> np.ndarray:
            return teacher.embed(t_model, c)

        heads: dict[str, realdev.Embed] = {"teacher": embed_t}
        for r in args.head_rows:
            heads[f"teacher, top {r} rows"] = teacher.upper_head(t_model, r)
        rep = realdev.evaluate(dev, embed_t, heads)
        print(realdev.table(rep, list(heads)))
        for r in args.head_rows:  # the same head on both sides: templates too
            up = teacher.upper_head(t_model, r)
            print(realdev.table(realdev.evaluate(dev, up, {f"top {r} rows, templates too": up}),
                                [f"top {r} rows, templates too"]))
        return 0
    out = args.work / f"{args.tag}.pt"
    if args.reuse and out.exists():
        student = copy.deepcopy(t_model)
        student.load_state_dict(torch.load(out))
        student.eval()
    else:
        student, history = train(t_model, chips, targets(args.work, t_model, chips), dev, args)
        torch.save(student.state_dict(), out)
        (args.work / f"{args.tag}.json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "history": history}, indent=1))
    syn = synthetic(args.work, ms)
    models = {"teacher": lambda c: teacher.embed(t_model, c), "student": lambda c: teacher.embed(student, c)}
    rep = realdev.evaluate(dev, models["teacher"], models, syn=syn, syn_models=models)
    print(realdev.table(rep, [m for m in rep if m not in ("missed_faces", "probes")]))
    (args.work / f"{args.tag}_realdev.json").write_text(json.dumps(rep, indent=1))
    if args.export:
        from scripts.masked_kd.export import export

        entry = export(student, args, chips, sources_digest(chips))
        shipped = ModelSet(args.export)
        tt = FaceEmbedder(shipped.load("face_embedder"))
        st = FaceEmbedder(shipped.load(ENTRY))
        tfl = {"teacher (shipped tflite)": lambda c: np.array([tt.embed(x) for x in c]),
               "student (tflite)": lambda c: np.array([st.embed(x) for x in c])}
        rep = realdev.evaluate(dev, tfl["teacher (shipped tflite)"], tfl, syn=syn, syn_models=tfl)
        names = [m for m in rep if m not in ("missed_faces", "probes")]
        print(realdev.table(rep, names))
        (args.work / f"{args.tag}_realdev_tflite.json").write_text(json.dumps(rep, indent=1))
        log.info("shipped %s: %s", ENTRY, {k: entry[k] for k in ("sha256", "bytes", "builds")})
    return 0


def synthetic(work: Path, ms: ModelSet) -> realdev.SynChips:
    path = work / "dev_syn.npz"
    if not path.exists():
        pipe = ms.pipeline(mask=False)
        names = sorted(p.name for p in (DATA_ROOT / "real-masked-dev").iterdir() if p.is_dir())
        s = realdev.synthetic_chips(pipe, DATA_ROOT / "real-masked-dev", names)
        np.savez(path, chips=s.chips, pid=s.pid, index=s.index)
    z = np.load(path)
    return realdev.SynChips(z["chips"], z["pid"], z["index"])


def write_cohort(path: Path, chips: data.ChipData, ms: ModelSet, n: int, extra: list[Path]) -> None:
    """Background faces for `scripts/evaluate.py --tnorm`: the shipped embedder's embeddings of n random faces of
    the --extra folders, their bare chips ('plain') and n of their drawn-mask chips ('masked'). Never the other
    training faces: masks-chandrikadeb7's photos fill the open-set protocol's gallery. Embeddings only."""
    emb = FaceEmbedder(ms.load(ms.embedder_parts[0], 2))  # the embedder whose sha the file records
    rng = np.random.default_rng(SEED)
    own = np.flatnonzero(np.isin(chips.sources, [p.name for p in extra]))
    if not own.size:
        raise SystemExit("--write-cohort takes its faces from the --extra folders: give them (as for the chips)")
    pick = rng.choice(own, min(n, own.size), replace=False)
    masked = np.flatnonzero(chips.masked & np.isin(chips.photo, pick))
    mpick = rng.choice(masked, min(n, len(masked)), replace=False)
    np.savez(path, plain=np.array([emb.embed(c) for c in chips.plain[pick]], np.float32),
             masked=np.array([emb.embed(c) for c in chips.student[mpick]], np.float32),
             embedder_sha256=ms.embedder_sha)
    log.info("cohort of %d bare and %d masked faces written to %s", len(pick), len(mpick), path)


def sources_digest(chips: data.ChipData) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in chips.sources:
        counts[s] = counts.get(s, 0) + 1
    return counts


if __name__ == "__main__":
    raise SystemExit(main())
