"""Multiply-adds and weight bytes of each bundled .tflite model, counted from its graph.

    python scripts/model_stats.py [--models DIR] [--json]

The litert interpreter is loaded without its default XNNPACK delegate, so its op list is the model's own
graph. MACs: CONV_2D (out H*W*Cout * kh*kw*Cin), DEPTHWISE_CONV_2D (out H*W*C * kh*kw), FULLY_CONNECTED
(rows * out * in), TRANSPOSE_CONV, BATCH_MATMUL; other ops (ADD, PRELU, PAD...) are counted as element ops,
not MACs. Weights: tensors that ops read and no op writes, other than the model's inputs, at their stored
dtype (fp16 weights count 2 bytes, int8 1). These are the numbers docs/arm64.md scales published Raspberry Pi
measurements by.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_app.models import default_models_dir


@dataclass
class ModelStats:
    file: str
    input: str
    macs: int = 0
    element_ops: int = 0
    weight_bytes: int = 0
    weight_dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> bytes
    ops: dict[str, int] = field(default_factory=dict)  # op name -> count
    macs_by_op: dict[str, int] = field(default_factory=dict)


def _interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def op_macs(name: str, shapes: list[tuple[int, ...]], out: tuple[int, ...]) -> int:
    """Multiply-adds of one op from its input shapes and first output shape (NHWC, TFLite filter layouts)."""
    n_out = int(np.prod(out)) if out else 0
    if name == "CONV_2D":  # filter [Cout, kh, kw, Cin]
        _, kh, kw, cin = shapes[1]
        return n_out * kh * kw * cin
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]
        _, kh, kw, _ = shapes[1]
        return n_out * kh * kw
    if name == "FULLY_CONNECTED":  # weights [out, in]
        return n_out * shapes[1][-1]
    if name == "TRANSPOSE_CONV":  # inputs: output_shape, filter [Cout, kh, kw, Cin], input [N, H, W, Cin]
        cout, kh, kw, _ = shapes[1]
        return int(np.prod(shapes[2])) * kh * kw * cout
    if name == "BATCH_MATMUL":  # [..., M, K] x [..., K, N]
        return n_out * shapes[0][-1]
    return 0


def model_stats(path: Path) -> ModelStats:
    it = _interpreter(path)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()  # the only op-level view the interpreter offers
    produced = {int(i) for op in ops for i in op["outputs"]}
    model_inputs = {d["index"] for d in it.get_input_details()}
    inp = it.get_input_details()[0]
    st = ModelStats(path.name, f"{'x'.join(str(int(x)) for x in inp['shape'])} {np.dtype(inp['dtype']).name}")
    weights: set[int] = set()
    for op in ops:
        name = op["op_name"]
        st.ops[name] = st.ops.get(name, 0) + 1
        ins = [int(i) for i in op["inputs"] if i >= 0]
        shapes = [tuple(int(x) for x in tensors[i]["shape"]) for i in ins]
        out = tuple(int(x) for x in tensors[int(op["outputs"][0])]["shape"])
        macs = op_macs(name, shapes, out)
        if macs:
            st.macs += macs
            st.macs_by_op[name] = st.macs_by_op.get(name, 0) + macs
        elif name not in ("RESHAPE", "DEQUANTIZE", "QUANTIZE"):
            st.element_ops += int(np.prod(out)) if out else 0
        weights.update(i for i in ins if i not in produced and i not in model_inputs)
    for i in weights:
        t = tensors[i]
        dtype = np.dtype(t["dtype"])
        nbytes = int(np.prod(t["shape"])) * dtype.itemsize
        st.weight_bytes += nbytes
        st.weight_dtypes[dtype.name] = st.weight_dtypes.get(dtype.name, 0) + nbytes
    return st


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled ones)")
    ap.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    args = ap.parse_args(argv)
    folder = args.models or default_models_dir()
    files = sorted(folder.glob("*.tflite"))
    if not files:
        print(f"model_stats: no .tflite files in {folder}", file=sys.stderr)
        return 1
    stats = [model_stats(p) for p in files]
    if args.json:
        json.dump([asdict(s) for s in stats], sys.stdout, indent=2)
        print()
        return 0
    print(f"{'model':<28} {'input':<20} {'MMACs':>8} {'weights':>10}  weight dtypes / MACs by op")
    for s in stats:
        dtypes = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(s.weight_dtypes.items()))
        by_op = ", ".join(f"{k} {v / s.macs:.0%}" for k, v in sorted(s.macs_by_op.items(), key=lambda kv: -kv[1]))
        print(f"{s.file:<28} {s.input:<20} {s.macs / 1e6:>8.1f} {s.weight_bytes / 1024:>7.0f} KiB  {dtypes}; {by_op}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
