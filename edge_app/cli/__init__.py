"""`edge-app` command line: enroll, gallery, recognize, run, liveness-check, doctor.

Exit codes (also in docs/cli.md):
  0  done
  1  error: bad input, missing model, unusable gallery (message on stderr)
  2  usage error (bad arguments)
  3  done, but some inputs were skipped (unreadable photo, no face, several faces, low quality)
  130 interrupted
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from edge_app import __version__
from edge_app.errors import EdgeAppError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger(__name__)


def default_gallery_path() -> Path:
    env = os.environ.get("EDGE_APP_GALLERY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edge-app" / "gallery.db"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _float_in(lo: float, hi: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not lo <= value <= hi:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_unit_float = _float_in(-1.0, 1.0, "a number in [-1, 1]")
_seconds = _float_in(1.0, 600.0, "a number of seconds in 1..600")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a probability in (0, 1), got {value}")
    return value


def _count_0_10(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number in 0..10") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be in 0..10, got {value}")
    return value


def _count_1_10(text: str) -> int:
    value = _count_0_10(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be in 1..10, got {value}")
    return value


def _person_name(text: str) -> str:
    # Checked while parsing, so an empty or unusable name fails before any model is loaded.
    from edge_app.errors import GalleryInputError
    from edge_app.gallery.fields import clean_name

    try:
        return clean_name(text)
    except GalleryInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command name.

    The top-level copy carries the defaults; the copies on the subcommands default to SUPPRESS,
    so an option given before the command is not overwritten by the subcommand's default."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=default(None), metavar="FILE",
                        help="TOML settings (README \"Configuration\"); flags override it")
    common.add_argument("--db", type=Path, default=default(None),
                        help="gallery SQLite file (default $EDGE_APP_GALLERY or ~/.local/share/edge-app/gallery.db)")
    common.add_argument("--models", type=Path, default=default(None),
                        help="models folder with MANIFEST.json (default: the bundled models, or $EDGE_APP_MODELS)")
    common.add_argument("--threads", type=_positive_int, default=default(None), help="inference threads (default 2)")
    common.add_argument("--detector", choices=("short", "full"), default=default(None),
                        help="BlazeFace short range (kiosk, < 2 m; default) or full range (group photos, < 5 m)")
    common.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable JSON on stdout")
    common.add_argument("-v", "--verbose", action="count", default=default(0), help="more log output on stderr")
    return common


def build_parser() -> argparse.ArgumentParser:
    # Subcommand modules are named, not imported: they pull in OpenCV, the TFLite runtime, paho and
    # cryptography, which `--version`, `--help` and `gallery list` do not need (main() imports on use).
    top, common = _common_options(suppress=False), _common_options(suppress=True)
    ap = argparse.ArgumentParser(prog="edge-app", description="Masked-face door-access kiosk.", parents=[top])
    ap.add_argument("--version", action="version", version=f"edge-app {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("enroll", parents=[common], help="add a person from photos or from the camera")
    p.add_argument("--name", required=True, type=_person_name, help="person's name (unique in the gallery)")
    p.add_argument("photos", nargs="*", metavar="PHOTO|DIR", help="photos of that person, or folders of them")
    p.add_argument("--camera", nargs="?", const="", default=None, metavar="SOURCE",
                   help="take the shots from a camera instead of photos: the [camera] source, or SOURCE (0, "
                        "picamera2, rtsp://..., a video); one face, live and of good quality, per shot; a shot "
                        "with a mask on gives a masked template (stop the kiosk service first: it holds the camera)")
    p.add_argument("--shots", type=_count_1_10, default=3, metavar="N", help="shots to take with --camera (3)")
    p.add_argument("--seconds", type=_seconds, default=20.0, metavar="S",
                   help="give up on --camera after S seconds of frames (20)")
    p.add_argument("--save", type=Path, metavar="DIR",
                   help="with --camera: keep the shots as JPEG files there (0600), to enrol again later")
    p.add_argument("--replace", action="store_true", help="replace the person's templates instead of adding")
    p.add_argument("--masked-templates", type=_count_0_10, default=None, metavar="N",
                   help="synthetic-masked templates stored per photo, for recognition in a mask (default 3)")
    p.set_defaults(func="enroll:cmd_enroll")

    p = sub.add_parser("gallery", parents=[common], help="list, remove, export or import persons")
    gsub = p.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    g = gsub.add_parser("list", parents=[common], help="persons and template counts")
    g.set_defaults(func="gallery_cmds:cmd_list")
    g = gsub.add_parser("remove", parents=[common], help="remove a person and their templates")
    g.add_argument("name")
    g.set_defaults(func="gallery_cmds:cmd_remove")
    g = gsub.add_parser("export", parents=[common], help="write the whole gallery as JSON")
    g.add_argument("out", type=Path, help="output .json file ('-' for stdout)")
    g.set_defaults(func="gallery_cmds:cmd_export")
    g = gsub.add_parser("import", parents=[common],
                        help="read a file written by `gallery export`: add its persons (or --replace the gallery)")
    g.add_argument("file", type=Path, help="a .json file written by `edge-app gallery export` ('-' for stdin)")
    g.add_argument("--replace", action="store_true",
                   help="replace the whole gallery with the file's persons, in one transaction "
                        "(default: add them; a name already in the gallery is an error)")
    g.set_defaults(func="gallery_cmds:cmd_import")

    p = sub.add_parser("recognize", parents=[common],
                       help="recognise faces in an image, a folder, a video file, a camera index or a stream URL")
    p.add_argument("source", help="image, folder, video file, camera index (0) or rtsp:// / http:// URL")
    p.add_argument("--threshold", type=_unit_float, default=None,
                   help="cosine similarity to accept an unmasked face (default: calibrated, in MANIFEST.json)")
    p.add_argument("--masked-threshold", type=_unit_float, default=None,
                   help="cosine similarity to accept a masked face (default: calibrated, in MANIFEST.json)")
    p.add_argument("--require-mask", action="store_true",
                   help="report recognised faces without a mask as refused (reason no_mask)")
    p.add_argument("--no-liveness", action="store_true",
                   help="skip the anti-spoofing check (default: [liveness] enabled, on)")
    p.add_argument("--require-live", action="store_true",
                   help="refuse (reason spoof) a recognised face judged not live in its frame; by default "
                        "recognize only reports live= (a photo file is never live; the door always decides it)")
    p.add_argument("--annotate", type=Path, metavar="OUT",
                   help="write boxes and names: an image (or folder for a folder input) or a video file")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after N frames")
    p.add_argument("--every", type=_positive_int, default=1, help="process every N-th frame of a video")
    p.add_argument("--recursive", action="store_true", help="a folder input: include the images in its sub-folders")
    p.set_defaults(func="recognize:cmd_recognize")

    p = sub.add_parser("run", parents=[common], help="the door daemon: camera, recognition, door relay, events")
    p.add_argument("--source", default=None,
                   help="camera index, picamera2, rtsp:// URL or video file (default [camera] source, or 0)")
    p.add_argument("--check-config", action="store_true",
                   help="check the config file and the models, print the effective settings, exit")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after N frames (testing)")
    p.add_argument("--realtime", action="store_true",
                   help="play a video file at its frame rate, as a camera would deliver it (demos, tests)")
    # A kiosk's journal shows its decisions and state changes without -v.
    p.set_defaults(func="run:cmd_run", log_level=logging.INFO)

    p = sub.add_parser("liveness-check", parents=[common],
                       help="print the anti-spoofing score of every face, live from the camera (or a video/image)")
    p.add_argument("--source", default=None,
                   help="camera index, picamera2, rtsp:// URL, video file, image or folder (default [camera] source)")
    p.add_argument("--threshold", type=_probability, default=None,
                   help="p(live) at which a face counts as live (default [liveness] threshold)")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after N frames")
    p.set_defaults(func="liveness:cmd_liveness_check")

    p = sub.add_parser("door-off", parents=[common],
                       help="de-energise the door relay and exit (systemd runs it after every stop: ExecStopPost)")
    p.set_defaults(func="door_off:cmd_door_off", lazy_db=True)  # no gallery needed

    p = sub.add_parser("doctor", parents=[common],
                       help="check platform, config, models, camera, GPIO, SQLite, MQTT, clock, disk, Coral; exit 1 "
                            "on a failure")
    p.add_argument("--source", default=None, help="camera to check instead of [camera] source")
    p.add_argument("--skip", default=None, metavar="CHECK,...",
                   help="checks to skip: platform, models, camera, camera_stack, gpio, sqlite, mqtt, clock, disk, "
                        "coral")
    p.set_defaults(func="doctor:cmd_doctor", lazy_db=True)  # a bad config is one of its checks, not a crash
    return ap


def _command(spec: str) -> Callable[[argparse.Namespace], int]:
    module, _, name = spec.partition(":")
    fn: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(f"edge_app.cli.{module}"), name)
    return fn


def configure_logging(args: argparse.Namespace) -> None:
    """Library code only logs; the command line decides where it goes and how much."""
    base = getattr(args, "log_level", logging.WARNING)
    level = max(logging.DEBUG, base - 10 * min(args.verbose, 2))
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    configure_logging(args)
    try:
        if args.command != "doctor":  # doctor reports it as its "platform" row instead
            from edge_app.hardware.pi import check_64bit

            check_64bit()
        if getattr(args, "db", False) is None and not getattr(args, "lazy_db", False):
            from edge_app.cli.common import settings

            args.db = settings(args).gallery.path or default_gallery_path()
        return int(_command(args.func)(args))
    except EdgeAppError as exc:
        print(f"edge-app: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-app: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `edge-app recognize … | head`
        return EXIT_OK
