"""The shipped anti-spoofing networks on real faces and real attacks (no mocks, no synthetic scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_app.config import DEFAULT
from edge_app.errors import ModelError, ModelNotFoundError
from edge_app.imageio import read_image
from edge_app.models import LIVENESS, ModelSet
from edge_app.vision.liveness import LivenessNet
from edge_app.vision.runtime import TFLiteModel
from tests.conftest import DATA

SAMPLES = DATA.parent / "reference" / "minifasnet" / "sample"
THRESHOLD = DEFAULT.liveness.threshold


@pytest.fixture(scope="module")
def live_pipeline(model_set):  # type: ignore[no-untyped-def]
    return model_set.pipeline(num_threads=2, liveness=True)


def _sample(name: str) -> np.ndarray:
    if not (SAMPLES / name).is_file():
        pytest.fail(f"MiniFASNet sample images not found in {SAMPLES}; set EDGE_APP_DATA", pytrace=False)
    return read_image(SAMPLES / name)


def _p_live(pipe, rgb: np.ndarray) -> float | None:  # type: ignore[no-untyped-def]
    faces = pipe.process(rgb, max_faces=1)
    return faces[0].live_probability if faces else None


def test_upstream_samples_real_is_live_and_both_spoofs_are_not(live_pipeline) -> None:  # type: ignore[no-untyped-def]
    assert _p_live(live_pipeline, _sample("image_T1.jpg")) >= THRESHOLD
    for spoof in ("image_F1.jpg", "image_F2.jpg"):
        p = _p_live(live_pipeline, _sample(spoof))
        assert p is not None and p < THRESHOLD, (spoof, p)


def test_real_portraits_of_faces_dev_are_live(live_pipeline, rgb) -> None:  # type: ignore[no-untyped-def]
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        p = _p_live(live_pipeline, rgb(name))
        assert p is not None and p >= THRESHOLD, (name, p)


def test_real_masked_faces_are_not_taken_for_attacks(live_pipeline) -> None:  # type: ignore[no-untyped-def]
    """Masks must not look like attacks: every real masked photo (tight 160x160 crops, as they are) in which
    the detector finds a face. Measured BPCER at the shipped threshold: 6.7 % of 105 with the single-pass
    detector, 9.0 % of 167 with the cascade, which also finds the harder (more occluded, blurred) faces
    (docs/liveness.md); this bound fails if a change makes masked faces look more like attacks."""
    files = sorted((DATA / "real-masked-dev").glob("*/masked/*.jpg"))
    assert len(files) >= 150, f"real masked photos not found under {DATA / 'real-masked-dev'}"
    scores = [p for p in (_p_live(live_pipeline, read_image(f)) for f in files) if p is not None]
    assert len(scores) >= 100
    refused = sum(p < THRESHOLD for p in scores)
    assert refused <= 0.10 * len(scores), (refused, len(scores), sorted(scores)[:8])
    assert float(np.median(scores)) >= 0.9  # most are judged live with a wide margin


def test_pipeline_without_liveness_leaves_faces_unchecked(pipeline, rgb) -> None:  # type: ignore[no-untyped-def]
    assert pipeline.process(rgb("obama.jpg"), max_faces=1)[0].live_probability is None


def test_manifest_records_both_networks_with_their_crop_and_agreement(model_set) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((model_set.dir / "MANIFEST.json").read_text())
    scales = []
    for name in LIVENESS:
        e = manifest["models"][name]
        model_set.info(name)  # the sha256 verifies
        assert e["licence"] == "Apache-2.0" and e["source"]["commit"].startswith("b6d5f04")
        assert e["input"]["normalisation"].startswith("BGR") and e["input"]["shape"] == [1, 80, 80, 3]
        assert e["agreement"]["tflite_vs_pytorch"]["float32"]["max_abs_logit_diff"] <= 1e-4
        scales.append(e["input"]["crop_scale"])
    assert scales == [2.7, 4.0]


def test_a_model_set_without_the_networks_says_how_to_get_them(tmp_path: Path, model_set) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((model_set.dir / "MANIFEST.json").read_text())
    for name in LIVENESS:
        del manifest["models"][name]
    for e in manifest["models"].values():
        (tmp_path / e["file"]).symlink_to(model_set.dir / e["file"])
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    ms = ModelSet(tmp_path)
    assert not ms.has_liveness
    with pytest.raises(ModelNotFoundError, match=r"liveness needs liveness_v2, liveness_v1se.*enabled = false"):
        ms.pipeline(liveness=True)
    ms.pipeline(liveness=False)  # without liveness the rest still loads


def test_a_manifest_without_crop_scale_is_refused_by_name(tmp_path: Path, model_set) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((model_set.dir / "MANIFEST.json").read_text())
    del manifest["models"]["liveness_v1se"]["input"]["crop_scale"]
    for e in manifest["models"].values():
        (tmp_path / e["file"]).symlink_to(model_set.dir / e["file"])
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="liveness_v1se: no usable input.crop_scale"):
        ModelSet(tmp_path).liveness()


def test_a_wrong_network_is_rejected_with_its_shape(model_set) -> None:  # type: ignore[no-untyped-def]
    mask = TFLiteModel(model_set.info("mask_classifier").path)
    with pytest.raises(ValueError, match="mask_classifier.tflite: expected a float32 input of 1x80x80x3"):
        LivenessNet(mask, 2.7)


def test_both_networks_side_by_side_give_the_same_scores(live_pipeline) -> None:  # type: ignore[no-untyped-def]
    import threading

    from edge_app.vision.liveness import LivenessChecker

    par = live_pipeline.liveness
    assert par.parallel
    seq = LivenessChecker(par.nets, parallel=False)
    for name in ("image_F1.jpg", "image_T1.jpg", "image_F2.jpg"):
        rgb = _sample(name)
        box = live_pipeline.process(rgb, max_faces=1)[0].detection.box
        assert par.scores(rgb, box) == seq.scores(rgb, box), name
    img = _sample("image_F1.jpg")
    assert any(t.name.startswith("liveness") for t in threading.enumerate())  # the second network's thread
    with pytest.raises(ValueError, match="expected an RGB uint8 frame"):
        par.scores(img.astype(np.float32), box)
    with pytest.raises(ValueError, match="empty face box"):  # whichever thread meets it, the caller sees it
        par.scores(img, (10.0, 10.0, 10.0, 30.0))
