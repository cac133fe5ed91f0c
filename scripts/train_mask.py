#!/usr/bin/env python3
"""Train the mask-status classifier and ship it as full-int8 models_tflite/mask_classifier.tflite.

    pip install -e '.[build]'
    python scripts/train_mask.py [--data ../shared/data] [--epochs 30] [--surround 1.0] [--no-dev]
                                 [--out models_tflite] [--json out/train_mask.json]

Data (``$EDGE_APP_DATA``): masks-chandrikadeb7 with_mask / without_mask without RMFRD's photos
(scripts/common.RMFRD_NAME: its other people judge the product), real-masked-dev's masked and unmasked
photos, plus synthetic masks (edge_app.vision.synth_mask) drawn on the unmasked photos. Each photo's largest
face is aligned on the eyes (as on the device) into dlib's 150x150 chip geometry; the classifier
sees it at 64x64. Most of these photos are tight crops, so their chip is black beyond the photo; every face is
added again on a random background (``--surround``), since at the door the chip shows neck, clothes or a wall
there. Validation: 20 % of the photo *groups* (scripts/facedata.py: identity, copies,
perceptual near-duplicates), so no image and no near-copy of one is on both sides; synthetic masks
on validation faces are drawn with another seed from another photo set.

Reports accuracy, the confusion matrix (real masks, synthetic masks, no mask) and latency of the
int8 model against the float Keras model (the validation faces also on a random background), the
real-masked-dev people held apart (measure their walk-ups with scripts/detection_eval.py), and writes the
manifest entry. Exit codes: 0 done, 2 data missing, 1 other failure. About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.models import ModelSet, file_sha256  # noqa: E402
from edge_app.vision.align import TEMPLATE_POINTS, ChipGeometry, align  # noqa: E402
from edge_app.vision.mask import MaskClassifier  # noqa: E402
from edge_app.vision.runtime import TFLiteModel  # noqa: E402
from edge_app.vision.synth_mask import draw_mask, random_style  # noqa: E402
from scripts import facedata  # noqa: E402
from scripts.common import DATA_ROOT, UsageError, run_main  # noqa: E402
from scripts.modelbuild.quant import full_int8, samples  # noqa: E402

log = logging.getLogger("train_mask")

INPUT = 64
VAL_FRACTION = 0.2
SEED = 20261124


def synthetic(faces: list[facedata.FaceRecord], geometry: ChipGeometry, seed: int,
              surround: float = 0.0) -> np.ndarray:
    """One synthetic-masked chip per unmasked face, random style, drawn on the whole photo; with ``surround``
    the share of them whose photo is first placed on a random background (``surrounded``)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in faces:
        img = draw_mask(f.rgb, f.keypoints, random_style(rng), rng)
        kps = f.keypoints
        if rng.random() < surround:
            img, kps = surrounded(img, kps, faces, rng)
        out.append(align(img, kps, geometry, eyes_only=True))
    return np.array(out, np.uint8).reshape(-1, geometry.size, geometry.size, 3)


