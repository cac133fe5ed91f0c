"""Bad inputs give clear errors that name what was wrong."""

from __future__ import annotations

import pytest

from edge_app.errors import EdgeAppError, ImageError, InputNotFoundError, ModelError, ModelNotFoundError
from edge_app.imageio import read_image
from edge_app.models import ModelSet
from tests.conftest import edit_manifest


def test_bundled_models_verify(model_set):
    for name in ("face_detector", "face_detector_full", "face_embedder", "face_embedder_edgeface", "face_embedder_reid",
                 "face_embedder_dlib", "mask_classifier"):
        info = model_set.info(name)
        assert info.path.is_file() and len(info.sha256) == 64
    assert model_set.embedder == "sface+edgeface+reid"  # the default: three networks fused for bare faces
    assert ModelSet(embedder="sface").embedder_sha == model_set.info("face_embedder").sha256
    assert ModelSet(embedder="dlib").embedder_sha == model_set.info("face_embedder_dlib").sha256


def test_unknown_or_absent_embedder(models_copy):
    with pytest.raises(ModelError, match="unknown embedder 'arcface'"):
        ModelSet(models_copy, embedder="arcface")
    edit_manifest(models_copy, lambda m: m["models"].pop("face_embedder_dlib"))
    with pytest.raises(ModelNotFoundError, match="no dlib embedder"):
        ModelSet(models_copy, embedder="dlib")


def test_missing_manifest(tmp_path):
    with pytest.raises(ModelNotFoundError, match="manifest not found") as e:
        ModelSet(tmp_path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, EdgeAppError)


def test_missing_model_file_is_named(models_copy):
    (models_copy / "face_embedder.tflite").unlink()
    with pytest.raises(ModelNotFoundError, match="face_embedder.tflite"):
        ModelSet(models_copy).pipeline()


def test_corrupt_model_fails_the_checksum(models_copy):
    p = models_copy / "face_detector.tflite"
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="face_detector.tflite: sha256 .* does not match"):
        ModelSet(models_copy).pipeline()


def test_garbage_model_with_matching_manifest_cannot_load(models_copy):
    p = models_copy / "face_detector.tflite"
    p.write_bytes(b"not a flatbuffer at all" * 10)
    from edge_app.models import file_sha256

    edit_manifest(models_copy, lambda m: m["models"]["face_detector"].update(sha256=file_sha256(p)))
    with pytest.raises(ModelError, match="cannot load"):
        ModelSet(models_copy).pipeline()


def test_broken_manifest(models_copy):
    (models_copy / "MANIFEST.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a valid model manifest"):
        ModelSet(models_copy)


def test_unknown_detector_kind(model_set):
    with pytest.raises(ModelError, match="unknown detector 'tiny'"):
        model_set.pipeline(detector="tiny")


def test_corrupt_image_names_the_file(tmp_path, faces_dev):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes((faces_dev / "obama.jpg").read_bytes()[:300])  # a truncated JPEG header
    with pytest.raises(ImageError, match="broken.jpg"):
        read_image(bad)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="notes.png.*corrupt"):
        read_image(text)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)


def test_missing_image(tmp_path):
    with pytest.raises(InputNotFoundError, match="nope.jpg") as e:
        read_image(tmp_path / "nope.jpg")
    assert isinstance(e.value, FileNotFoundError)


def test_each_model_file_is_hashed_once_while_it_stays_as_it_was(models_copy, monkeypatch):
    """A pipeline loads the eye model and the fused embedder's two networks twice (one-thread copies): their files
    are checked once; a file changed after that is checked again and refused."""
    import edge_app.models as models

    hashed: list[str] = []
    real = models.file_sha256
    monkeypatch.setattr(models, "file_sha256", lambda path: hashed.append(path.name) or real(path))
    ms = ModelSet(models_copy)
    ms.pipeline(num_threads=2)
    assert sorted(hashed) == sorted(set(hashed)) and "face_embedder_edgeface.tflite" in hashed
    p = models_copy / "face_embedder_edgeface.tflite"
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="face_embedder_edgeface.tflite: sha256 .* does not match"):
        ms.load("face_embedder_edgeface")
