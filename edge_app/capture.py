"""Enrolment shots from the door's own camera: `edge-app enroll --camera` (the service stopped) and, while the
kiosk runs, the signed MQTT command `gallery.capture` (the daemon offers each frame it has looked at).

A person is best recognised by the camera, light and mask they meet at the door (docs/accuracy.md: one real masked
photo per person next to the bare ones). A shot is a frame with exactly one face that passes the quality gates and,
when liveness is checked, is judged live (a photo held up by mistake is not enrolled); shots are ``MIN_GAP_S``
apart, so the person can move a little between them. A shot with a mask on gives a masked template, a bare one its
plain template and its synthetic-masked ones, as every enrolment path files them (enrol.templates_of).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.enrol import PhotoResult, PhotoStatus, PhotoTemplates, embed_rgb, lacks_bare_face, photo_seed
from edge_app.errors import GalleryInputError
from edge_app.gallery.store import Gallery
from edge_app.vision.pipeline import Face, Pipeline

log = logging.getLogger(__name__)

MIN_GAP_S = 0.5  # between two shots: a little head movement, not three copies of one frame

PASSED_OVER = {"no_face": "without a face", "several_faces": "with several faces", "low_quality": "of low quality",
               "not_live": "not judged live", "someone_else": "recognised as another enrolled person"}


def shot_problem(faces: Sequence[Face], live_checked: bool, live_threshold: float) -> str | None:
    """Why a frame with these faces is no enrolment shot (a key of PASSED_OVER), or None."""
    if not faces:
        return "no_face"
    if len(faces) > 1:
        return "several_faces"
    if not faces[0].quality.passed:
        return "low_quality"
    if live_checked and (faces[0].live_probability or 0.0) < live_threshold:
        return "not_live"
    return None


def describe(passed: Counter[str]) -> str:
    return ", ".join(f"{n} {PASSED_OVER.get(k, k)}" for k, n in passed.most_common()) or "none"


@dataclass
class Capture:
    """Shots of one person taken from the frames offered until ``shots`` are taken or ``deadline`` (the frames'
    clock) has passed."""

    name: str
    shots: int
    deadline: float
    n_masked: int  # synthetic-masked templates per bare shot
    live_threshold: float
    taken: list[PhotoResult] = field(default_factory=list)
    passed: Counter[str] = field(default_factory=Counter)
    last: float | None = None

    def offer(self, pipeline: Pipeline, rgb: np.ndarray, faces: Sequence[Face], t: float, origin: str) -> bool:
        """Look at one frame (its faces as the pipeline found them); True when it became a shot."""
        if self.last is not None and t - self.last < MIN_GAP_S:
            return False
        why = shot_problem(faces, pipeline.liveness is not None, self.live_threshold)
        if why is None:
            r = embed_rgb(pipeline, rgb, Path(origin), self.n_masked, photo_seed(rgb.tobytes()), faces)
            if r.status is PhotoStatus.OK:
                self.taken.append(r)
                self.last = t
                return True
            why = r.status.value  # embed_rgb's own checks, should they ever go beyond shot_problem's
        self.passed[why] += 1
        return False

    def pass_over(self, why: str) -> None:
        """A frame the caller rejected for a reason of its own (the daemon: the face is somebody else)."""
        self.passed[why] += 1

    def done(self, t: float) -> bool:
        return len(self.taken) >= self.shots or t > self.deadline


def store(gallery: Gallery, capture: Capture, model_sha: str) -> dict[str, Any]:
    """The shots' templates added to the person (created if new), in one transaction. Raises GalleryInputError
    when there is no shot, or only masked shots of a person without a bare-face template."""
    if not capture.taken:
        raise GalleryInputError(f"no usable frame of {capture.name!r} (frames passed over: "
                                f"{describe(capture.passed)}); nothing enrolled")
    t = PhotoTemplates.of(capture.taken)
    with gallery.write_transaction():
        if lacks_bare_face(gallery, capture.name, len(t.plain), replacing=False):
            raise GalleryInputError(f"every shot of {capture.name!r} shows a mask and they have no bare-face "
                                    "template; take bare shots first; nothing enrolled")
        new = not any(p.name == capture.name for p in gallery.list_persons())
        if new:
            gallery.add_person(capture.name)
        ids = gallery.add_templates(capture.name, t.embeddings, model_sha=model_sha, masked=t.masked_flags,
                                    source=f"camera capture, {len(capture.taken)} shot(s)")
    return {"name": capture.name, "shots": len(capture.taken), "templates": len(ids),
            "plain_templates": len(t.plain), "masked_templates": len(t.masked), "new_person": new,
            "passed_over": dict(capture.passed), "gallery_version": gallery.gallery_version}
