"""Helpers shared by the subcommands: settings, models, gallery, progress bars, JSON output.

Precedence of every setting: command-line flag, then the --config file, then what the models'
manifest recommends (thresholds), then the built-in default.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edge_app.config import AUTO_EMBEDDER, DEFAULT, Config, load_config
from edge_app.errors import ConfigError, GalleryError
from edge_app.gallery.store import Gallery

if TYPE_CHECKING:  # the models and the runtime are imported only by the commands that run them
    from edge_app.models import ModelSet
    from edge_app.recognizer import RecognitionPolicy
    from edge_app.vision.cascade import CascadeOptions, FaceCascade
    from edge_app.vision.detector import FaceDetector
    from edge_app.vision.pipeline import Pipeline

T = TypeVar("T")


def settings(args: argparse.Namespace) -> Config:
    cached = getattr(args, "_config", None)
    if isinstance(cached, Config):
        return cached
    path = getattr(args, "config", None)
    cfg = load_config(path) if path is not None else DEFAULT
    args._config = cfg
    return cfg


def models(args: argparse.Namespace) -> ModelSet:
    from edge_app.models import ModelSet

    cfg = settings(args)
    folder = args.models if args.models is not None else cfg.models.dir
    name = cfg.recognition.embedder
    if name == AUTO_EMBEDDER:
        name = gallery_embedder(folder, getattr(args, "db", None))
    return ModelSet(folder, embedder=name)


def gallery_embedder(folder: Path | None, db: Path | None) -> str:
    """[recognition] embedder = "auto": the embedder the gallery's templates were made with, when that is not the
    default one (models.embedder_for_gallery); the default when the gallery is new, empty or unreadable (the
    command itself then reports what is wrong with it)."""
    from edge_app.models import embedder_for_gallery

    name, warning = embedder_for_gallery(folder, gallery_template_counts(db) or {})
    if warning:
        say(f"warning: {db}: {warning}")
    return name


def gallery_template_counts(db: Path | None) -> dict[str, int] | None:
    """{model sha: templates} of an existing gallery, read only; None when there is none or it cannot be read (the
    command that uses the gallery reports what is wrong with it)."""
    path = Path(db).expanduser() if db is not None else None
    if path is None or not path.is_file():
        return None
    try:
        with Gallery(path, read_only=True) as g:
            return g.template_counts()
    except GalleryError:
        return None


def liveness_on(args: argparse.Namespace) -> bool:
    """[liveness] enabled, unless --no-liveness."""
    return settings(args).liveness.enabled and not getattr(args, "no_liveness", False)


def cascade_options(args: argparse.Namespace, stream: bool) -> CascadeOptions:
    """The configured detection passes; ``stream``: frames of one camera in order (the daemon), where the tile
    pass runs on every detector_tile_every-th frame without a face."""
    from edge_app.vision.cascade import CascadeOptions

    rc = settings(args).recognition
    return CascadeOptions(refine_below=rc.detector_refine_below, close_up=rc.detector_close_up,
                          small_faces=rc.detector_small_faces, tile=rc.detector_tile,
                          tile_every=rc.detector_tile_every if stream else 1)


def detector(args: argparse.Namespace, ms: ModelSet, stream: bool = False) -> FaceDetector | FaceCascade:
    """The configured face detector alone, as the pipeline (and so the door) has it."""
    rc = settings(args).recognition
    return ms.detector(args.detector or rc.detector, args.threads or rc.threads,
                       cascade=cascade_options(args, stream))


def pipeline(args: argparse.Namespace, ms: ModelSet, liveness: bool = False, stream: bool = False) -> Pipeline:
    """The configured pipeline; ``stream`` as for cascade_options."""
    rc = settings(args).recognition
    return ms.pipeline(detector=args.detector or rc.detector, num_threads=args.threads or rc.threads,
                       mask_threshold=rc.mask_probability, cascade=cascade_options(args, stream),
                       liveness=liveness)


def policy(args: argparse.Namespace, ms: ModelSet) -> RecognitionPolicy:
    from edge_app.recognizer import RecognitionPolicy

    cfg = settings(args)
    rc = cfg.recognition
    calibrated = ms.thresholds()
    if not rc.accept_weaker_thresholds:
        # Values calibrated for one embedder mean nothing for another (SFace's 0.555 against dlib's 0.965): a
        # lower value than the calibrated one lets strangers in, so it is refused unless accepted explicitly.
        for key, value, floor in (("threshold", rc.threshold, calibrated.plain),
                                  ("masked_threshold", rc.masked_threshold, calibrated.masked),
                                  ("margin", rc.margin, calibrated.margin),
                                  ("masked_margin", rc.masked_margin, calibrated.masked_margin)):
            if value is not None and value < floor - 1e-9:
                raise ConfigError(f"{cfg.source or 'config'}: [recognition] {key} = {value:g} is below the value "
                                  f"calibrated for the {ms.embedder_entry} embedder ({floor:g}, strangers granted "
                                  f"<= 0.1 % per walk-up) and would let more strangers in; remove it, raise it, or "
                                  f"set [recognition] accept_weaker_thresholds = true to accept that")

    def pick(flag: float | None, configured: float | None, default: float) -> float:
        return flag if flag is not None else configured if configured is not None else default

    return RecognitionPolicy(
        pick(getattr(args, "threshold", None), rc.threshold, calibrated.plain),
        pick(getattr(args, "masked_threshold", None), rc.masked_threshold, calibrated.masked),
        bool(getattr(args, "require_mask", False) or rc.require_mask),
        rc.masked_gallery or calibrated.masked_gallery,
        rc.margin if rc.margin is not None else calibrated.margin,
        rc.masked_margin if rc.masked_margin is not None else calibrated.masked_margin,
        settings(args).liveness.threshold,
    )


def masked_templates_per_photo(args: argparse.Namespace) -> int:
    n = getattr(args, "masked_templates", None)
    return int(n) if n is not None else settings(args).recognition.masked_templates_per_photo


def gallery(args: argparse.Namespace) -> Gallery:
    """The gallery for a command that writes: created (with its folder) when missing."""
    return Gallery(args.db)


def existing_gallery(args: argparse.Namespace) -> Gallery:
    """The gallery for a command that only reads: a missing file is an error and nothing is created
    (a typo in --db must not leave a new folder and an empty gallery behind)."""
    path = Path(args.db).expanduser()
    if not path.is_file():
        what = "is a folder, not a gallery file" if path.is_dir() else "does not exist"
        raise GalleryError(f"gallery {path} {what}; enrol someone first (edge-app enroll) or check --db "
                           "and $EDGE_APP_GALLERY")
    return Gallery(path)


def progress(items: Iterable[T], total: int | None, desc: str, unit: str) -> Iterator[T]:
    """A bar on stderr only when stdout and stderr are both a terminal and there is more than one item.

    Redirected to a file, a pipe or the journal, a bar would be thousands of carriage-return updates."""
    from tqdm import tqdm

    show = sys.stderr.isatty() and sys.stdout.isatty() and (total is None or total > 1)
    yield from tqdm(items, total=total or None, desc=desc, unit=unit, disable=not show, leave=False,
                    file=sys.stderr)


def say(text: str) -> None:
    """Human progress messages go to stderr so stdout stays parseable."""
    print(text, file=sys.stderr)


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)
