"""Photos -> enrolment templates. Shared by `edge-app enroll` and (later) `edge-admin`.

A photo is accepted only when it holds exactly one face that passes the quality gates: a
template from a blurred, tiny or turned face would make every later match of that person worse.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.errors import EdgeAppError, InputNotFoundError
from edge_app.imageio import IMAGE_EXTS, read_image
from edge_app.vision.pipeline import Face, Pipeline


class PhotoStatus(enum.Enum):
    OK = "ok"
    UNREADABLE = "unreadable"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    LOW_QUALITY = "low_quality"


@dataclass(frozen=True)
class PhotoResult:
    path: Path
    status: PhotoStatus
    detail: str
    face: Face | None = None

    @property
    def embedding(self) -> np.ndarray | None:
        return None if self.face is None else self.face.embedding


def expand_photos(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted). Missing paths are an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputNotFoundError(f"no such file or folder: {p}")
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS))
        else:
            out.append(p)
    return out


def embed_photo(pipeline: Pipeline, path: Path) -> PhotoResult:
    try:
        rgb = read_image(path)
    except EdgeAppError as exc:
        return PhotoResult(path, PhotoStatus.UNREADABLE, str(exc))
    faces = pipeline.process(rgb)
    if not faces:
        return PhotoResult(path, PhotoStatus.NO_FACE, "no face found")
    if len(faces) > 1:
        return PhotoResult(path, PhotoStatus.MULTIPLE_FACES,
                           f"{len(faces)} faces found; an enrolment photo must show one person")
    face = faces[0]
    if not face.quality.passed:
        return PhotoResult(path, PhotoStatus.LOW_QUALITY,
                           "face fails quality gates: " + ", ".join(face.quality.reasons), face)
    return PhotoResult(path, PhotoStatus.OK, "ok", face)
