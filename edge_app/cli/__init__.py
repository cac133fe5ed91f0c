"""`edge-app` command line: enroll, gallery, recognize, run, doctor.

Exit codes (also in the README):
  0  done
  1  error: bad input, missing model, unusable gallery (message on stderr)
  2  usage error (bad arguments)
  3  done, but some inputs were skipped (unreadable photo, no face, several faces, low quality)
  130 interrupted
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
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
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine threshold is in [-1, 1], got {value}")
    return value


def _count_0_10(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be in 0..10, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from edge_app.cli import doctor, gallery_cmds, recognize, run

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="TOML settings (README \"Configuration\"); flags override it")
    common.add_argument("--db", type=Path, default=None,
                        help="gallery SQLite file (default $EDGE_APP_GALLERY or ~/.local/share/edge-app/gallery.db)")
    common.add_argument("--models", type=Path, default=None,
                        help="models folder with MANIFEST.json (default: the bundled models, or $EDGE_APP_MODELS)")
    common.add_argument("--threads", type=_positive_int, default=None, help="inference threads (default 2)")
    common.add_argument("--detector", choices=("short", "full"), default=None,
                        help="BlazeFace short range (kiosk, < 2 m; default) or full range (group photos, < 5 m)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")

    ap = argparse.ArgumentParser(prog="edge-app", description="Masked-face door-access kiosk.")
    ap.add_argument("--version", action="version", version=f"edge-app {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("enroll", parents=[common], help="add a person from photos")
    p.add_argument("--name", required=True, help="person's name (unique in the gallery)")
    p.add_argument("photos", nargs="+", metavar="PHOTO|DIR", help="photos of that person, or folders of them")
    p.add_argument("--replace", action="store_true", help="replace the person's templates instead of adding")
    p.add_argument("--masked-templates", type=_count_0_10, default=None, metavar="N",
                   help="synthetic-masked templates stored per photo, for recognition in a mask (default 3)")
    p.set_defaults(func=gallery_cmds.cmd_enroll)

    p = sub.add_parser("gallery", help="list, remove or export persons")
    gsub = p.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    g = gsub.add_parser("list", parents=[common], help="persons and template counts")
    g.set_defaults(func=gallery_cmds.cmd_list)
    g = gsub.add_parser("remove", parents=[common], help="remove a person and their templates")
    g.add_argument("name")
    g.set_defaults(func=gallery_cmds.cmd_remove)
    g = gsub.add_parser("export", parents=[common], help="write the whole gallery as JSON")
    g.add_argument("out", type=Path, help="output .json file ('-' for stdout)")
    g.set_defaults(func=gallery_cmds.cmd_export)

    p = sub.add_parser("recognize", parents=[common],
                       help="recognise faces in an image, a folder, a video file, a camera index or a stream URL")
    p.add_argument("source", help="image, folder, video file, camera index (0) or rtsp:// / http:// URL")
    p.add_argument("--threshold", type=_unit_float, default=None,
                   help="cosine similarity to accept an unmasked face (default: calibrated, in MANIFEST.json)")
    p.add_argument("--masked-threshold", type=_unit_float, default=None,
                   help="cosine similarity to accept a masked face (default: calibrated, in MANIFEST.json)")
    p.add_argument("--require-mask", action="store_true",
                   help="report recognised faces without a mask as refused (reason no_mask)")
    p.add_argument("--annotate", type=Path, metavar="OUT",
                   help="write boxes and names: an image (or folder for a folder input) or a video file")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after N frames")
    p.add_argument("--every", type=_positive_int, default=1, help="process every N-th frame of a video")
    p.set_defaults(func=recognize.cmd_recognize)

    p = sub.add_parser("run", parents=[common], help="the door daemon: camera, recognition, door relay, events")
    p.add_argument("--source", default=None,
                   help="camera index, picamera2, rtsp:// URL or video file (default [camera] source, or 0)")
    p.add_argument("--check-config", action="store_true",
                   help="check the config file and the models, print the effective settings, exit")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after N frames (testing)")
    p.add_argument("--realtime", action="store_true",
                   help="play a video file at its frame rate, as a camera would deliver it (demos, tests)")
    p.set_defaults(func=run.cmd_run)

    p = sub.add_parser("doctor", parents=[common],
                       help="check platform, config, models, camera, GPIO, SQLite, MQTT, clock, disk, Coral; exit 1 "
                            "on a failure")
    p.add_argument("--source", default=None, help="camera to check instead of [camera] source")
    p.add_argument("--skip", default=None, metavar="CHECK,...",
                   help="checks to skip: platform, models, camera, camera_stack, gpio, sqlite, mqtt, clock, disk, "
                        "coral")
    p.set_defaults(func=doctor.cmd_doctor, lazy_db=True)  # a bad config is one of its checks, not a crash
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    # Library code only logs; the command line decides where it goes.
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command != "doctor":  # doctor reports it as its "platform" row instead
            from edge_app.hardware.pi import check_64bit

            check_64bit()
        if getattr(args, "db", False) is None and not getattr(args, "lazy_db", False):
            from edge_app.cli.common import settings

            args.db = settings(args).gallery.path or default_gallery_path()
        return int(args.func(args))
    except EdgeAppError as exc:
        print(f"edge-app: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-app: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `edge-app recognize … | head`
        return EXIT_OK