def surrounded(rgb: np.ndarray, keypoints: np.ndarray, others: list[facedata.FaceRecord],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The photo placed on a larger random background: a plain or shaded wall, or a blurred, enlarged piece of
    another photo (clothes, hair, a room). Most training photos are tight crops, so their chip is black below the
    chin; at the door, and in a photo placed in a frame, the chip shows whatever is there, and a classifier that
    learned "black below the chin" calls a bare face over a plain coloured area masked (27.5 % of the bare frames
    of real-masked-dev placed in a 640x480 frame, against 2.3 % of the crops)."""
    h, w = rgb.shape[:2]
    pad = int(0.6 * max(h, w))
    ch, cw = h + 2 * pad, w + 2 * pad
    kind = rng.integers(3)
    if kind == 0:  # a plain wall, shaded, with sensor noise
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0.0, 1.0, cw)[None, :, None] if rng.random() < 0.5 else np.linspace(0.0, 1.0, ch)[:, None, None]
        bg = np.broadcast_to(c0 * (1 - t) + c1 * t, (ch, cw, 3)) + rng.normal(0, rng.uniform(0, 6), (ch, cw, 3))
    elif kind == 1:  # a piece of another photo, enlarged and blurred: textured, face-free at this scale
        o = others[int(rng.integers(len(others)))].rgb
        oh, ow = o.shape[:2]
        y0, x0 = int(rng.integers(0, max(1, oh // 2))), int(rng.integers(0, max(1, ow // 2)))
        piece = o[y0:y0 + max(8, oh // 3), x0:x0 + max(8, ow // 3)]
        bg = cv2.GaussianBlur(cv2.resize(piece, (cw, ch), interpolation=cv2.INTER_LINEAR), (0, 0), 3.0)
    else:  # two colours split at a random height: a shirt or a collar under the chin
        bg = np.empty((ch, cw, 3), np.float64)
        cut = int(rng.uniform(0.4, 0.9) * ch)
        bg[:cut] = rng.uniform(0, 255, 3)
        bg[cut:] = rng.uniform(0, 255, 3)
        bg += rng.normal(0, 3, bg.shape)
    canvas = np.clip(bg, 0, 255).astype(np.uint8)
    canvas[pad:pad + h, pad:pad + w] = rgb
    return canvas, np.asarray(keypoints, np.float64) + pad


def with_surround(faces: list[facedata.FaceRecord], geometry: ChipGeometry, share: float,
                  seed: int) -> list[facedata.FaceRecord]:
    """Copies of ``share`` of the faces (drawn at random) whose chip shows a random surround (``surrounded``)."""
    rng = np.random.default_rng(seed)
    return [replace(f, chip=align(*surrounded(f.rgb, f.keypoints, faces, rng), geometry, eyes_only=True))
            for f in faces if rng.random() < share]


def source(face: facedata.FaceRecord, kind: str) -> str:
    return kind if facedata.dev_identity(face.path) is None else f"dev_{kind}"


def labelled(real: list[facedata.FaceRecord], synth: np.ndarray, plain: list[facedata.FaceRecord],
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chips, masked label, kind) of real-masked faces, synthetic-masked chips and bare faces; the kind says
    where a face comes from (real-masked-dev's are reported apart), the label only what it shows."""
    chips = np.concatenate([np.array([f.chip for f in real]), synth, np.array([f.chip for f in plain])])
    kinds = np.array([source(f, "real_mask") for f in real] + ["synthetic_mask"] * len(synth)
                     + [source(f, "no_mask") for f in plain])
    return chips, np.array([True] * (len(real) + len(synth)) + [False] * len(plain)), kinds


def small(chips: np.ndarray) -> np.ndarray:
    return np.array([cv2.resize(c, (INPUT, INPUT), interpolation=cv2.INTER_AREA) for c in chips],
                    np.uint8).reshape(-1, INPUT, INPUT, 3)


def build_model(tf: Any) -> Any:
    """A small depthwise-separable CNN: about 20 k parameters, well under a millisecond int8."""
    k = tf.keras
    inp = k.Input((INPUT, INPUT, 3), dtype="float32")
    x = k.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = k.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = k.layers.BatchNormalization(momentum=0.9)(x)
    x = k.layers.ReLU()(x)
    for filters in (32, 64, 96):
        x = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = k.layers.BatchNormalization(momentum=0.9)(x)
        x = k.layers.ReLU()(x)
        x = k.layers.Conv2D(filters, 1, use_bias=False)(x)
        x = k.layers.BatchNormalization(momentum=0.9)(x)
        x = k.layers.ReLU()(x)
        x = k.layers.MaxPooling2D(2)(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    x = k.layers.Dropout(0.3)(x)
    out = k.layers.Dense(1, activation="sigmoid", name="p_mask")(x)
    return k.Model(inp, out)


def augmenter(tf: Any) -> Any:
    k = tf.keras
    return k.Sequential([
        k.layers.RandomFlip("horizontal"),
        k.layers.RandomTranslation(0.06, 0.06, fill_mode="nearest"),
        k.layers.RandomRotation(0.04, fill_mode="nearest"),
        k.layers.RandomZoom(0.08, fill_mode="nearest"),
        k.layers.RandomBrightness(0.25, value_range=(0, 255)),
        k.layers.RandomContrast(0.3),
    ])


def train(tf: Any, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, epochs: int) -> Any:
    tf.keras.utils.set_random_seed(SEED)
    model = build_model(tf)
    aug = augmenter(tf)
    pos = float(y.mean())
    weights = {0: 0.5 / (1 - pos), 1: 0.5 / pos}  # balance real+synthetic masks against plain faces
    ds = (tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y.astype(np.float32)))
          .shuffle(len(x), seed=SEED).batch(64)
          .map(lambda a, b: (tf.clip_by_value(aug(a, training=True), 0.0, 255.0), b)).prefetch(2))
    val = tf.data.Dataset.from_tensor_slices((xv.astype(np.float32), yv.astype(np.float32))).batch(256)
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    sched = tf.keras.callbacks.LearningRateScheduler(lambda e: 3e-3 * 0.5 * (1 + np.cos(np.pi * e / epochs)))
    model.fit(ds, validation_data=val, epochs=epochs, class_weight=weights, callbacks=[sched], verbose=2)
    return model


