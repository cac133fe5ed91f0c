"""`edge-app enroll --name NAME PHOTO|DIR...` (or `--camera [SOURCE]`): photos, or shots from the kiosk's camera
(cli/enroll_camera.py) -> plain and synthetic-masked templates."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_app.cli import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from edge_app.cli.common import (
    emit_json,
    gallery,
    liveness_on,
    masked_templates_per_photo,
    models,
    pipeline,
    policy,
    progress,
    say,
    settings,
)
from edge_app.enrol import (
    PhotoResult,
    PhotoStatus,
    PhotoTemplates,
    embed_photo,
    expand_photos,
    lacks_bare_face,
    subfolders,
)
from edge_app.gallery.kiosk import wait_for_kiosk_reload
from edge_app.gallery.matcher import Matcher
from edge_app.models import ModelSet


def cmd_enroll(args: argparse.Namespace) -> int:
    if args.camera is not None and args.photos:
        say("edge-app: error: give photos or --camera, not both")
        return EXIT_USAGE
    if args.camera is None and not args.photos:
        say("edge-app: error: give photos of the person (files or folders), or --camera to take shots")
        return EXIT_USAGE
    if args.camera is not None:
        return _from_camera(args)
    photos = expand_photos(args.photos)
    for folder in (Path(p) for p in args.photos):
        for sub in subfolders(folder) if folder.is_dir() else []:
            say(f"skipped sub-folder {sub} (name it on the command line to use its photos)")
    if not photos:
        say("edge-app: error: no image files in " + ", ".join(args.photos))
        return EXIT_ERROR
    ms = models(args)
    pipe = pipeline(args, ms)
    n_masked = masked_templates_per_photo(args)
    results = [embed_photo(pipe, p, n_masked) for p in progress(photos, len(photos), f"enrol {args.name}", "photo")]
    accepted = [r for r in results if r.status is PhotoStatus.OK]
    skipped = [r for r in results if r.status is not PhotoStatus.OK]
    report: dict[str, object] = {
        "name": args.name, "accepted": [str(r.path) for r in accepted],
        "skipped": [{"path": str(r.path), "reason": r.status.value, "detail": r.detail} for r in skipped],
    }
    for r in skipped:
        say(f"skipped {r.path}: {r.detail}")
    if not accepted:
        say(f"edge-app: error: no usable photo of {args.name!r}; nothing enrolled")
        if args.json:
            emit_json({**report, "enrolled": 0})
        return EXIT_ERROR
    code = _store(args, ms, accepted, report, "photo(s)")
    return EXIT_PARTIAL if skipped and code == EXIT_OK else code


def _from_camera(args: argparse.Namespace) -> int:
    from edge_app.capture import describe
    from edge_app.cli.enroll_camera import camera_shots

    ms = models(args)
    cfg = settings(args)
    pipe = pipeline(args, ms, liveness=liveness_on(args))
    capture = camera_shots(args, pipe, masked_templates_per_photo(args), cfg.liveness.threshold)
    shots, passed = capture.taken, capture.passed
    report: dict[str, object] = {"name": args.name, "accepted": [str(r.path) for r in shots],
                                 "frames_passed_over": dict(passed), "shots_asked": args.shots}
    if not shots:
        say(f"edge-app: error: no usable frame of {args.name!r} within {args.seconds:g} s (frames passed over: "
            f"{describe(passed)}); nothing enrolled")
        if args.json:
            emit_json({**report, "enrolled": 0})
        return EXIT_ERROR
    if len(shots) < args.shots:
        say(f"only {len(shots)} of {args.shots} shot(s) within {args.seconds:g} s (frames passed over: "
            f"{describe(passed)})")
    code = _store(args, ms, shots, report, "camera shot(s)")
    return EXIT_PARTIAL if len(shots) < args.shots and code == EXIT_OK else code


def _store(args: argparse.Namespace, ms: ModelSet, accepted: list[PhotoResult], report: dict[str, object],
           what: str) -> int:
    """The accepted photos' templates into the gallery (one transaction), with the checks every enrolment makes."""
    threshold = policy(args, ms).threshold
    t = PhotoTemplates.of(accepted)
    plain, masked, emb, flags = t.plain, t.masked, t.embeddings, t.masked_flags
    with gallery(args) as g:
        if lacks_bare_face(g, args.name, len(plain), replacing=args.replace):
            say(f"edge-app: error: every usable photo of {args.name!r} shows a mask; enrol at least one photo "
                f"without a mask; nothing enrolled")
            if args.json:
                emit_json({**report, "enrolled": 0, "error": "no_bare_face"})
            return EXIT_ERROR
        # Warn when the new face already looks like somebody else: a mix-up at the desk is
        # cheaper to catch now than at the door.
        matcher = Matcher.from_gallery(g, ms.embedder_sha)
        lookalikes: dict[str, float] = {}
        if matcher.n_templates:
            for row in matcher.match_batch(emb, k=2):
                for m in row:
                    if m.name != args.name.strip() and m.score >= threshold:
                        lookalikes[m.name] = max(m.score, lookalikes.get(m.name, -1.0))
        for other, score in sorted(lookalikes.items()):
            say(f"warning: these photos match enrolled person {other!r} (cosine {score:.3f})")
        existed = any(p.name == args.name.strip() for p in g.list_persons())
        if not existed:
            g.add_person(args.name)
        sources = ", ".join(r.path.name for r in accepted)[:500]
        if args.replace and existed:
            ids = g.replace_person_templates(args.name, emb, model_sha=ms.embedder_sha, masked=flags,
                                             source=sources)
        else:
            ids = g.add_templates(args.name, emb, model_sha=ms.embedder_sha, masked=flags, source=sources)
        version = g.gallery_version
        say(wait_for_kiosk_reload(g, version).message)
    report.update({"enrolled": len(ids), "plain_templates": len(plain), "masked_templates": len(masked),
                   "new_person": not existed, "gallery_version": version, "lookalikes": lookalikes})
    if args.json:
        emit_json(report)
    else:
        verb = "enrolled" if not existed else ("replaced templates of" if args.replace else "added templates to")
        skipped = report.get("skipped")
        print(f"{verb} {args.name}: {len(plain)} plain + {len(masked)} masked template(s) from {len(accepted)} "
              f"{what}{f', {len(skipped)} skipped' if isinstance(skipped, list) else ''}; gallery version {version}")
    return EXIT_OK
