"""Intel's face-reidentification-retail-0095 (Open Model Zoo, Apache-2.0) -> TFLite: the third embedder, fused with
SFace and EdgeFace-XS for bare faces (embedder ``sface+edgeface+reid``).

The network is a MobileNetV2 with squeeze-excitation blocks and PReLU activations, 1.1 M parameters, 0.59 GFLOPs,
128x128 BGR input, 256-d output (Intel's model card, SOURCE below). It is published as an OpenVINO IR (an XML graph
and a binary of weights); the FP16 IR, as committed in a third-party repository (SOURCE), is read from its folder
(--reid or $EDGE_APP_REID), never copied into the repository. This module rebuilds the graph op by op in TensorFlow
(the IR's op set here: Convolution, GroupConvolution (depthwise), PReLU with one slope, Add, Multiply, AvgPool,
Sigmoid; anything else is refused by name) and converts it to TFLite. The graph is checked against OpenVINO's own
runtime on the same chips (float32 inference, in a process of its own).

Input of the TFLite model: NHWC 1x112x112x3 RGB, raw pixels 0..255 as float32: SFace's aligned chip, the same chip
the other two networks take. Intel's alignment template is the ArcFace one on a 96x112 crop stretched to 128x128
(its five normalised reference points are the ArcFace points of that crop), so the graph takes columns 8..103 of
the 112x112 chip (the ArcFace 112x112 template is the 96x112 one shifted by 8 px), resizes them bilinearly to
128x128 and reverses the channels to BGR; the IR normalises the pixels itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from .minifasnet import latencies
from .tflite_edit import float_depthwise

log = logging.getLogger(__name__)

NAME = "face-reidentification-retail-0095"
XML_SHA256 = "ce53d2c9c08c0bd1c1660fb8a5b6d0e3e4ec19eb92f1036d2d83a85e83082dce"
BIN_SHA256 = "241229ca3d206321868d46ce74a3c0b06c49cea58db7dc70b2e842ff287545d1"
SOURCE = {"repository": "github.com/MisterFoziljon/OpenVino-Face-Recognition",
          "commit": "93a6a9503d2ec545502a496f64ec2f7df45db312",
          "files": [f"models/{NAME}/FP16/{NAME}.xml", f"models/{NAME}/FP16/{NAME}.bin"],
          "sha256": {"xml": XML_SHA256, "bin": BIN_SHA256},
          "origin": "Intel Open Model Zoo, models/intel/face-reidentification-retail-0095 (an IR v11 export of it; "
                    "not byte-identical to the files Intel's 2021.4 listing names)"}
LICENCE = ("Apache-2.0 (Intel Open Model Zoo); training data not named in Intel's model card: not verified for "
           "commerce")
DIM = 256
CHIP = 112
CROP = (8, 104)  # columns of the 112x112 ArcFace chip that make the 96x112 ArcFace crop
SIDE = 128
VARIANTS = {
    "float32": "float32 weights and activations",
    "dynamic_xnnpack": "int8 weights (per channel) for CONV_2D, float32 depthwise filters, float32 activations "
                       "quantized per call by XNNPACK",
}
TOLERANCE = 1e-4  # max |TFLite - OpenVINO| on the unit embeddings, float32 build
COSINE_FLOOR = 0.99  # a quantised build ships only if every check embedding stays this close to float32's


def ir_dir(given: Path | None) -> Path:
    """The folder of the FP16 IR (--reid, else $EDGE_APP_REID), both files checked against SOURCE's sha256."""
    folder = given or (Path(os.environ["EDGE_APP_REID"]) if os.environ.get("EDGE_APP_REID") else None)
    if folder is None:
        raise FileNotFoundError(f"no {NAME} IR folder: pass --reid DIR or set $EDGE_APP_REID (DIR holding "
                                f"{NAME}.xml and .bin, from {SOURCE['repository']} {SOURCE['commit'][:7]})")
    for ext, want in (("xml", XML_SHA256), ("bin", BIN_SHA256)):
        path = folder / f"{NAME}.{ext}"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != want:
            raise ValueError(f"{path}: sha256 {got}, expected {want} (another export of the model?)")
    return folder