def to_int8(tf: Any, model: Any, calib: np.ndarray) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    full_int8(conv, samples(calib), tf.uint8)
    return bytes(conv.convert())


def confusion(p: np.ndarray, y: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    pred = p >= 0.5
    out: dict[str, Any] = {"accuracy": round(float((pred == y).mean()), 4), "n": len(y),
                           "matrix": {"mask_as_mask": int((pred & y).sum()), "mask_as_no_mask": int((~pred & y).sum()),
                                      "no_mask_as_mask": int((pred & ~y).sum()),
                                      "no_mask_as_no_mask": int((~pred & ~y).sum())}}
    for kind in ("real_mask", "synthetic_mask", "no_mask", "dev_real_mask", "dev_no_mask"):
        sel = kinds == kind
        if sel.any():
            out[kind] = {"n": int(sel.sum()), "accuracy": round(float((pred[sel] == y[sel]).mean()), 4)}
    return out


def latency(model: MaskClassifier, chips: np.ndarray, runs: int = 300) -> dict[str, float]:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        model.probability(chips[i % len(chips)])
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": round(float(np.median(times)), 3), "p95_ms": round(float(np.percentile(times, 95)), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        files = facedata.mask_set_files(args.data) + ([] if args.no_dev else facedata.dev_files(args.data))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # The classifier sees dlib's 150 px chip whatever the embedder: its padding shows the whole lower
    # face down to the chin, where a mask is. The geometry goes into the manifest entry.
    ms = ModelSet(args.out)
    geometry = ms.chip_geometry("face_embedder_dlib")
    pipe = ms.pipeline(num_threads=2, mask=False)
    faces, skipped = facedata.collect(pipe, geometry, files,
                                      lambda it: tqdm(it, total=len(files), desc="faces", unit="img"),
                                      facedata.dev_identity)
    keys = facedata.group_keys(faces)
    is_val = facedata.split_by_group(keys, VAL_FRACTION)
    log.info("%d faces (%d images without one), %d groups, %d validation faces", len(faces), len(skipped),
             len(set(keys)), int(is_val.sum()))

    def part(val: bool, masked: bool) -> list[facedata.FaceRecord]:
        return [f for f, v in zip(faces, is_val, strict=True) if v == val and f.masked == masked]

    sets = {}
    for val in (False, True):
        real, plain = part(val, True), part(val, False)
        seed = SEED + (1 if val else 0)
        synth = synthetic(plain, geometry, seed, surround=0.0 if val else args.surround)
        if not val and args.surround:
            real = real + with_surround(real, geometry, args.surround, seed + 10)
            plain = plain + with_surround(plain, geometry, args.surround, seed + 20)
        sets[val] = labelled(real, synth, plain)
    (xc, y, _), (xvc, yv, kv) = sets[False], sets[True]
    # The validation faces again, every one on a random surround: what a face in a wider frame shows.
    real_v, plain_v = part(True, True), part(True, False)
    xsc, ys, ks = labelled(with_surround(real_v, geometry, 1.0, SEED + 31),
                           synthetic(plain_v, geometry, SEED + 1, surround=1.0),
                           with_surround(plain_v, geometry, 1.0, SEED + 32))
    x, xv = small(xc), small(xvc)
    log.info("train %d (%d masked), validation %d (%d masked)", len(x), int(y.sum()), len(xv), int(yv.sum()))

    model = train(tf, x, y, xv, yv, args.epochs)
    p_float = model.predict(xv.astype(np.float32), verbose=0)[:, 0]
    path = args.out / "mask_classifier.tflite"
    rng = np.random.default_rng(SEED)
    path.write_bytes(to_int8(tf, model, x[rng.choice(len(x), min(500, len(x)), replace=False)]))
    clf = MaskClassifier(TFLiteModel(path, num_threads=1))
    p_int8 = np.array([clf.probability(c) for c in xvc], np.float32)
    p_surround = np.array([clf.probability(c) for c in xsc], np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.tflite"
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        float_path.write_bytes(conv.convert())
        float_clf = MaskClassifier(TFLiteModel(float_path, num_threads=1))
        lat_float = latency(float_clf, xvc)
    lat_int8 = latency(clf, xvc)
    report = {
        "validation_int8": confusion(p_int8, yv, kv),
        "validation_float_keras": confusion(p_float, yv, kv),
        "validation_int8_surrounded": confusion(p_surround, ys, ks),
        "int8_vs_float_max_abs_diff": round(float(np.abs(p_int8 - p_float).max()), 4),
        "latency_1_thread": {"int8": lat_int8, "float": lat_float,
                             "int8_speedup": round(lat_float["median_ms"] / lat_int8["median_ms"], 2)},
        "train": {"n": len(x), "masked": int(y.sum()), "real_masks": int((sets[False][2] == "real_mask").sum()),
                  "surround_share": args.surround, "real_masked_dev": not args.no_dev},
        "images_without_face": len(skipped),
        # real-masked-dev's people held apart: measure the classifier on their walk-ups (detection_eval.py)
        "validation_dev_people": sorted({f.identity for f, v in zip(faces, is_val, strict=True) if f.identity and v}),
    }
    spec = clf.model.input
    entry = {
        "file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
        "description": "mask status: probability that a worn face mask covers nose and mouth",
        "input": {"shape": list(spec.shape), "dtype": "uint8",
                  "quantization": {"scale": spec.scale, "zero_point": spec.zero_point},
                  "normalisation": f"the eyes-aligned {geometry.size}x{geometry.size} chip (geometry below) resized "
                                   f"to {INPUT}x{INPUT} (INTER_AREA), raw RGB 0..255; the model rescales to [-1, 1]",
                  "chip_size": geometry.size,
                  "chip_template": {name: [round(float(v), 3) for v in geometry.template[i]]
                                    for i, name in enumerate(TEMPLATE_POINTS)}},
        "output": {"dtype": "float32 after dequantisation", "meaning": "p(mask), sigmoid", "threshold": 0.5},
        "precision": "full int8 (weights and activations), uint8 input and output",
        "source": {"trained_by": "scripts/train_mask.py", "seed": SEED, "epochs": args.epochs,
                   "data": "masks-chandrikadeb7 with_mask/without_mask (MIT) without RMFRD's photos, "
                           + ("" if args.no_dev else "real-masked-dev masked/unmasked, ")
                           + "plus synthetic masks (edge_app/vision/synth_mask.py) on the unmasked photos"
                           + (f"; {args.surround:g} of the faces again on a random background (a wall, a piece of "
                              "another photo, two colours under the chin)" if args.surround else ""),
                   "split": f"{int(VAL_FRACTION * 100)} % of photo groups held apart (identity, copies, "
                            "near-duplicate hash); shares no image with training",
                   "tensorflow": metadata.version("tensorflow-cpu")},
        "licence": "MIT (our training; data MIT)",
        "metrics": report,
    }
    manifest_path = args.out / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"]["mask_classifier"] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA_ROOT, help="shared data folder ($EDGE_APP_DATA)")
    ap.add_argument("--out", type=Path, default=ROOT / "models_tflite", help="models folder with MANIFEST.json")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--surround", type=float, default=1.0, metavar="SHARE",
                    help="share of the training faces added again on a random background (default 1.0: every one)")
    ap.add_argument("--no-dev", action="store_true",
                    help="train without real-masked-dev's photos (to measure the classifier on them honestly)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.surround <= 1.0:
        ap.error(f"--surround is a share of the faces, 0..1, got {args.surround:g}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def body() -> None:
        report = run(args)
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")

    return run_main("train_mask", body)


if __name__ == "__main__":
    sys.exit(main())
