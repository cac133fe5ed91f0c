"""Read dlib_face_recognition_resnet_model_v1.dat into numpy weights, without dlib.

The file is dlib's own serialisation of the `anet_type` network from dlib's
dnn_face_recognition_ex.cpp: a 29-layer ResNet (input_rgb_image_sized<150>, conv 7x7/2,
max pool, residual stages of 32/64/128/256 filters, global average pool, fc 128).
dlib serialises a network from the loss layer inwards, each layer after the layers beneath it,
so we walk a fixed description of the architecture (outermost first) and read each layer's
fields in dlib's order. Any mismatch with that description is an error, not a guess.

Number format (dlib/serialize.h): an integer is one control byte (bit 7 = negative, low nibble =
byte count, 1..8) and that many little-endian bytes; a float is an int64 mantissa and an int16
exponent; a string is a length and bytes; a tensor is version 2, four dimensions, then raw
little-endian float32 data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DlibFormatError(ValueError):
    """The file does not have the layout this reader expects."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        ctrl = self._take(1)[0]
        n = ctrl & 0x0F
        if not 1 <= n <= 8:
            raise DlibFormatError(f"bad integer control byte {ctrl:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(n), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa * 2.0 ** exponent)

    def str(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {c!r} at byte {self.pos - 1}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos}, expected 2")
        shape = [self.int() for _ in range(4)]  # num_samples, k, nr, nc
        n = int(np.prod(shape))
        return np.frombuffer(self._take(4 * n), "<f4").reshape(shape).copy()

    def alias(self) -> tuple[int, ...]:
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"alias_tensor version {version}, expected 1")
        return tuple(self.int() for _ in range(4))

    def expect(self, what: str, allowed: tuple[str, ...]) -> str:
        name = self.str()
        if name not in allowed:
            raise DlibFormatError(f"{what}: found serialised layer {name!r}, expected one of {allowed}")
        return name


# ---- architecture, outermost (fc) first, as dlib stores it -----------------------------------
# Each entry is (kind, arg). 'tag'/'skip'/'add_prev' implement the residual connections:
# add_prev<tagN> adds the output of the layer tagged N to the current output.

def _block(filters: int, stride: int) -> list[tuple[str, int]]:
    # BN(conv3x3/1 (relu (BN (conv3x3/stride (x)))))
    return [("affine", 0), ("con3", filters), ("relu", 0), ("affine", 0), (f"con3s{stride}", filters)]


def _residual(filters: int) -> list[tuple[str, int]]:
    return [("relu", 0), ("add_prev", 1), *_block(filters, 1), ("tag", 1)]


def _residual_down(filters: int) -> list[tuple[str, int]]:
    # The shortcut is avg_pool 2x2/2 of the input; add_prev zero-pads channels to match.
    return [("relu", 0), ("add_prev", 2), ("avg_pool", 2), ("skip", 1), ("tag", 2),
            *_block(filters, 2), ("tag", 1)]


ARCH: list[tuple[str, int]] = [
    ("fc", 128), ("avg_pool_all", 0),
    *_residual_down(256), *_residual(256), *_residual(256),
    *_residual_down(256), *_residual(128), *_residual(128),
    *_residual_down(128), *_residual(64), *_residual(64), *_residual(64),
    *_residual_down(64), *_residual(32), *_residual(32), *_residual(32),
    ("max_pool", 3), ("relu", 0), ("affine", 0), ("con7s2", 32),
    ("input", 150),
]


@dataclass
class Layer:
    kind: str
    arg: int
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    stride: int = 1
    pad: int = 0
    size: int = 0


@dataclass
class DlibResNet:
    layers: list[Layer]          # outermost first, like ARCH
    mean_rgb: tuple[float, float, float]
    input_size: int
    loss: str
    bytes_read: int

    def n_params(self) -> int:
        return sum(w.size for layer in self.layers for w in layer.weights.values())


def _read_conv(r: _Reader, layer: Layer, filters: int, ksize: int, stride: int) -> None:
    name = r.expect("con", ("con_4", "con_5", "con_6"))
    params = r.tensor().ravel()
    num_filters, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    w_shape, b_shape = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if name in ("con_5", "con_6") else True
    if name == "con_6":
        r.bool()  # use_relu: fused relu flag, always off in this model
    if (num_filters, nr, nc, sy, sx) != (filters, ksize, ksize, stride, stride) or py != px:
        raise DlibFormatError(f"conv: file has {num_filters} filters {nr}x{nc}/{sy}, expected "
                              f"{filters} {ksize}x{ksize}/{stride}")
    nw = int(np.prod(w_shape))
    layer.weights["W"] = params[:nw].reshape(w_shape)  # (out, in, kh, kw)
    nb = int(np.prod(b_shape))
    layer.weights["b"] = params[nw:nw + nb].copy() if use_bias and nb else np.zeros(filters, np.float32)
    layer.stride, layer.pad, layer.size = stride, py, ksize


