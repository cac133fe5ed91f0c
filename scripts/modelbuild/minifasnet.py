"""MiniFASNetV2 / MiniFASNetV1SE (passive RGB anti-spoofing) -> TFLite.

The two networks are defined here again from the released state_dicts' key names and shapes
(Silent-Face-Anti-Spoofing, Apache-2.0; SOURCE.md beside the weights): a MobileFaceNet-like stack
of depthwise blocks whose widths were pruned per block (so every width is read from the weights),
V1SE adding squeeze-and-excitation to the last block of each residual stage, and a 5x5 depthwise
"conv6" head for 80x80 inputs. The weights are read from their folder (argument or
$EDGE_APP_MINIFASNET), never copied into the repository.

Export: PyTorch -> ONNX (opset 13) -> onnx2tf SavedModel -> TFLite, checked against PyTorch's logits.
Input: NHWC 1x80x80x3, BGR, raw pixels 0..255 as float32. Output: 3 logits, class 1 = real face.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scripts.common import DATA_ROOT

from .quant import onnx_to_saved_model, saved_model_to_tflite

log = logging.getLogger(__name__)

DEFAULT_DIR = DATA_ROOT.parent / "reference" / "minifasnet"
SIZE = 80
SOURCE = {"repository": "github.com/minivision-ai/Silent-Face-Anti-Spoofing",
          "commit": "b6d5f04ad78778917853b25c778acef6d5626d15",
          "folder": "resources/anti_spoof_models"}


@dataclass(frozen=True)
class Variant:
    name: str  # manifest entry
    weights: str  # file name in the weights folder
    scale: float  # face box scale of the crop the network was trained on
    se: bool  # squeeze-and-excitation in the last block of each residual stage


VARIANTS = (Variant("liveness_v2", "2.7_80x80_MiniFASNetV2.pth", 2.7, False),
            Variant("liveness_v1se", "4_0_0_80x80_MiniFASNetV1SE.pth", 4.0, True))


def weights_dir(arg: Path | None = None, data: Path | None = None) -> Path:
    """--minifasnet, else $EDGE_APP_MINIFASNET, else reference/minifasnet beside the data folder."""
    if arg is not None:
        return arg
    env = os.environ.get("EDGE_APP_MINIFASNET")
    if env:
        return Path(env)
    return data.parent / "reference" / "minifasnet" if data is not None else DEFAULT_DIR


def load_state(path: Path) -> dict[str, Any]:
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    # Saved from nn.DataParallel: every key starts with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_torch(state: dict[str, Any], se: bool) -> Any:
    """The network for ``state`` (widths read from its shapes), weights loaded, in eval mode."""
    import torch
    from torch import nn

    def width(key: str, dim: int = 0) -> int:
        return int(state[key].shape[dim])

    class ConvBlock(nn.Module):  # conv (no bias) + BN + PReLU
        def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, p: int = 0, groups: int = 1) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.prelu = nn.PReLU(cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.prelu(self.bn(self.conv(x)))

    class LinearBlock(nn.Module):  # conv (no bias) + BN, no activation
        def __init__(self, cin: int, cout: int, k: int = 1, groups: int = 1) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, 1, 0, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x))

    class SE(nn.Module):
        def __init__(self, c: int, mid: int) -> None:
            super().__init__()
            self.fc1 = nn.Conv2d(c, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.fc2 = nn.Conv2d(mid, c, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = x.mean(dim=(2, 3), keepdim=True)
            w = torch.sigmoid(self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(w))))))
            return x * w

    class DepthWise(nn.Module):
        """1x1 expand -> 3x3 depthwise (stride) -> 1x1 project; residual inside a stage."""

        def __init__(self, prefix: str, stride: int, residual: bool) -> None:
            super().__init__()
            cin, mid = width(f"{prefix}.conv.conv.weight", 1), width(f"{prefix}.conv.conv.weight")
            cout = width(f"{prefix}.project.conv.weight")
            self.residual = residual
            self.conv = ConvBlock(cin, mid)
            self.conv_dw = ConvBlock(mid, mid, 3, stride, 1, groups=mid)
            self.project = LinearBlock(mid, cout)
            self.se_module = SE(cout, width(f"{prefix}.se_module.fc1.weight")) \
                if f"{prefix}.se_module.fc1.weight" in state else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.project(self.conv_dw(self.conv(x)))
            if self.se_module is not None:
                y = self.se_module(y)
            return x + y if self.residual else y

    class Stage(nn.Module):
        def __init__(self, prefix: str) -> None:
            super().__init__()
            n = len({k.split(".")[2] for k in state if k.startswith(prefix + ".model.")})
            self.model = nn.Sequential(*[DepthWise(f"{prefix}.model.{i}", 1, True) for i in range(n)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    class MiniFASNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c1 = width("conv1.conv.weight")
            self.conv1 = ConvBlock(3, c1, 3, 2, 1)
            self.conv2_dw = ConvBlock(c1, c1, 3, 1, 1, groups=c1)
            self.conv_23 = DepthWise("conv_23", 2, False)
            self.conv_3 = Stage("conv_3")
            self.conv_34 = DepthWise("conv_34", 2, False)
            self.conv_4 = Stage("conv_4")
            self.conv_45 = DepthWise("conv_45", 2, False)
            self.conv_5 = Stage("conv_5")
            c6 = width("conv_6_sep.conv.weight")
            self.conv_6_sep = ConvBlock(width("conv_6_sep.conv.weight", 1), c6)
            k = width("conv_6_dw.conv.weight", 2)  # 5 for 80x80 inputs: the 5x5 map becomes 1x1
            self.conv_6_dw = LinearBlock(c6, c6, k, groups=c6)
            self.linear = nn.Linear(c6, width("linear.weight"), bias=False)
            self.bn = nn.BatchNorm1d(width("linear.weight"))
            self.prob = nn.Linear(width("prob.weight", 1), width("prob.weight"), bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34, self.conv_4,
                          self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
                x = layer(x)
            return self.prob(self.bn(self.linear(torch.flatten(x, 1))))  # dropout: identity at inference

    net = MiniFASNet()
    has_se = any(".se_module." in k for k in state)
    if has_se != se:
        raise ValueError(f"weights {'have' if has_se else 'lack'} squeeze-and-excitation blocks, expected se={se}")
    net.load_state_dict(state, strict=True)  # every key used, none missing: the definition fits the weights
    return net.eval()


class NHWCWrapper:
    """The exported graph takes NHWC (as TFLite does) so onnx2tf keeps the layout without guessing; ``prep``, if
    given, is applied to the NCHW input inside the graph (EdgeFace's normalisation)."""

    @staticmethod
    def wrap(net: Any, prep: Callable[[Any], Any] | None = None) -> Any:
        from torch import nn

        class Wrapped(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Any) -> Any:
                x = x.permute(0, 3, 1, 2)
                return self.net(x if prep is None else prep(x))

        return Wrapped().eval()


def torch_logits(net: Any, crops: np.ndarray) -> np.ndarray:
    """NHWC uint8/float BGR crops -> logits (N, 3) from the PyTorch network."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops, np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return np.asarray(net(x).numpy(), np.float32)


def to_onnx(net: Any, path: Path) -> None:
    import torch

    dummy = torch.zeros(1, SIZE, SIZE, 3)
    torch.onnx.export(NHWCWrapper.wrap(net), (dummy,), str(path), opset_version=13, input_names=["input"],
                      output_names=["logits"], dynamo=False)


def to_saved_model(onnx_path: Path, crops: np.ndarray, work: Path) -> Path:
    """onnx2tf; -kat keeps our NHWC input as it is (no transpose inserted)."""
    return onnx_to_saved_model(onnx_path, crops, work, "-kat", "input")


def _model_input(m: Any, crop: np.ndarray) -> np.ndarray:
    """A crop in the model's input type (the full-int8 trial takes quantized uint8)."""
    spec = m.input
    if spec.dtype == np.float32:
        return crop[None].astype(np.float32)
    q = np.round(crop.astype(np.float32) / spec.scale + spec.zero_point)
    return np.clip(q, 0, 255).astype(spec.dtype)[None]


def tflite_logits(path: Path, crops: np.ndarray, threads: int = 1) -> np.ndarray:
    from edge_app.vision.runtime import TFLiteModel

    m = TFLiteModel(path, num_threads=threads)
    return np.array([m.run(_model_input(m, c))[0].reshape(-1) for c in crops], np.float32)


def latencies(paths: dict[str, Path], crop: np.ndarray, rounds: int = 7, runs: int = 40,
              threads: int = 1) -> dict[str, float]:
    """Median ms per model, measured in interleaved rounds and the quietest round kept: the machine is
    shared, and timing one model after another would hand one of them the noise of a busy minute."""
    from edge_app.vision.runtime import TFLiteModel

    models = {k: TFLiteModel(p, num_threads=threads) for k, p in paths.items()}
    inputs = {k: _model_input(m, crop) for k, m in models.items()}
    best = {k: float("inf") for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            for _ in range(5):
                m.run(inputs[k])
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                m.run(inputs[k])
                times.append((time.perf_counter() - t) * 1e3)
            best[k] = min(best[k], float(np.median(times)))
    return {k: round(v, 3) for k, v in best.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return np.asarray(e / e.sum(-1, keepdims=True))


# Most faithful first: the first whose two models together meet the budget is shipped.
PRECISIONS = ("float32", "fp16", "dynamic", "int8")
BUDGET_MS = 4.0  # both models, one face, one thread
TOLERANCE = 1e-4  # max |TFLite - PyTorch| on the logits


def real_crops(detector: Any, files: list[Path], scale: float) -> np.ndarray:
    """The network's crops of the largest face in each image that has one."""
    from edge_app.vision.liveness import crop

    from .faces import largest_faces

    out = [crop(rgb, det.box, scale) for rgb, det in largest_faces(detector, files)]
    if not out:
        raise RuntimeError("no face found in the check images")
    return np.array(out, np.uint8)


def build(out: Path, detector: Any, files: list[Path], folder: Path, work: Path) -> dict[str, Any]:
    """Write out/liveness_v2.tflite and out/liveness_v1se.tflite; return their manifest entries."""
    sample_files = sorted((folder / "sample").glob("*.jpg"))
    if len(sample_files) < 3:
        raise FileNotFoundError(f"{folder / 'sample'}: the upstream sample images are missing")
    trials: dict[str, dict[str, Any]] = {}
    for v in VARIANTS:
        weights = folder / v.weights
        net = build_torch(load_state(weights), v.se)
        samples_ = real_crops(detector, sample_files, v.scale)
        faces = real_crops(detector, files, v.scale)
        check = np.concatenate([samples_, faces])
        ref = torch_logits(net, check)
        onnx_path = work / f"{v.name}.onnx"
        to_onnx(net, onnx_path)
        saved = to_saved_model(onnx_path, faces, work)
        per: dict[str, Any] = {}
        for precision in PRECISIONS:
            path = work / f"{v.name}_{precision}.tflite"
            path.write_bytes(saved_model_to_tflite(saved, precision, faces[::2]))
            got = tflite_logits(path, check)
            p_ref, p_got = softmax(ref)[:, 1], softmax(got)[:, 1]
            per[precision] = {"path": path, "max_abs_logit_diff": float(np.abs(got - ref).max()),
                              "max_abs_p_live_diff": float(np.abs(p_got - p_ref).max())}
            log.info("%s %s: max |logit diff| %.2e", v.name, precision, per[precision]["max_abs_logit_diff"])
        for precision, ms in latencies({p: r["path"] for p, r in per.items()}, check[0]).items():
            per[precision]["ms"] = ms
        log.info("%s latency (ms, 1 thread): %s", v.name, {p: r["ms"] for p, r in per.items()})
        if per["float32"]["max_abs_logit_diff"] > TOLERANCE:
            raise RuntimeError(f"{v.name}: float32 TFLite differs from PyTorch by "
                               f"{per['float32']['max_abs_logit_diff']:.2e} > {TOLERANCE} on the logits")
        trials[v.name] = {"variant": v, "weights": weights, "per": per, "n_samples": len(samples_),
                          "n_faces": len(faces), "sample_p_live": [round(float(p), 4) for p in
                                                                   softmax(ref[: len(samples_)])[:, 1]]}
    chosen = next((p for p in PRECISIONS
                   if sum(t["per"][p]["ms"] for t in trials.values()) <= BUDGET_MS), None)
    if chosen is None:
        raise RuntimeError(f"no precision runs both models within {BUDGET_MS} ms: "
                           f"{ {p: [t['per'][p]['ms'] for t in trials.values()] for p in PRECISIONS} }")
    entries = {}
    for name, t in trials.items():
        v, per = t["variant"], t["per"]
        dst = out / f"{name}.tflite"
        dst.write_bytes(per[chosen]["path"].read_bytes())
        entries[name] = {
            "file": dst.name, "sha256": sha256(dst), "bytes": dst.stat().st_size,
            "description": f"MiniFASNet{'V1SE' if v.se else 'V2'} passive anti-spoofing, {SIZE}x{SIZE} crop of the "
                           f"face box scaled {v.scale}x -> 3 logits (class 1 = real face)",
            "input": {"shape": [1, SIZE, SIZE, 3], "dtype": "float32",
                      "normalisation": "BGR, raw pixels 0..255 as float32 (no scaling, no mean)",
                      "crop_scale": v.scale,
                      "crop": "detector box scaled about its centre (less if the frame is smaller), shifted to "
                              "stay inside the frame, resized to 80x80 (bilinear)"},
            "output": {"classes": 3, "real_class": 1, "note": "average the softmax of both models; "
                                                              "p(live) = class 1"},
            "precision": chosen,
            "source": {**SOURCE, "file": v.weights, "sha256": sha256(t["weights"])},
            "licence": "Apache-2.0",
            "agreement": {
                "check_crops": {"upstream_samples": t["n_samples"], "real_faces": t["n_faces"]},
                "tflite_vs_pytorch": {p: {k: (round(x, 8) if k.startswith("max") else x)
                                          for k, x in r.items() if k != "path"} for p, r in per.items()},
                "tolerance_logits": TOLERANCE,
                "upstream_samples_p_live_pytorch": dict(zip([f.name for f in sample_files], t["sample_p_live"],
                                                            strict=False)),
                "latency_ms_median_1_thread": {p: r["ms"] for p, r in per.items()},
                "chosen": f"{chosen}: the most faithful precision whose two models together take <= "
                          f"{BUDGET_MS} ms per face",
            },
        }
    return entries
