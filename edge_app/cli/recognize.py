"""`edge-app recognize SOURCE`: one line (or JSON object) per face, optional annotated output."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge_app.cli import EXIT_OK, EXIT_PARTIAL
from edge_app.cli.common import emit_json, existing_gallery, liveness_on, models, pipeline, policy, progress, say
from edge_app.enrol import subfolders
from edge_app.errors import SourceError
from edge_app.gallery.matcher import Matcher
from edge_app.hardware.camera import Frame, FrameSource, ImageSource, open_source
from edge_app.imageio import IMAGE_EXTS, write_image
from edge_app.recognizer import Recognition, Recognizer


def annotate(image: np.ndarray, recs: list[Recognition]) -> np.ndarray:
    """Boxes (green known, red unknown, grey low quality), name and score above each face."""
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 400))
    for r in recs:
        x0, y0, x1, y1 = (round(v) for v in r.face.detection.box)
        if not r.face.quality.passed:
            colour = (160, 160, 160)
        else:
            colour = (0, 200, 0) if r.granted else (255, 140, 0) if r.known else (220, 30, 30)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick)
        label = r.name if r.face.quality.passed else "low quality: " + ",".join(r.face.quality.reasons)
        if r.score is not None:
            label += f" {r.score:.2f}"
        if r.face.masked is not None:
            label += " mask" if r.masked else " no mask"
        if r.live is False:
            label += " SPOOF"
        scale = 0.4 * thick
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = max(th + base, y0 - 2)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw, ty), colour, -1)
        cv2.putText(out, label, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return out


class Annotator:
    """Writes annotated frames: one image, a folder of images, or a video."""

    def __init__(self, out: Path, source: FrameSource, every: int = 1) -> None:
        self.out = out
        self.to_video = not isinstance(source, ImageSource)
        self.folder = isinstance(source, ImageSource) and len(source) > 1
        # Only every N-th frame is written: at the input's rate the output would play N times fast.
        self.fps = (source.fps or 10.0) / every
        self._writer: cv2.VideoWriter | None = None
        if not self.to_video and not self.folder and out.suffix.lower() not in IMAGE_EXTS:
            raise SourceError(f"--annotate {out}: give an image file name (.jpg, .png) for an image input")

    def write(self, frame: Frame, recs: list[Recognition]) -> None:
        img = annotate(frame.image, recs)
        if not self.to_video:
            target = self.out / Path(frame.origin).name if self.folder else self.out
            write_image(target, img)
            return
        if self._writer is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            h, w = img.shape[:2]
            self._writer = cv2.VideoWriter(str(self.out), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise SourceError(f"cannot write video {self.out} (unsupported extension? use .mp4 or .avi)")
        self._writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def _where(frame: Frame, video: bool) -> str:
    return frame.origin + (f"#{frame.index}" if video else "")


def _line(frame: Frame, multi: bool, r: Recognition) -> str:
    where = _where(frame, multi)
    score = "-" if r.score is None else f"{r.score:.3f}"
    box = ",".join(str(round(v)) for v in r.face.detection.box)
    quality = "ok" if r.face.quality.passed else "low:" + ",".join(r.face.quality.reasons)
    return (f"{where}\t{r.name}\tscore={score}\tmask={r.mask_text}\tlive={r.live_text}\tbox={box}\tquality={quality}"
            f"\tdecision={'granted' if r.granted else 'refused'}:{r.reason.value}")


def open_input(spec: str, recursive: bool) -> FrameSource:
    """The recognize input; a folder's sub-folders are read only with --recursive, and said so otherwise."""
    path = Path(spec)
    if path.is_dir():
        if recursive:
            return ImageSource(path, recursive=True)
        for sub in subfolders(path):
            say(f"skipped sub-folder {sub} (use --recursive)")
    return open_source(spec)


def cmd_recognize(args: argparse.Namespace) -> int:
    with existing_gallery(args) as g:  # before the models load: a typo in --db fails at once
        ms = models(args)
        matcher = Matcher.from_gallery(g, ms.embedder_sha)
    pipe = pipeline(args, ms, liveness=liveness_on(args))
    if matcher.stale:
        say(f"warning: {matcher.stale} template(s) in {args.db} were made by another embedder model "
            "and are ignored; re-enrol those persons")
    if not matcher.n_templates:
        say(f"note: gallery {args.db} has no templates; every face will be unknown")
    rec = Recognizer(pipe, matcher, replace(policy(args, ms), require_live=bool(args.require_live)))
    source = open_input(args.source, args.recursive)
    video = not isinstance(source, ImageSource)
    annotator = Annotator(args.annotate, source, args.every) if args.annotate else None
    n_frames = n_faces = n_known = 0
    try:
        with source:
            total = len(source) // args.every if len(source) else None
            if args.max_frames:
                total = min(total, args.max_frames) if total else args.max_frames
            for frame in progress(frames(source, args.every, args.max_frames), total, "recognize", "frame"):
                recs = rec.recognize(frame.image)
                n_frames += 1
                n_faces += len(recs)
                n_known += sum(r.known for r in recs)
                if args.json:
                    emit_json({"origin": frame.origin, "frame": frame.index, "time": round(frame.timestamp, 3),
                               "faces": [r.as_dict() for r in recs]})
                else:
                    for r in recs:
                        print(_line(frame, video, r), flush=True)
                    if not recs:  # a frame of a video too: silence would look like a hang or a crash
                        print(_where(frame, video) + "\tno face", flush=True)
                if annotator:
                    annotator.write(frame, recs)
    finally:
        if annotator:
            annotator.close()
    errors = getattr(source, "errors", [])
    for _path, why in errors:
        say(f"skipped {why}")
    say(f"{n_frames} frame(s), {n_faces} face(s), {n_known} recognised"
        + (f", {len(errors)} unreadable file(s) skipped" if errors else ""))
    return EXIT_PARTIAL if errors else EXIT_OK


def frames(source: FrameSource, every: int, max_frames: int | None) -> Iterator[Frame]:
    n = 0
    for frame in source:
        if frame.index % every:
            continue
        yield frame
        n += 1
        if max_frames and n >= max_frames:
            return
