"""`edge-app enroll --name NAME --camera [SOURCE]`: enrolment shots taken from the kiosk's own camera.

A person is best recognised by the camera, light and mask they meet at the door: the measured gain of one
masked photo enrolled next to the bare ones is in docs/accuracy.md. The frames go through the door's
pipeline; a shot is a frame with exactly one face that passes the quality gates and, with liveness on, is
judged live (a photo held up by mistake is not enrolled). Shots are at least ``MIN_GAP_S`` apart, so the
person can turn a little between them. The camera must be free: stop the service first on a kiosk.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from edge_app.cli.common import say, settings
from edge_app.enrol import PhotoResult, PhotoStatus, embed_rgb
from edge_app.errors import EdgeAppError
from edge_app.fsutil import write_private
from edge_app.hardware.camera import ImageSource, open_source
from edge_app.vision.pipeline import Pipeline

MIN_GAP_S = 0.5  # between two shots: a little head movement, not three copies of one frame


def camera_shots(args: argparse.Namespace, pipe: Pipeline, n_masked: int,
                 live_threshold: float) -> tuple[list[PhotoResult], Counter[str]]:
    """Up to ``args.shots`` accepted shots within ``args.seconds`` of the first frame; the frames passed over,
    counted by why."""
    cam = settings(args).camera
    spec = args.camera or cam.source
    source = open_source(spec, no_frame_timeout=cam.no_frame_seconds, size=(cam.width, cam.height))
    if isinstance(source, ImageSource):
        raise EdgeAppError(f"--camera {spec}: a photo or a folder is not a camera; give the photos without --camera")
    shots: list[PhotoResult] = []
    passed: Counter[str] = Counter()
    start = last = None
    if source.live:
        say(f"watching {source.description}: look at the camera as you would at the door (with your usual mask "
            f"for a masked template); {args.shots} shot(s) within {args.seconds:g} s")
    with source:
        for frame in source:
            start = frame.timestamp if start is None else start
            if frame.timestamp - start > args.seconds:
                break
            if last is not None and frame.timestamp - last < MIN_GAP_S:
                continue
            faces = pipe.process(frame.image)
            why = ("no_face" if not faces else "several_faces" if len(faces) > 1
                   else "low_quality" if not faces[0].quality.passed
                   else "not_live" if pipe.liveness is not None and (faces[0].live_probability or 0.0) < live_threshold
                   else None)
            if why is not None:
                passed[why] += 1
                continue
            name = Path(f"{frame.origin}#{frame.index}")
            seed = int.from_bytes(hashlib.sha256(frame.image.tobytes()).digest()[:8], "little")
            r = embed_rgb(pipe, frame.image, name, n_masked, seed)
            if r.status is not PhotoStatus.OK:  # the same frame again: only a race of the cascade could differ
                passed[r.status.value] += 1
                continue
            if args.save is not None:
                save_shot(args.save, args.name, len(shots), frame.image)
            shots.append(r)
            last = frame.timestamp
            if len(shots) >= args.shots:
                break
    return shots, passed


def save_shot(folder: Path, name: str, i: int, rgb: np.ndarray) -> Path:
    """A shot as JPEG (0600: a face photo is biometric data), to enrol again later, e.g. with another embedder."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise EdgeAppError(f"cannot encode shot {i} as JPEG")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    path = folder / f"{safe}-{i + 1}.jpg"
    write_private(path, buf.tobytes())
    return path


def describe(passed: Counter[str]) -> str:
    labels = {"no_face": "without a face", "several_faces": "with several faces", "low_quality": "of low quality",
              "not_live": "not judged live"}
    return ", ".join(f"{n} {labels.get(k, k)}" for k, n in passed.most_common()) or "none"
