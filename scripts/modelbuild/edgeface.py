"""EdgeFace-XS (Idiap, BSD-3-Clause) -> TFLite: the second embedder, fused with SFace for bare faces.

EdgeFace-XS is timm's EdgeNeXt-XS with a 512-d head, trained by Idiap with CosFace on WebFace12M
(George et al., "EdgeFace", IEEE T-BIOM 2024). The only checkpoint a repository snapshot carries
(files over 4 MiB are left out) is Idiap's dynamically quantised one, `edgeface_xs_q.pt` (Linear
weights int8, everything else float32), as committed in a mirror of Idiap's repository
(SOURCE below). The network is built here from timm's definition (built with timm 0.6.13; timm imports
torchvision, so torch 2.14.1 with torchvision 0.29.1), the int8 Linear weights are dequantised into it
(w = scale * (q - zero_point), per tensor), and the float model is exported: PyTorch -> ONNX -> onnxsim ->
onnx2tf (Erf, in GELU, replaced so every op maps to a TFLite builtin) -> TFLite. The checkpoint is read from its path
(--edgeface or $EDGE_APP_EDGEFACE), never copied into the repository.

Input: NHWC 1x112x112x3 RGB, raw pixels 0..255 as float32, the same aligned chip as SFace's (both
were trained on ArcFace-template chips); the graph normalises to [-1, 1] itself. Output: 512-d,
compared by cosine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .minifasnet import NHWCWrapper, latencies
from .quant import onnx_to_saved_model, saved_model_to_tflite
from .tflite_edit import float_depthwise

log = logging.getLogger(__name__)

CHECKPOINT = "edgeface_xs_q.pt"
CHECKPOINT_SHA256 = "a31314377876ab9fa2a75e5638bc528efe79fd17d5c9c0a228fb7f846d7581a6"
SOURCE = {"repository": "github.com/yayoimizuha/face_recognition_train (a copy of github.com/otroshi/edgeface)",
          "commit": "5eeebb9a6dee6e533f3ce06ffebb2e6d30c2c9c7", "file": f"checkpoints/{CHECKPOINT}",
          "sha256": CHECKPOINT_SHA256,
          "origin": "Idiap Research Institute, EdgeFace (Anjith George, Christophe Ecabert, Hatef Otroshi "
                    "Shahreza, Ketan Kotwal, Sebastien Marcel)"}
LICENCE = "BSD-3-Clause (Idiap); trained on WebFace12M, whose terms are for research: not verified for commerce"
ARCH = "edgenext_x_small"
DIM = 512
CHIP = 112
# name -> what the manifest says of it; the first whose embeddings stay within COSINE_FLOOR of float32 and is
# fastest ships (build() picks).
VARIANTS = {
    "float32": "float32 weights and activations",
    "fp16": "float16 weights, float32 activations",
    "dynamic_xnnpack": "int8 weights (per channel) for CONV_2D and FULLY_CONNECTED, float32 depthwise filters, "
                       "float32 activations quantized per call by XNNPACK",
}
LICENCE_FILE = "LICENSE-EdgeFace-BSD-3-Clause.txt"
# Idiap's licence of EdgeFace, as the repository (SOURCE) carries it: clause 2 asks that it ship with the weights.
LICENCE_TEXT = """\
BSD 3-Clause License

Copyright (c) 2024, Anjith George, Christophe Ecabert, Hatef Otroshi Shahreza,
Ketan Kotwal, Sébastien Marcel
Idiap Research Institute, Martigny 1920, Switzerland.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE."""
TOLERANCE = 1e-4  # max |TFLite - PyTorch| on the unit embeddings, float32 build
# A faster build ships only if its worst held-out cosine to float32 stays above this. The int8-weight build (min
# 0.9949) gave the float32 build's figures on the door protocol (docs/accuracy.md, eighth stop), so 0.99.
COSINE_FLOOR = 0.99


def checkpoint_path(arg: Path | None = None) -> Path:
    """--edgeface, else $EDGE_APP_EDGEFACE; the file must be the one SOURCE names."""
    path = arg if arg is not None else (Path(os.environ["EDGE_APP_EDGEFACE"]) if os.environ.get("EDGE_APP_EDGEFACE")
                                        else None)
    if path is None:
        raise FileNotFoundError(f"EdgeFace checkpoint not given: pass --edgeface PATH/{CHECKPOINT} or set "
                                f"EDGE_APP_EDGEFACE (it is {SOURCE['file']} of {SOURCE['repository']})")
    if not path.is_file():
        raise FileNotFoundError(f"EdgeFace checkpoint not found: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != CHECKPOINT_SHA256:
        raise RuntimeError(f"{path}: sha256 {digest[:12]}..., expected {CHECKPOINT_SHA256[:12]}... ({CHECKPOINT})")
    return path


def float_state(path: Path) -> dict[str, Any]:
    """The checkpoint's state_dict with every dynamically quantised Linear turned back into float weight/bias."""
    import torch

    raw = torch.load(str(path), map_location="cpu", weights_only=False)
    tail = "._packed_params._packed_params"
    packed = {k.removesuffix(tail) for k in raw if k.endswith(tail)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        stem, _, leaf = key.rpartition(".")
        if key.endswith(tail):
            weight, bias = value
            name = key.removesuffix(tail).removeprefix("model.")
            out[name + ".weight"] = weight.dequantize()
            if bias is not None:
                out[name + ".bias"] = bias.detach().clone()
        elif key.endswith("._packed_params.dtype") or (stem in packed and leaf in ("scale", "zero_point")):
            continue  # the quantised Linear's own bookkeeping (output scale, weight dtype): unused by a float Linear
        else:
            out[key.removeprefix("model.")] = value
    return out


def build_torch(state: dict[str, Any]) -> Any:
    import timm

    net = timm.create_model(ARCH, num_classes=DIM)
    net.load_state_dict(state, strict=True)  # every key used, none missing: the definition fits the weights
    return net.eval()


def published_torch(net: Any) -> Any:
    """The network as Idiap runs the checkpoint (Linear layers dynamically quantised again: the dequantised
    weights requantise to the same int8 values), for the report only."""
    import copy

    import torch

    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {torch.nn.Linear}, dtype=torch.qint8).eval()