class IRGraph:
    """An OpenVINO IR's layers and edges, evaluated into TensorFlow ops in NHWC."""

    def __init__(self, xml: Path, weights: bytes) -> None:
        root = ET.parse(xml).getroot()
        self.layers = {layer.get("id", ""): layer for layer in root.iter("layer")}
        self.inputs: dict[str, dict[int, str]] = {}
        for e in root.iter("edge"):
            self.inputs.setdefault(e.get("to-layer", ""), {})[int(e.get("to-port", "0"))] = e.get("from-layer", "")
        self.weights = weights
        self.slopes: list[float] = []
        unknown = {layer.get("type") for layer in self.layers.values()} - set(self._OPS)
        if unknown:
            raise NotImplementedError(f"{xml.name}: IR ops not handled here: {sorted(map(str, unknown))}")

    _OPS = ("Parameter", "Const", "Convert", "Add", "Multiply", "Convolution", "GroupConvolution", "PReLU", "AvgPool",
            "Sigmoid", "Result")

    def _const(self, layer: ET.Element) -> np.ndarray:
        d = layer.find("data")
        assert d is not None
        dtype = {"f16": np.float16, "f32": np.float32}[d.get("element_type", "")]
        shape = [int(s) for s in d.get("shape", "").split(",") if s.strip()]
        a = np.frombuffer(self.weights, dtype, count=int(d.get("size", "0")) // np.dtype(dtype).itemsize,
                          offset=int(d.get("offset", "0")))
        return a.reshape(shape).astype(np.float32)

    def output(self, x: Any) -> Any:
        """The Result layer's tensor for the NHWC BGR input ``x``."""
        memo: dict[str, Any] = {}
        result = next(i for i, layer in self.layers.items() if layer.get("type") == "Result")
        order: list[str] = []  # depth-first post-order, without recursion
        stack, seen = [(result, False)], set()
        while stack:
            lid, done = stack.pop()
            if done:
                order.append(lid)
                continue
            if lid in seen:
                continue
            seen.add(lid)
            stack.append((lid, True))
            stack.extend((src, False) for src in self.inputs.get(lid, {}).values())
        for lid in order:
            memo[lid] = self._op(self.layers[lid], [memo[s] for _, s in sorted(self.inputs.get(lid, {}).items())], x)
        return memo[result]

    def _op(self, layer: ET.Element, ins: list[Any], x: Any) -> Any:
        import tensorflow as tf

        kind = layer.get("type")
        d = layer.find("data")
        attr = dict(d.attrib) if d is not None else {}

        def ints(key: str) -> list[int]:
            return [int(s) for s in attr[key].split(",")]

        def nhwc(v: Any) -> Any:  # an NCHW constant (1, C, 1, 1) as an NHWC one; tensors as they are
            if not isinstance(v, np.ndarray):
                return v
            return tf.constant(np.transpose(v, (0, 2, 3, 1)) if v.ndim == 4 else v)

        def padded(t: Any) -> Any:
            (pt, pl), (pb, pr) = ints("pads_begin"), ints("pads_end")
            return tf.pad(t, [[0, 0], [pt, pb], [pl, pr], [0, 0]]) if pt or pl or pb or pr else t

        if kind == "Parameter":
            return x
        if kind == "Const":
            return self._const(layer)
        if kind in ("Convert", "Result"):
            return ins[0]
        if kind == "Add":
            return nhwc(ins[0]) + nhwc(ins[1])
        if kind == "Multiply":
            return nhwc(ins[0]) * nhwc(ins[1])
        if kind == "Sigmoid":
            return tf.sigmoid(ins[0])
        if kind == "Convolution":
            return tf.nn.conv2d(padded(ins[0]), np.transpose(ins[1], (2, 3, 1, 0)), [1, *ints("strides"), 1], "VALID")
        if kind == "GroupConvolution":
            w = ins[1]
            if w.shape[1:3] != (1, 1):
                raise NotImplementedError(f"grouped convolution other than depthwise: weights {w.shape}")
            kernel = np.transpose(w[:, 0, 0], (1, 2, 0))[..., None]
            return tf.nn.depthwise_conv2d(padded(ins[0]), kernel, [1, *ints("strides"), 1], "VALID")
        if kind == "PReLU":
            slope = ins[1].reshape(-1)
            if slope.size != 1:
                raise NotImplementedError(f"PReLU with {slope.size} slopes")
            self.slopes.append(float(slope[0]))
            t = ins[0]
            # relu(x) + relu(-x) * (-slope): the form TFLite's converter fuses into one PRELU op.
            return tf.nn.relu(t) + tf.nn.relu(-t) * tf.constant(np.full((1, 1, int(t.shape[-1])), -slope[0],
                                                                        np.float32))
        if kind == "AvgPool":
            if any(ints("pads_begin")) or any(ints("pads_end")):
                raise NotImplementedError("padded AvgPool")
            return tf.nn.avg_pool2d(ins[0], ints("kernel"), ints("strides"), "VALID")
        raise NotImplementedError(str(kind))


def to_tflite(folder: Path) -> dict[str, bytes]:
    """{variant: TFLite bytes} of the graph taking SFace's 112x112 RGB chip."""
    import tensorflow as tf

    graph = IRGraph(folder / f"{NAME}.xml", (folder / f"{NAME}.bin").read_bytes())

    @tf.function(input_signature=[tf.TensorSpec([1, CHIP, CHIP, 3], tf.float32)])
    def model(chip: Any) -> Any:
        x = tf.image.resize(chip[:, :, CROP[0]:CROP[1], :], (SIDE, SIDE), method="bilinear")
        return tf.reshape(graph.output(x[..., ::-1]), [1, DIM])

    fn = model.get_concrete_function()
    out = {"float32": tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()}
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    out["dynamic_xnnpack"], n = float_depthwise(conv.convert(), out["float32"])
    log.info("%s: %d depthwise filters back to float32; PReLU slopes %.3g..%.3g", NAME, n, min(graph.slopes),
             max(graph.slopes))
    return out


