"""Helpers shared by the subcommands: models, gallery, progress bars, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

from edge_app.gallery.store import Gallery
from edge_app.models import ModelSet
from edge_app.vision.pipeline import Pipeline

T = TypeVar("T")


def models(args: argparse.Namespace) -> ModelSet:
    return ModelSet(args.models)


def pipeline(args: argparse.Namespace, ms: ModelSet) -> Pipeline:
    return ms.pipeline(detector=args.detector, num_threads=args.threads)


def gallery(args: argparse.Namespace) -> Gallery:
    return Gallery(args.db)


def progress(items: Iterable[T], total: int | None, desc: str, unit: str) -> Iterator[T]:
    """A bar on stderr when it is a terminal and there is more than one item; silent otherwise."""
    show = sys.stderr.isatty() and (total is None or total > 1)
    yield from tqdm(items, total=total or None, desc=desc, unit=unit, disable=not show, leave=False,
                    file=sys.stderr)


def say(text: str) -> None:
    """Human progress messages go to stderr so stdout stays parseable."""
    print(text, file=sys.stderr)


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)
