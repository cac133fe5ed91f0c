"""The trained student -> ONNX -> TensorFlow (onnx2tf, as SFace's build) -> TFLite float32 and fp16.

Writes <out>/face_embedder_masked.tflite (the precision chosen by --ship-precision) and merges its
entry into <out>/MANIFEST.json. The entry names the teacher's sha256: a student is meaningful only
against templates of that exact embedder. The kiosk does not load it (docs/masked_kd.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.models import MANIFEST, file_sha256
from edge_app.vision.embedder import FaceEmbedder
from edge_app.vision.runtime import TFLiteModel
from scripts.masked_kd import data, teacher
from scripts.modelbuild.sface import SOURCE, to_saved_model, to_tflite

log = logging.getLogger(__name__)


def median_ms(model: Any, chip: np.ndarray, runs: int = 50) -> float:
    """Median time of one embedding after 5 warm-up runs."""
    for _ in range(5):
        model.embed(chip)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        model.embed(chip)
        times.append((time.perf_counter() - t) * 1e3)
    return round(float(np.median(times)), 2)


ENTRY = "face_embedder_masked"
TEACHER_ENTRY = "face_embedder"
PRECISIONS = ("float32", "fp16")


def build_tflite(student: Any, work: Path, chips: data.ChipData) -> dict[str, Path]:
    import torch

    onnx_path = work / "student.onnx"
    torch.onnx.export(student, teacher.to_tensor(chips.plain[:1]), str(onnx_path), input_names=["data"],
                      output_names=["fc1"], opset_version=13, dynamo=False)
    saved = to_saved_model(onnx_path, chips.plain, work, "student_saved_model")
    out = {}
    for precision in PRECISIONS:
        path = work / f"student_{precision}.tflite"
        path.write_bytes(to_tflite(saved, precision))
        out[precision] = path
    return out


def check(paths: dict[str, Path], student: Any, chips: np.ndarray) -> dict[str, Any]:
    """Cosine of each TFLite build to the PyTorch student on held chips, and its median latency."""
    ref = teacher.embed(student, chips)
    report = {}
    for precision, path in paths.items():
        emb = FaceEmbedder(TFLiteModel(path, num_threads=2))
        cos = np.array([float(emb.embed(c) @ r) for c, r in zip(chips, ref, strict=True)])
        report[precision] = {"cosine_to_torch_min": round(float(cos.min()), 5), "bytes": path.stat().st_size,
                             "latency_ms_median_2_threads": median_ms(emb, chips[0])}
    return report


def export(student: Any, args: argparse.Namespace, chips: data.ChipData, sources: dict[str, int],
           figures: dict[str, Any] | None = None) -> dict[str, Any]:
    paths = build_tflite(student, args.work, chips)
    builds = check(paths, student, chips.student[:64])
    log.info("builds: %s", builds)
    out_dir: Path = args.export
    manifest_path = out_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    teacher_entry = manifest["models"][TEACHER_ENTRY]
    target = out_dir / f"{ENTRY}.tflite"
    target.write_bytes(paths[args.ship_precision].read_bytes())
    entry = {
        "file": target.name, "sha256": file_sha256(target), "bytes": target.stat().st_size,
        "description": "SFace student for MASKED faces: trained so a masked face (eyes-aligned chip) gets the "
                       "embedding SFace gives the same face unmasked; compare with SFace templates by cosine",
        "input": teacher_entry["input"], "output": teacher_entry["output"],
        "precision": f"{args.ship_precision} weights, float32 activations",
        "teacher": {"entry": TEACHER_ENTRY, "sha256": teacher_entry["sha256"], "onnx": SOURCE},
        "source": {"recipe": "scripts/train_masked_kd.py (template-level knowledge distillation)",
                   "seed": 11, "args": {k: str(v) for k, v in vars(args).items() if k not in ("work", "export")},
                   "training_photos": sources, "student_chips": len(chips.student)},
        "licence": "Apache-2.0 (derived from OpenCV zoo SFace); training photos not shipped",
        "builds": builds,
    }
    if figures:
        entry["real_masked_dev"] = figures
    manifest["models"][ENTRY] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return entry
