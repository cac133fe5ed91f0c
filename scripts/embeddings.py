"""Embeddings of the same photos on two machines, compared (scripts/arm64_check.sh: ARM under qemu vs x86).

    python scripts/embeddings.py dump PHOTO_DIR --out emb.json [--embedder sface|dlib]
    python scripts/embeddings.py compare A.json B.json [--min-cosine 0.999]

dump: the largest face of each photo, embedded as the device does (ModelSet.pipeline), with whether it passed
the quality gates and the machine it ran on. compare: cosine per photo between two dumps; exit 1 if a face that
passed the gates (on either side) is below --min-cosine, or a photo has a face in one dump and not the other.
Faces below the gates are listed but not held to the bound: the device never matches them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def dump(folder: Path, embedder: str) -> dict[str, object]:
    from edge_app.imageio import read_image
    from edge_app.models import ModelSet
    from edge_app.vision.runtime import runtime_name

    pipe = ModelSet(embedder=embedder).pipeline(num_threads=1)
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise SystemExit(f"embeddings: no photos ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    out: dict[str, list[float] | None] = {}
    low: list[str] = []
    for p in photos:
        faces = pipe.process(read_image(p), max_faces=1)
        emb = faces[0].embedding if faces else None
        out[p.name] = None if emb is None else [float(x) for x in emb]
        if faces and not faces[0].quality.passed:
            low.append(p.name)
    return {"machine": platform.machine(), "python": platform.python_version(), "runtime": runtime_name(),
            "numpy": np.__version__, "embedder": embedder, "embeddings": out, "low_quality": low}


def compare(a: dict[str, object], b: dict[str, object], min_cosine: float) -> tuple[list[str], bool]:
    ea, eb = a["embeddings"], b["embeddings"]
    assert isinstance(ea, dict) and isinstance(eb, dict)
    low = set(a.get("low_quality", [])) | set(b.get("low_quality", []))  # type: ignore[call-overload]
    lines, ok = [], True
    for name in sorted(set(ea) | set(eb)):
        va, vb = ea.get(name), eb.get(name)
        if va is None or vb is None:
            same = va is None and vb is None
            ok &= same
            lines.append(f"{name}: {'no face on either' if same else 'a face on one machine only'}")
            continue
        x, y = np.asarray(va), np.asarray(vb)
        cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
        if name in low:
            lines.append(f"{name}: cosine {cos:.6f} (below the quality gates: never matched, not held to the bound)")
            continue
        ok &= cos >= min_cosine
        lines.append(f"{name}: cosine {cos:.6f}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    from edge_app.config import DEFAULT_EMBEDDER, EMBEDDER_NAMES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("folder", type=Path)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--embedder", choices=EMBEDDER_NAMES, default=DEFAULT_EMBEDDER)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--min-cosine", type=float, default=0.999)
    args = ap.parse_args(argv)
    if args.cmd == "dump":
        args.out.write_text(json.dumps(dump(args.folder, args.embedder)))
        return 0
    a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
    if a["embedder"] != b["embedder"]:
        print(f"embeddings: {args.a} is {a['embedder']}, {args.b} is {b['embedder']}", file=sys.stderr)
        return 2
    lines, ok = compare(a, b, args.min_cosine)
    print(f"{a['embedder']}: {a['machine']} ({a['runtime']}, numpy {a['numpy']}) vs {b['machine']} "
          f"({b['runtime']}, numpy {b['numpy']})")
    print("\n".join("  " + s for s in lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
