"""`edge-app enroll --name NAME --camera [SOURCE]`: enrolment shots taken from the kiosk's own camera, the service
stopped (edge_app.capture says what a shot is; the running kiosk takes them on the MQTT command gallery.capture)."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edge_app.capture import Capture
from edge_app.cli.common import say, settings
from edge_app.errors import EdgeAppError
from edge_app.fsutil import write_private
from edge_app.hardware.camera import ImageSource, open_source
from edge_app.vision.pipeline import Pipeline


def camera_shots(args: argparse.Namespace, pipe: Pipeline, n_masked: int, live_threshold: float) -> Capture:
    """Up to ``args.shots`` shots within ``args.seconds`` of the first frame, and the frames passed over."""
    cam = settings(args).camera
    spec = args.camera or cam.source
    source = open_source(spec, no_frame_timeout=cam.no_frame_seconds, size=(cam.width, cam.height))
    if isinstance(source, ImageSource):
        raise EdgeAppError(f"--camera {spec}: a photo or a folder is not a camera; give the photos without --camera")
    capture: Capture | None = None
    with source:
        for frame in source:
            if capture is None:  # said once the camera gives frames, not before a camera that cannot open
                capture = Capture(args.name, args.shots, frame.timestamp + args.seconds, n_masked, live_threshold)
                if source.live:
                    say(f"watching {source.description}: look at the camera as you would at the door (with your "
                        f"usual mask for a masked template); {args.shots} shot(s) within {args.seconds:g} s")
            if capture.done(frame.timestamp):
                break
            if capture.offer(pipe, frame.image, pipe.process(frame.image), frame.timestamp,
                             f"{frame.origin}#{frame.index}") and args.save is not None:
                save_shot(args.save, args.name, len(capture.taken) - 1, frame.image)
            if capture.done(frame.timestamp):
                break
    return capture or Capture(args.name, args.shots, 0.0, n_masked, live_threshold)


def save_shot(folder: Path, name: str, i: int, rgb: np.ndarray) -> Path:
    """A shot as JPEG (0600: a face photo is biometric data), to enrol again later, e.g. with another embedder."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise EdgeAppError(f"cannot encode shot {i} as JPEG")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    return write_private(folder / f"{safe}-{i + 1}.jpg", buf.tobytes())
