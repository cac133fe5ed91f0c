"""`scripts/evaluate.py --openset DIR`: run the open-set protocol, print the table, plot, calibrate."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from scripts import openset
from scripts import openset_report as rep
from scripts.common import DATA_ROOT, UsageError

FILLER_RE = re.compile(r"^\d+\.(jpg|jpeg|png)$", re.IGNORECASE)  # the mask set's web photos of other people


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("open set (--openset DIR: DIR/<person>/{masked,unmasked}/*; enrolled people and "
                              "strangers split by a hash of the name; walk-ups voted as the door votes)")
    g.add_argument("--openset", type=Path, metavar="DIR", help="run the open-set protocol on DIR")
    g.add_argument("--gallery-size", type=int, default=100, metavar="N",
                   help="fill the gallery with other people's photos up to N persons (default 100; 0: no filler)")
    g.add_argument("--filler", type=Path, default=None, metavar="DIR",
                   help="photos of other people for the filler, each a person (default: the numbered web photos "
                        "of $EDGE_APP_DATA/masks-chandrikadeb7/dataset/without_mask)")
    g.add_argument("--splits", type=int, default=1, metavar="S",
                   help="report over S enrolled/stranger splits (salts 0..S-1) pooled; --calibrate uses them too")
    g.add_argument("--target-fpir", type=float, default=0.001, help="stranger walk-ups granted, at most (calibration)")
    g.add_argument("--target-frame-fpir", type=float, default=0.005,
                   help="stranger photos (single frames) accepted, at most (calibration)")
    g.add_argument("--cache", type=Path, default=Path("out/cache"), help="embedding cache folder ('' : none)")
    g.add_argument("--det", type=Path, metavar="PATH.png", help="write the DET plot")
    g.add_argument("--enrol-masked", type=int, default=0, metavar="N",
                   help="also enrol each enrolled person's first N masked photos (a site that enrols people with "
                        "their mask on; they are then not probes); the shipped thresholds, not with --calibrate")
    g.add_argument("--tnorm", type=Path, metavar="COHORT.npz",
                   help="experiment: template-side score normalisation against a cohort of background faces' "
                        "embeddings (arrays 'plain' and 'masked', the shipped embedder's); not in the kiosk")
    g.add_argument("--tnorm-top", type=int, default=300, metavar="N", help="cohort faces most alike a template")
    g.add_argument("--tnorm-masked-only", action="store_true", help="normalise masked probes' scores only")
    g.add_argument("--masked-gallery", choices=("plain", "plain+masked"), default=None,
                   help="templates masked probes meet (default: the manifest's; with --calibrate it is written)")


def _filler_files(args: argparse.Namespace, n: int) -> list[Path]:
    if n <= 0:
        return []
    folder = args.filler or (DATA_ROOT / "masks-chandrikadeb7" / "dataset" / "without_mask")
    if not folder.is_dir():
        raise UsageError(f"filler folder not found: {folder} (--filler DIR or --gallery-size 0)")
    files = sorted((f for f in folder.iterdir() if f.is_file() and (args.filler or FILLER_RE.match(f.name))),
                   key=lambda f: openset._h(f"filler:{f.name}"))
    return files[: int(n * 1.3) + 5]  # some photos get refused at enrolment: keep spares


def _cohort(args: argparse.Namespace, embedder_sha: str, dim: int) -> rep.Cohort:
    """--tnorm's file, checked before any photo is embedded: every refusal names the file and what is wrong."""
    path = args.tnorm
    try:
        z = np.load(path)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz archive")
        with z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"--tnorm {path}: not a readable .npz file ({exc})") from None
    for key in ("plain", "masked"):
        a = arrays.get(key)
        if a is None or a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != dim or not np.isfinite(a).all():
            got = "missing" if a is None else f"shape {a.shape}" + ("" if np.isfinite(a).all() else ", not finite")
            raise UsageError(f"--tnorm {path}: array {key!r} must be (n, {dim}) finite embeddings, got {got}")
    sha = str(arrays["embedder_sha256"]) if "embedder_sha256" in arrays else None
    if sha is not None and sha != embedder_sha:
        raise UsageError(f"--tnorm {path}: made with embedder {sha[:12]}..., this model set's is "
                         f"{embedder_sha[:12]}...")
    if not 1 <= args.tnorm_top <= min(len(arrays["plain"]), len(arrays["masked"])):
        raise UsageError(f"--tnorm-top must be in 1..{min(len(arrays['plain']), len(arrays['masked']))} "
                         f"(the cohort's size), got {args.tnorm_top}")
    return rep.Cohort(arrays["plain"], arrays["masked"], args.tnorm_top, args.tnorm_masked_only)


