"""`edge-app liveness-check [--source SPEC]`: the anti-spoofing score of every face, live.

For a site testing its own camera: stand in front of it, then hold up printed photos and phone
screens, and watch the scores. No gallery is needed. One line (or JSON object) per face, and a
summary per run on stderr.
"""

from __future__ import annotations

import argparse
import statistics

from edge_app.cli import EXIT_OK, EXIT_PARTIAL
from edge_app.cli.common import detector as door_detector
from edge_app.cli.common import emit_json, models, progress, say, settings
from edge_app.cli.recognize import frames
from edge_app.hardware.camera import ImageSource, open_source
from edge_app.models import LIVENESS


def cmd_liveness_check(args: argparse.Namespace) -> int:
    cfg = settings(args)
    ms = models(args)
    checker = ms.liveness()
    threshold = args.threshold if args.threshold is not None else cfg.liveness.threshold
    cam = cfg.camera
    source = open_source(args.source or cam.source, no_frame_timeout=cam.no_frame_seconds,
                         size=(cam.width, cam.height))
    still = isinstance(source, ImageSource)
    # The door's own detection (the configured cascade): its boxes are where the door's liveness crops come from.
    detector = door_detector(args, ms, stream=not still)
    if source.live:
        say(f"watching {source.description}: show your face, then printed photos and phone screens "
            "(Ctrl-C to stop)")
    scores: list[float] = []
    largest: list[bool] = []  # live or not, the largest face of each frame of a video or camera
    n_frames = 0
    try:
        with source:
            total = len(source) if still else args.max_frames
            for frame in progress(frames(source, 1, args.max_frames), total, "liveness", "frame"):
                n_frames += 1
                faces = sorted(detector.detect(frame.image), key=lambda d: d.width * d.height, reverse=True)
                where = frame.origin + ("" if still else f"#{frame.index}")
                if not faces and still:
                    print(f"{where}\tno face", flush=True)
                for i, det in enumerate(faces):
                    each = checker.scores(frame.image, det.box)
                    p = sum(each) / len(each)
                    scores.append(p)
                    live = p >= threshold
                    if i == 0 and not still:
                        largest.append(live)
                    if args.json:
                        emit_json({"origin": frame.origin, "frame": frame.index, "box": [round(v, 1) for v in det.box],
                                   "live": live, "probability": round(p, 4), "threshold": threshold,
                                   "networks": {n: round(s, 4) for n, s in zip(LIVENESS, each, strict=True)}})
                    else:
                        nets = " ".join(f"{n.removeprefix('liveness_')}={s:.2f}"
                                        for n, s in zip(LIVENESS, each, strict=True))
                        box = ",".join(str(round(v)) for v in det.box)
                        print(f"{where}\tlive={'yes' if live else 'no'}({p:.2f})\t{nets}\tbox={box}", flush=True)
    except KeyboardInterrupt:
        pass  # the summary is what a person testing a camera wants to see on Ctrl-C
    errors = getattr(source, "errors", [])
    for _path, why in errors:
        say(f"skipped {why}")
    if scores:
        n_live = sum(s >= threshold for s in scores)
        say(f"{n_frames} frame(s), {len(scores)} face(s): {n_live} judged live at threshold {threshold:g}; "
            f"p(live) min {min(scores):.2f}, median {statistics.median(scores):.2f}, max {max(scores):.2f}")
    else:
        say(f"{n_frames} frame(s), no face")
    if largest:
        say(door_windows(largest, cfg.access.window, cfg.liveness.votes))
    return EXIT_PARTIAL if errors else EXIT_OK


def door_windows(live: list[bool], window: int, votes: int) -> str:
    """How the door would judge these frames: consecutive windows of ``window`` frames of the largest face,
    live when ``votes`` of them are (a person standing at the door should pass every window, a photo none)."""
    wins = [live[i:i + window] for i in range(0, len(live) - window + 1, window)]
    if not wins:
        return f"fewer than {window} frames with a face: no door window to judge"
    n = sum(sum(w) >= votes for w in wins)
    return (f"door windows ({votes} live frames of {window}, the largest face): {n} of {len(wins)} live, "
            f"{len(wins) - n} refused as spoof")
