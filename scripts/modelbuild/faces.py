"""Real face material for the build: images from the shared data folder, dlib chips from them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .dlib_ref import DlibFace, DlibReference

log = logging.getLogger(__name__)

MAX_SIDE = 800  # HOG time grows with area; the faces in these sets are large enough at 800 px


def read_rgb(path: Path, max_side: int = MAX_SIDE) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        log.warning("unreadable image skipped: %s", path)
        return None
    h, w = bgr.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def largest_faces(detector: Any, files: list[Path]) -> Iterator[tuple[np.ndarray, Any]]:
    """(image, detection of its largest face) for each image in which the detector finds a face."""
    for path in files:
        rgb = read_rgb(path)
        if rgb is None:
            continue
        found = sorted(detector.detect(rgb), key=lambda d: d.width * d.height, reverse=True)
        if found:
            yield rgb, found[0]


def is_held_apart(path: Path) -> bool:
    """Deterministic half split by file content hash: calibration never sees these images."""
    return hashlib.sha256(path.read_bytes()).digest()[0] % 2 == 1


@dataclass
class ChipSet:
    chips: np.ndarray  # (n, 150, 150, 3) uint8
    descriptors: np.ndarray  # (n, 128) dlib float descriptors
    sources: list[str]
    held_apart: np.ndarray  # (n,) bool


def iter_faces(ref: DlibReference, files: list[Path], desc: str) -> Iterator[tuple[Path, np.ndarray, list[DlibFace]]]:
    for path in tqdm(files, desc=desc, unit="img"):
        rgb = read_rgb(path)
        if rgb is None:
            continue
        yield path, rgb, ref.faces(rgb, upsample=1)


def collect_chips(ref: DlibReference, files: list[Path]) -> ChipSet:
    chips, descs, sources, held = [], [], [], []
    for path, _rgb, faces in iter_faces(ref, files, "dlib chips"):
        for face in faces:
            chips.append(face.chip)
            descs.append(ref.descriptor(face.chip))
            sources.append(path.name)
            held.append(is_held_apart(path))
    return ChipSet(np.array(chips, np.uint8), np.array(descs, np.float32), sources, np.array(held, bool))
