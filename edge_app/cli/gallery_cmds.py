"""`edge-app gallery list|remove|export|import`: no models, no OpenCV (see docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_app.cli import EXIT_ERROR, EXIT_OK
from edge_app.cli.common import emit_json, existing_gallery, gallery, models, say
from edge_app.errors import PersonNotFoundError
from edge_app.gallery.exchange import check_embedder, import_gallery, read_export
from edge_app.gallery.kiosk import wait_for_kiosk_reload


def cmd_list(args: argparse.Namespace) -> int:
    with existing_gallery(args) as g:
        persons = g.list_persons()
        version = g.gallery_version
    if args.json:
        emit_json({"gallery_version": version, "persons": [
            {"id": p.id, "name": p.name, "active": p.active, "templates": p.n_templates, "masked_templates": p.n_masked,
             "valid_from": p.valid_from, "valid_until": p.valid_until, "created_at": p.created_at}
            for p in persons]})
        return EXIT_OK
    if not persons:
        print(f"gallery {args.db} is empty (version {version})")
        return EXIT_OK
    width = max(len("name"), *(len(p.name) for p in persons))
    print(f"{'name':<{width}}  active  templates  masked  valid")
    for p in persons:
        valid = f"{p.valid_from or '-'} .. {p.valid_until or '-'}"
        print(f"{p.name:<{width}}  {'yes' if p.active else 'no':<6}  {p.n_templates:>9}  {p.n_masked:>6}  {valid}")
    print(f"{len(persons)} person(s), gallery version {version}")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    with existing_gallery(args) as g:  # removing from a gallery that is not there cannot succeed
        try:
            n = g.remove_person(args.name)
        except PersonNotFoundError as exc:
            say(f"edge-app: error: {exc}")
            return EXIT_ERROR
        version = g.gallery_version
        say(wait_for_kiosk_reload(g, version).message)
    if args.json:
        emit_json({"removed": args.name, "templates": n, "gallery_version": version})
    else:
        print(f"removed {args.name} ({n} template(s)); gallery version {version}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with existing_gallery(args) as g:
        if str(args.out) == "-":
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "gallery.json"
                g.export(out)
                sys.stdout.write(out.read_text())
            return EXIT_OK
        g.export(args.out)
    data = json.loads(args.out.read_text())
    n = len(data.get("persons", []))
    if args.json:
        emit_json({"exported": str(args.out), "persons": n})
    else:
        print(f"exported {n} person(s) to {args.out}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    # The file is read and checked before the gallery is opened: a bad file creates nothing.
    if str(args.file) == "-":
        doc = read_export("<stdin>", sys.stdin.read())
    else:
        doc = read_export(args.file)
    ms = models(args)
    model_sha, dim = ms.embedder_sha, ms.embedder_dim
    check_embedder(doc, model_sha, dim)
    with gallery(args) as g:
        result = import_gallery(g, doc, model_sha, replace=args.replace, dim=dim)
        say(wait_for_kiosk_reload(g, result.gallery_version).message)
    if args.json:
        emit_json({"imported": doc.origin, "persons": result.persons, "templates": result.templates,
                   "removed": result.removed, "replace": args.replace, "gallery_version": result.gallery_version})
    else:
        how = f"replaced the gallery ({result.removed} person(s) removed) with" if args.replace else "imported"
        print(f"{how} {result.persons} person(s), {result.templates} template(s) from {doc.origin} into {args.db}; "
              f"gallery version {result.gallery_version}")
    return EXIT_OK