def run_openset(args: argparse.Namespace, counts: list[int]) -> tuple[dict[str, Any], str]:
    from tqdm import tqdm

    from edge_app.models import MANIFEST, ModelSet

    if not args.openset.is_dir() and not args.openset.is_absolute() and (DATA_ROOT / args.openset).is_dir():
        args.openset = DATA_ROOT / args.openset  # data sets are named relative to $EDGE_APP_DATA
    try:
        people = openset.load_people(args.openset)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if args.splits < 1 or not 0 < args.target_fpir < 1 or not 0 < args.target_frame_fpir < 1:
        raise UsageError("--splits must be >= 1 and the --target-* rates in (0, 1)")
    if not 0 <= args.enrol_masked <= 10 or (args.enrol_masked and args.calibrate):
        raise UsageError(f"--enrol-masked must be in 0..10 and is not for --calibrate (the shipped thresholds are "
                         f"calibrated on bare enrolment photos), got {args.enrol_masked}")
    enrolled_max = max(sum(openset.is_enrolled(p.name, s) for p in people) for s in range(args.splits))
    fillers = _filler_files(args, args.gallery_size - enrolled_max + 10 if args.gallery_size else 0)
    ms = ModelSet(args.models, embedder=args.embedder)
    pipe = ms.pipeline(detector=args.detector, num_threads=args.threads)
    shipped = ms.thresholds()
    if args.tnorm is not None and pipe.embedder.primary_dim != pipe.embedder.dim:
        raise UsageError(f"--tnorm is not defined for the fused embedder {args.embedder}")
    cohort = None if args.tnorm is None else _cohort(args, ms.embedder_sha, pipe.embedder.dim)
    files = [f for p in people for f in p.unmasked + p.masked] + fillers
    probe_files = {f for p in people for f in p.unmasked + p.masked}
    enrol_files = {f for p in people for f in p.unmasked[: max(counts)] + p.masked[: args.enrol_masked]}
    enrol_files |= set(fillers)

    def progress(it: Any, desc: str, total: int) -> Any:
        return tqdm(it, desc=desc, total=total, unit="photo", file=sys.stderr, leave=False,
                    disable=args.no_progress or not sys.stderr.isatty())

    cache = None if str(args.cache) in ("", ".") else args.cache
    # Any change to the models, the vision code (detection passes, alignment, ...) or the enrolment's templates
    # (edge_app/enrol.py) is a new cache entry.
    code = Path(openset.__file__).parents[1] / "edge_app"
    vision = [*sorted((code / "vision").glob("*.py")), code / "enrol.py"]
    model_key = "|".join([ms.embedder_sha, *(ms.info(n, verify=False).sha256 for n in ms.manifest["models"]),
                          args.detector, *(hashlib.sha256(p.read_bytes()).hexdigest() for p in vision)])
    emb = openset.embed_files(pipe, files, probe_files, enrol_files, args.masked_templates, cache, model_key,
                              progress)

    def scored_for(salt: int, k: int, how: str, masked_gallery: str) -> rep.Scored:
        filler_names = [str(f) for f in fillers]
        n_enrolled = sum(openset.is_enrolled(p.name, salt) and len(p.unmasked) >= k for p in people)
        usable = [f for f in filler_names if emb.enrolment and emb.enrolment.plain[emb.index[f]] is not None]
        g, enrolled = rep.build_gallery(people, emb, k, salt,
                                        usable[: max(0, args.gallery_size - n_enrolled)], args.enrol_masked)
        return rep.score(g, rep.probes_of(people, enrolled, g, emb, k, how, args.enrol_masked), masked_gallery,
                         cohort, pipe.embedder.primary_dim)

    rule = rep.Rule(shipped.plain, shipped.masked, shipped.margin, shipped.masked_margin,
                    args.masked_gallery or shipped.masked_gallery)
    report: dict[str, Any] = {
        "protocol": "openset", "folder": str(args.openset), "people": len(people),
        "enrolled_share": openset.ENROLLED_SHARE, "gallery_size": args.gallery_size, "splits": args.splits,
        "frames_per_walkup": openset.FRAMES, "embedder_sha256": ms.embedder_sha, "detector": args.detector,
        "enrol_masked": args.enrol_masked,
        "enrolment_refused": sum(s not in ("ok", "ok_masked", "not_enrolled") for s in emb.enrolment.status)
        if emb.enrolment else 0,
    }
    if args.calibrate:
        gal = args.masked_gallery or "plain"
        pooled = [scored_for(s, k, how, gal) for s in range(args.splits) for k in counts
                  for how in openset.PRESENTATIONS]
        try:
            rule, detail = rep.calibrate(pooled, args.target_frame_fpir, args.target_fpir, gal, 3)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        report["calibration"] = {"rule": rep.rule_dict(rule), **detail}
        path = ms.dir / MANIFEST
        manifest = json.loads(path.read_text())
        manifest.setdefault("recognition", {})[ms.embedder_entry] = {
            "threshold": round(rule.threshold, 4), "masked_threshold": round(rule.masked_threshold, 4),
            "margin": rule.margin, "masked_margin": rule.masked_margin, "masked_gallery": rule.masked_gallery,
            "target_fpir_walkup": args.target_fpir, "target_fpir_frame": args.target_frame_fpir,
            "target_far": args.target_frame_fpir, "embedder_sha256": ms.embedder_sha,
            "gallery_size": args.gallery_size,
            "derivation": ("per mask status, the threshold and margin (best minus second-best person) that accept "
                           "most genuine frames with stranger frames accepted <= target_fpir_frame; then both "
                           "thresholds raised (grid) so that stranger walk-ups (3 of 5 frames) are granted <= "
                           "target_fpir_walkup for masked and for bare photos each, keeping most genuine walk-ups "
                           "(masked and bare weighing the same); pooled over "
                           f"{args.splits} enrolled/stranger splits of {args.openset.name}, K={counts}, "
                           "crop and framed, gallery filled to gallery_size; "
                           "scripts/evaluate.py --openset --calibrate"),
            "calibration": detail,
        }
        path.write_text(json.dumps(manifest, indent=2) + "\n")
        report["written_to"] = str(path)
    report["rule"] = rep.rule_dict(rule)
    results: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for how in openset.PRESENTATIONS:
        for k in counts:
            per_split = [scored_for(s, k, how, rule.masked_gallery) for s in range(args.splits)]
            sc = _concat(per_split)
            results.setdefault(how, {})[str(k)] = rep.summarise(sc, rule)
            for kind, sel in (("masked", sc.real_mask), ("unmasked", ~sc.real_mask)):
                curves[f"{how} K={k} {kind}"] = rep.det_curve(sc, sel)
    report["results"] = results
    if args.det is not None:
        plot_det(curves, report, args.det)
        report["det_png"] = str(args.det)
    return report, text(report)