def normalise(x: Any) -> Any:
    """Raw pixels 0..255 -> [-1, 1], inside the graph, as EdgeFace was trained."""
    return x / 127.5 - 1.0


def torch_embeddings(net: Any, chips: np.ndarray) -> np.ndarray:
    """NHWC uint8 RGB chips -> unit embeddings (N, 512) from PyTorch (``net`` unwrapped)."""
    import torch

    wrapped = NHWCWrapper.wrap(net, normalise)
    with torch.no_grad():
        out = np.concatenate([wrapped(torch.from_numpy(chips[i:i + 32].astype(np.float32))).numpy()
                              for i in range(0, len(chips), 32)])
    return np.asarray(out / np.linalg.norm(out, axis=1, keepdims=True), np.float32)


def to_onnx(net: Any, path: Path) -> Path:
    """ONNX export, then onnxsim (folds the XCA attention's shape arithmetic that onnx2tf stumbles on)."""
    import onnx
    import torch
    from onnxsim import simplify

    raw = path.with_suffix(".raw.onnx")
    torch.onnx.export(NHWCWrapper.wrap(net, normalise), (torch.zeros(1, CHIP, CHIP, 3),), str(raw), opset_version=17,
                      input_names=["input"], output_names=["embedding"], dynamo=False)
    model, ok = simplify(onnx.load(str(raw)))
    if not ok:
        raise RuntimeError("onnxsim could not check the simplified EdgeFace graph")
    onnx.save(model, str(path))
    return path


def to_saved_model(onnx_path: Path, chips: np.ndarray, work: Path) -> Path:
    """onnx2tf: -kat keeps our NHWC input; -rtpo Erf replaces GELU's Erf with builtin ops."""
    return onnx_to_saved_model(onnx_path, chips, work, "-kat", "input", "-rtpo", "Erf")


def tflite_embeddings(path: Path, chips: np.ndarray) -> np.ndarray:
    from edge_app.vision.embedder import FaceEmbedder
    from edge_app.vision.runtime import TFLiteModel

    emb = FaceEmbedder(TFLiteModel(path, num_threads=2))
    return np.array([emb.embed(c) for c in chips], np.float32)


def real_chips(detector: Any, files: list[Path], geometry: Any) -> np.ndarray:
    """The kiosk's chips (SFace's geometry, BlazeFace's points) of the largest face in each image."""
    from edge_app.vision.align import align

    from .faces import largest_faces

    out = [align(rgb, det.keypoints, geometry) for rgb, det in largest_faces(detector, files)]
    if len(out) < 40:
        raise RuntimeError(f"only {len(out)} faces found in the check images (need 40)")
    return np.array(out, np.uint8)


