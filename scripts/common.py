"""What the scripts share: data location, image listing, the error -> exit-code wrapper."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from edge_app.imageio import IMAGE_EXTS

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("EDGE_APP_DATA", ROOT.parent / "shared" / "data"))


class UsageError(Exception):
    """Bad arguments, a missing path or nothing to do: exit code 2."""


# Photos of masks-chandrikadeb7 named <n>_<n>_<person>_<nnnn> (without_mask) or <n>_<n>_<n>[ copy N]
# (with_mask: real masks, as real-masked-dev's masked/0_0_0.jpg) come from RMFRD, the dataset of
# real-masked-dev, whose other people judge the product: nothing that trains, calibrates or measures uses them.
RMFRD_NAME = re.compile(r"^\d+_\d+_")


def not_rmfrd(files: list[Path]) -> list[Path]:
    """The files whose names are not RMFRD's (<n>_<n>_...)."""
    return [f for f in files if not RMFRD_NAME.match(f.name)]


def image_files(folder: Path, step: int = 1) -> list[Path]:
    """The images directly in folder, sorted by name, every step-th."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)[::step]


def run_main(prog: str, body: Callable[[], None]) -> int:
    """Run a script's body: 0 ok, 2 usage error, 1 anything else, each with one clear line on stderr."""
    try:
        body()
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # any other failure: one clear line, exit 1
        print(f"{prog}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
