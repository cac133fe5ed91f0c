"""Fixtures of the daemon tests: scenes made from real face photos and a gallery with Obama enrolled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_app.gallery.store import Gallery
from tests.conftest import kiosk_frame


@pytest.fixture(scope="module")
def scenes(pipeline, rgb):  # type: ignore[no-untyped-def]
    """An empty hall, and each person walking up to the camera (the face grows frame by frame)."""
    hall = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(hall, (200, 50), (440, 480), (120, 110, 100), -1)  # a door frame, not a face

    def walk(photo: str, n: int = 8) -> list[np.ndarray]:
        img = rgb(photo)
        box = pipeline.detector.detect(img)[0].box
        return [kiosk_frame(img, box, face_fraction=0.28 + 0.01 * i) for i in range(n)]

    return {"hall": hall, "walk": walk}


def obama_gallery(path, pipeline, model_set, rgb):  # type: ignore[no-untyped-def]
    """A gallery file at `path` with Obama enrolled from one photo."""
    with Gallery(path) as g:
        g.add_person("Obama")
        e = pipeline.process(rgb("obama.jpg"), max_faces=1)[0].embedding
        g.add_templates("Obama", e[None], model_sha=model_set.embedder_sha, masked=False)
    return path


@pytest.fixture
def gallery_db(tmp_path, pipeline, model_set, rgb):  # type: ignore[no-untyped-def]
    return obama_gallery(tmp_path / "gallery.db", pipeline, model_set, rgb)
