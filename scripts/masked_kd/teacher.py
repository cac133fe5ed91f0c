"""SFace in PyTorch: the float ONNX of scripts/modelbuild/sface.py converted by onnx2torch.

The teacher is this model frozen; the student starts as a copy of it. Inputs are the pipeline's
aligned RGB chips, raw pixels 0..255, NCHW float32 (what the shipped TFLite gets, transposed).
"""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np


def _without_torchvision() -> None:
    """onnx2torch imports torchvision for its NMS / RoIAlign converters only (SFace has neither), and
    the torchvision wheels on PyPI are built against another torch than the CPU one: an empty stand-in
    is enough, and spares a second large wheel."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # any failure: missing, or built for another torch (RuntimeError)
        tv = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        ops.roi_align = None  # type: ignore[attr-defined]
        tv.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.ops"] = ops


def load(onnx_path: Path) -> Any:
    """The ONNX graph as a torch.nn.Module (eval mode)."""
    _without_torchvision()
    import onnx
    from onnx2torch import convert

    return convert(onnx.load(str(onnx_path))).eval()


def to_tensor(chips: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(chips.transpose(0, 3, 1, 2), np.float32))


def embed(model: Any, chips: np.ndarray, batch: int = 128) -> np.ndarray:
    """uint8 chips (n, 112, 112, 3) -> unit rows (n, 128) float32."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(chips), batch):
            out.append(model(to_tensor(chips[i:i + batch])).numpy())
    e = np.concatenate(out) if out else np.zeros((0, 128), np.float32)
    return np.asarray(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12), np.float32)


def check_against_onnxruntime(model: Any, onnx_path: Path, chips: np.ndarray) -> float:
    """Lowest cosine between this model's and onnxruntime's embeddings of the chips."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run(None, {name: chips[i:i + 1].transpose(0, 3, 1, 2).astype(np.float32)})[0]
                          for i in range(len(chips))])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    return float((ref * embed(model, chips)).sum(1).min())


def upper_head(model: Any, rows: int) -> Any:
    """An embedding function: SFace with its spatial FC (pre_fc1, over the last 1024x7x7 map) reading only the
    top ``rows`` of the 7 rows, the ones a mask does not cover (a periocular head without training)."""
    import torch

    if not 1 <= rows <= 7:
        raise ValueError(f"rows of the 7x7 map, 1..7, got {rows}")
    head = copy.deepcopy(model).eval()
    keep = torch.zeros(1024, 7, 7)
    keep[:, :rows, :] = 1
    with torch.no_grad():
        head.pre_fc1.weight.mul_(keep.reshape(1, -1))
    return lambda chips: embed(head, chips)