def _concat(parts: list[rep.Scored]) -> rep.Scored:
    if len(parts) == 1:
        return parts[0]
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in
           ("top", "s1", "s2", "found", "masked", "quality", "pid", "real_mask")}
    # person indices differ between splits' galleries; only "is it the probe's own person" is compared
    return rep.Scored(**cat)


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def text(report: dict[str, Any]) -> str:
    r = report["rule"]
    lines = [f"open set on {report['folder']}: {report['people']} people, {int(100 * report['enrolled_share'])} % "
             f"enrolled (by name hash), gallery filled to {report['gallery_size']}, {report['splits']} split(s), "
             f"walk-up = {report['frames_per_walkup']} frames, vote {r['votes']} of them",
             f"rule: threshold {r['threshold']:.4f} / masked {r['masked_threshold']:.4f}, margin {r['margin']:.3f} / "
             f"masked {r['masked_margin']:.3f}, masked probes meet {r['masked_gallery']} templates"]
    if report.get("enrol_masked"):
        lines.append(f"enrolled from K bare photos AND their first {report['enrol_masked']} masked photo(s) "
                     f"(a site enrolling people with their mask on); those are not probes")
    head = (f"{'':8} {'K':>2} {'kind':9} {'found':>6} {'rank1':>6} {'TPIR@1%':>8} {'@0.1%':>6} | photo: "
            f"{'self':>6} {'other':>6} {'strngr':>6} | walk-up: {'self':>6} {'other':>6} {'strngr':>6}")
    lines += ["", head, "-" * len(head)]
    for how, by_k in report["results"].items():
        for k, kinds in by_k.items():
            for kind, m in kinds.items():
                a1, a01 = m["at_fpir"]["0.01"]["tpir"], m["at_fpir"]["0.001"]["tpir"]
                ph, wk = m["photo"], m["walkup"]
                lines.append(f"{how:8} {k:>2} {kind:9} {_pct(m['found'])} {_pct(m['rank1'])} {_pct(a1):>8} "
                             f"{_pct(a01)} | photo: {_pct(ph['granted_self'])} {_pct(ph['granted_other'])} "
                             f"{_pct(ph['strangers_granted'])} | walk-up: {_pct(wk['granted_self'])} "
                             f"{_pct(wk['granted_other'])} {_pct(wk['strangers_granted'])}")
    if "calibration" in report:
        c = report["calibration"]
        lines += ["", f"calibrated and written to {report['written_to']}: stranger walk-ups granted "
                      f"{_pct(c['stranger_walkups_granted'])} of {c['stranger_walkups']}; genuine frames accepted "
                      f"{_pct(c['unmasked']['genuine_frames_accepted'])} unmasked, "
                      f"{_pct(c['masked']['genuine_frames_accepted'])} masked"]
    lines.append("found/rank1/TPIR: the photo as it is (frame 0); photo: one frame, as `edge-app recognize` decides; "
                 "walk-up: the door's vote; self/other: enrolled probes granted as themselves / as somebody else")
    return "\n".join(lines)


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, kind in zip(axes, ("masked", "unmasked"), strict=True):
        for name, (fpir, fnir) in curves.items():
            if name.endswith(f" {kind}"):  # " masked" must not match "unmasked"
                ax.step(np.maximum(fpir, 1e-4), fnir, where="post", label=name.replace(f" {kind}", ""),
                        ls="-" if name.startswith("crop") else "--")
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(0, 1)
        ax.axvline(0.01, color="grey", lw=0.5)
        ax.set_xlabel("FPIR (strangers accepted, per photo)")
        ax.set_title(f"{kind} probes (solid: crop as it is, dashed: framed)")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(loc="upper right")
    axes[0].set_ylabel("FNIR (enrolled not recognised as themselves)")
    fig.suptitle(f"DET, open set on {Path(report['folder']).name} (gallery {report['gallery_size']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