def ir_input(chips: np.ndarray) -> np.ndarray:
    """The IR's own input for SFace chips, made outside the graph (OpenCV): NCHW BGR 128x128."""
    import cv2

    # In float: OpenCV's uint8 resize rounds to whole pixel values, the graph's resize does not.
    return np.stack([cv2.resize(c[:, CROP[0]:CROP[1]].astype(np.float32), (SIDE, SIDE),
                                interpolation=cv2.INTER_LINEAR)[:, :, ::-1].transpose(2, 0, 1) for c in chips])


def openvino_stage(folder: Path, work: Path) -> None:
    """work/held.npy (chips) -> work/openvino.npy (unit embeddings by OpenVINO's runtime, float32 inference)."""
    import openvino as ov

    core = ov.Core()
    net = core.compile_model(str(folder / f"{NAME}.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    held = np.load(work / "held.npy")
    emb = np.array([np.asarray(net(x[None])[0]).reshape(-1) for x in ir_input(held)], np.float32)
    np.save(work / "openvino.npy", emb / np.linalg.norm(emb, axis=1, keepdims=True))


def _cos(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = np.sum(a * b, axis=1)
    return {"min": round(float(c.min()), 5), "median": round(float(np.median(c)), 5), "n": len(c)}


def build(out: Path, detector: Any, files: list[Path], geometry: Any, folder: Path, work: Path) -> dict[str, Any]:
    """Write out/face_embedder_reid.tflite and return its manifest entry."""
    from edge_app.vision.runtime import TFLiteModel

    from .edgeface import manifest_entry, real_chips, tflite_embeddings

    held = real_chips(detector, files, geometry)[1::2]
    np.save(work / "held.npy", held)
    subprocess.run([sys.executable, "-m", "scripts.modelbuild.reid", str(folder), str(work)], check=True,
                   cwd=Path(__file__).resolve().parents[2])
    ref = np.load(work / "openvino.npy")
    paths: dict[str, Path] = {}
    per: dict[str, dict[str, Any]] = {}
    for name, data in to_tflite(folder).items():
        paths[name] = work / f"reid_{name}.tflite"
        paths[name].write_bytes(data)
        got = tflite_embeddings(paths[name], held)
        per[name] = {"kernels": str(TFLiteModel(paths[name]).kernels()), "bytes": len(data),
                     "max_abs_diff_vs_openvino": float(np.abs(got - ref).max()), "cosine_vs_openvino": _cos(got, ref)}
    if per["float32"]["max_abs_diff_vs_openvino"] > TOLERANCE:
        raise RuntimeError(f"float32 TFLite differs from OpenVINO by {per['float32']['max_abs_diff_vs_openvino']:.2e} "
                           f"> {TOLERANCE} on the unit embeddings")
    for name, ms in latencies(paths, held[0], threads=2).items():
        per[name]["ms_2_threads"] = ms
    log.info("%s builds: %s", NAME, per)
    keep = [n for n in per if per[n]["cosine_vs_openvino"]["min"] >= COSINE_FLOOR]
    chosen = min(keep, key=lambda n: per[n]["ms_2_threads"])
    shipped = out / "face_embedder_reid.tflite"
    shutil.copyfile(paths[chosen], shipped)
    return manifest_entry(
        shipped, geometry, DIM,
        description=f"Intel {NAME} (MobileNetV2 with squeeze-excitation, PReLU), SFace's 112x112 aligned chip (its "
                    "96x112 ArcFace crop, stretched to 128x128 inside the graph) -> 256-d; fused with SFace and "
                    "EdgeFace-XS for bare faces (embedder sface+edgeface+reid)",
        normalisation="raw RGB pixels 0..255 of the aligned chip, as float32 (the graph crops, resizes, turns them to "
                      "BGR and normalises them)",
        precision=VARIANTS[chosen],
        built_by="scripts/modelbuild/reid.py: the OpenVINO IR rebuilt op by op in TensorFlow -> TFLite "
                 f"{chosen}" + (" (depthwise filters back to float32)" if chosen == "dynamic_xnnpack" else ""),
        kernels=per[chosen]["kernels"], source=SOURCE, licence=LICENCE,
        agreement={"builds": per, "chosen": chosen, "held_apart_chips": len(held),
                   "reference": "OpenVINO runtime on the IR, CPU, INFERENCE_PRECISION_HINT f32, the chips cropped "
                                "and resized by OpenCV (INTER_LINEAR, in float32)",
                   "chips_from": "faces-dev and the mask set's unmasked photos (every second face)"})


if __name__ == "__main__":
    openvino_stage(Path(sys.argv[1]), Path(sys.argv[2]))