def _cos(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = np.sum(a * b, axis=1)
    return {"min": round(float(c.min()), 5), "median": round(float(np.median(c)), 5), "n": len(c)}


def build(out: Path, detector: Any, files: list[Path], geometry: Any, checkpoint: Path, work: Path
          ) -> dict[str, Any]:
    """Write out/face_embedder_edgeface.tflite and return its manifest entry."""
    from edge_app.vision.runtime import TFLiteModel

    chips = real_chips(detector, files, geometry)
    calib, held = chips[::2], chips[1::2]
    np.save(work / "held.npy", held)
    # PyTorch in a process of its own: timm (through torchvision) and TensorFlow in one process crash.
    subprocess.run([sys.executable, "-m", "scripts.modelbuild.edgeface", str(checkpoint), str(work)], check=True,
                   cwd=Path(__file__).resolve().parents[2])
    ref, published = np.load(work / "torch.npy"), np.load(work / "published.npy")
    saved = to_saved_model(work / "edgeface_xs.onnx", calib, work)
    data = {p: saved_model_to_tflite(saved, p) for p in ("float32", "fp16", "dynamic")}
    data["dynamic_xnnpack"], n_dw = float_depthwise(data.pop("dynamic"), data["float32"])
    paths: dict[str, Path] = {}
    per: dict[str, dict[str, Any]] = {}
    for name in VARIANTS:
        paths[name] = work / f"edgeface_{name}.tflite"
        paths[name].write_bytes(data[name])
        got = tflite_embeddings(paths[name], held)
        per[name] = {"kernels": str(TFLiteModel(paths[name]).kernels()), "bytes": paths[name].stat().st_size}
        bad = int((~np.isfinite(got).all(axis=1)).sum())
        if bad:  # fp16: the attention's L2 normalisation underflows
            per[name]["unusable"] = f"{bad} of {len(got)} embeddings not finite"
        else:
            per[name].update({"max_abs_diff_vs_torch": float(np.abs(got - ref).max()),
                              "cosine_vs_torch": _cos(got, ref)})
    if per["float32"].get("max_abs_diff_vs_torch", np.inf) > TOLERANCE:
        raise RuntimeError(f"float32 TFLite differs from PyTorch by {per['float32']['max_abs_diff_vs_torch']:.2e} "
                           f"> {TOLERANCE} on the unit embeddings")
    for name, ms in latencies(paths, held[0], threads=2).items():
        per[name]["ms_2_threads"] = ms
    log.info("EdgeFace builds: %s", per)
    keep = [n for n in VARIANTS if "cosine_vs_torch" in per[n] and per[n]["cosine_vs_torch"]["min"] >= COSINE_FLOOR]
    chosen = min(keep, key=lambda n: per[n]["ms_2_threads"])
    shipped = out / "face_embedder_edgeface.tflite"
    shutil.copyfile(paths[chosen], shipped)
    (out / LICENCE_FILE).write_text(LICENCE_TEXT)
    return manifest_entry(
        shipped, geometry, DIM,
        description="EdgeFace-XS (EdgeNeXt-XS, CosFace, WebFace12M), 112x112 aligned chip -> 512-d; fused with SFace "
                    "for bare faces (embedder sface+edgeface)",
        normalisation="raw RGB pixels 0..255 of the aligned chip, as float32 (the graph maps them to [-1, 1])",
        precision=VARIANTS[chosen],
        built_by="scripts/modelbuild/edgeface.py: int8 Linear weights dequantised into timm's edgenext_x_small "
                 f"-> ONNX -> onnxsim -> onnx2tf (-rtpo Erf) -> TFLite {chosen}"
                 + (f" ({n_dw} depthwise filters back to float32)" if chosen == "dynamic_xnnpack" else ""),
        kernels=per[chosen]["kernels"], source=SOURCE, licence=LICENCE,
        agreement={"builds": per, "chosen": chosen,
                   "float_vs_published_int8_linear_cosine": _cos(ref, published),
                   "held_apart_chips": len(held), "chips_from": "faces-dev and the mask set's unmasked photos "
                                                                "(every second face; the others calibrate)"})


def manifest_entry(shipped: Path, geometry: Any, dim: int, *, description: str, normalisation: str, precision: str,
                   built_by: str, kernels: str, source: dict[str, Any], licence: str,
                   agreement: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry of an embedder taking SFace's aligned chip (EdgeFace-XS, reid.py's network)."""
    from edge_app.vision.align import TEMPLATE_POINTS
    from edge_app.vision.runtime import TFLiteModel

    spec = TFLiteModel(shipped).input
    return {
        "file": shipped.name, "sha256": hashlib.sha256(shipped.read_bytes()).hexdigest(),
        "bytes": shipped.stat().st_size, "description": description,
        "input": {"shape": list(spec.shape), "dtype": "float32", "normalisation": normalisation,
                  "chip_size": CHIP, "chip_template": {k: [round(float(x), 3) for x in geometry.template[i]]
                                                     for i, k in enumerate(TEMPLATE_POINTS)}},
        "output": {"dim": dim, "dtype": "float32", "note": "L2-normalise, compare by cosine"},
        "precision": precision, "built_by": built_by, "kernels": kernels, "source": source, "licence": licence,
        "agreement": agreement,
    }


def torch_stage(checkpoint: Path, work: Path) -> None:
    """work/held.npy (chips) -> work/edgeface_xs.onnx, work/torch.npy (float embeddings) and work/published.npy
    (the embeddings with the checkpoint's int8 Linear layers, as published)."""
    net = build_torch(float_state(checkpoint))
    held = np.load(work / "held.npy")
    np.save(work / "torch.npy", torch_embeddings(net, held))
    np.save(work / "published.npy", torch_embeddings(published_torch(net), held))
    to_onnx(net, work / "edgeface_xs.onnx")


if __name__ == "__main__":
    torch_stage(checkpoint_path(Path(sys.argv[1])), Path(sys.argv[2]))