def _read_affine(r: _Reader, layer: Layer) -> None:
    # The released model stores inference-mode affine layers (batch norm already folded);
    # bn_con is accepted too, and folded here with its running statistics.
    name = r.expect("affine", ("affine_", "affine_2", "bn_con2"))
    params = r.tensor().ravel()
    g_shape, _ = r.alias(), r.alias()
    k = int(np.prod(g_shape))
    if name == "bn_con2":
        r.tensor()
        r.tensor()
        running_mean, running_var = r.tensor().ravel(), r.tensor().ravel()
        r.int()
        r.int()
        for _ in range(4):
            r.float()
        eps = r.float()
        gamma = params[:k] / np.sqrt(running_var + eps)
        layer.weights["gamma"] = gamma.astype(np.float32)
        layer.weights["beta"] = (params[k:2 * k] - gamma * running_mean).astype(np.float32)
        return
    r.int()  # mode: per-channel (CONV_MODE)
    if name == "affine_2":
        r.bool()  # disabled flag
    layer.weights["gamma"] = params[:k].copy()
    layer.weights["beta"] = params[k:2 * k].copy()


def _read_fc(r: _Reader, layer: Layer, outputs: int) -> None:
    name = r.expect("fc", ("fc_2", "fc_3"))
    n_out, n_in = r.int(), r.int()
    params = r.tensor().ravel()
    w_shape, _ = r.alias(), r.alias()
    r.int()  # bias mode: this model has no bias
    for _ in range(4):
        r.float()
    if name == "fc_3":
        r.bool()
    if n_out != outputs:
        raise DlibFormatError(f"fc: {n_out} outputs, expected {outputs}")
    layer.weights["W"] = params[: int(np.prod(w_shape))].reshape(n_in, n_out)


def _read_details(r: _Reader, layer: Layer) -> None:
    kind = layer.kind
    if kind.startswith("con"):
        ksize = 7 if kind.startswith("con7") else 3
        stride = 2 if kind.endswith("s2") else 1
        _read_conv(r, layer, layer.arg, ksize, stride)
    elif kind == "affine":
        _read_affine(r, layer)
    elif kind == "relu":
        if r.expect("relu", ("relu_", "relu_2")) == "relu_2":
            r.bool()
    elif kind in ("max_pool", "avg_pool", "avg_pool_all"):
        r.expect(kind, ("max_pool_2", "avg_pool_2"))
        nr, _nc, sy, _sx, py, _px = (r.int() for _ in range(6))
        layer.size, layer.stride, layer.pad = nr, sy, py
    elif kind == "add_prev":
        r.expect("add_prev", ("add_prev_",))
    elif kind == "fc":
        _read_fc(r, layer, layer.arg)
    else:  # pragma: no cover - ARCH only holds the kinds above
        raise DlibFormatError(f"unknown layer kind {kind}")


def parse(path: str | Path) -> DlibResNet:
    """Parse the .dat file. Raises DlibFormatError naming the byte offset on any mismatch."""
    r = _Reader(Path(path).read_bytes())
    if r.int() != 1:
        raise DlibFormatError("not a dlib loss-layer file (version != 1)")
    loss = r.str()
    if loss == "loss_metric_2":
        r.float()  # margin
        r.float()  # distance threshold
    layers: list[Layer | None] = [None] * len(ARCH)
    info: dict[str, Any] = {}

    def read(i: int) -> None:
        kind, arg = ARCH[i]
        version = r.int()
        layer = Layer(kind, arg)
        if kind in ("tag", "skip"):
            read(i + 1)
            layers[i] = layer
            return
        if kind == "input":
            raise DlibFormatError("input reached as a computational layer")
        is_bottom = ARCH[i + 1][0] == "input"
        if is_bottom:
            # add_layer<LAYER, input> stores the input layer inline before the details.
            if version not in (2, 3):
                raise DlibFormatError(f"bottom layer version {version}")
            r.expect("input", ("input_rgb_image_sized",))
            info["mean"] = (r.float(), r.float(), r.float())
            info["nr"], info["nc"] = r.int(), r.int()
        else:
            if version not in (1, 2):
                raise DlibFormatError(f"layer {i} ({kind}) version {version}")
            read(i + 1)
        _read_details(r, layer)
        for _ in range(3):  # setup/stale/disabled flags
            r.bool()
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        if is_bottom:
            r.tensor()  # grad_final
            if version >= 3:
                r.int()  # sample expansion factor
        elif version == 2:
            r.tensor()  # params_grad
        layers[i] = layer

    read(0)
    if info.get("nr") != 150 or info.get("nc") != 150:
        raise DlibFormatError(f"input size {info.get('nr')}x{info.get('nc')}, expected 150x150")
    # The list drops the pseudo layer "input" at the end.
    done = [layer for layer in layers[:-1] if layer is not None]
    if len(done) != len(ARCH) - 1:
        raise DlibFormatError("architecture walk did not reach every layer")
    return DlibResNet(done, info["mean"], 150, loss, r.pos)
