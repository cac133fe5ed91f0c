"""Edit a converted .tflite so every op lands on XNNPACK's fast kernels.

The converter's dynamic-range quantization (int8 weights, float activations) stores the depthwise
filters as int8 too. XNNPACK runs int8-weight CONV_2D / FULLY_CONNECTED as dynamically quantized
kernels (activations quantized per call, int8 dot products: VNNI on Intel, dot-product on ARM), but
not such depthwise convolutions: they fall back to TFLite's built-in hybrid kernels and cut the
graph into a dozen partitions (SFace: 11 of 64 ops, 12 partitions). Depthwise filters are small
(9 weights a channel), so they go back to their exact float32 values from the float build of the
same graph: the whole model is then one XNNPACK partition.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _op_name(model: Any, op: Any) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # old files keep small codes in the latter
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names[builtin]


def float_depthwise(dynamic: bytes, float32: bytes) -> tuple[bytes, int]:
    """The dynamic-range model with each int8 DEPTHWISE_CONV_2D filter replaced by the float32 filter
    of the same op in the float build (same converter, same graph, so the ops line up one to one).
    Returns the new flatbuffer and how many filters were replaced."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fu

    dyn, flt = fu.convert_bytearray_to_object(bytearray(dynamic)), fu.convert_bytearray_to_object(bytearray(float32))
    gd, gf = dyn.subgraphs[0], flt.subgraphs[0]
    if len(gd.operators) != len(gf.operators):
        raise ValueError(f"the two builds differ: {len(gd.operators)} ops vs {len(gf.operators)} in the float one")
    replaced = 0
    for i, (od, of) in enumerate(zip(gd.operators, gf.operators, strict=True)):
        name = _op_name(dyn, od)
        if name != _op_name(flt, of):
            raise ValueError(f"op {i}: {name} in the dynamic build, {_op_name(flt, of)} in the float one")
        if name != "DEPTHWISE_CONV_2D":
            continue
        td, tf_ = gd.tensors[od.inputs[1]], gf.tensors[of.inputs[1]]
        if td.type != schema.TensorType.INT8:
            continue
        if list(td.shape) != list(tf_.shape) or tf_.type != schema.TensorType.FLOAT32:
            raise ValueError(f"op {i} ({name}): filter {list(td.shape)} int8 vs {list(tf_.shape)} type {tf_.type}")
        if sum(t.buffer == td.buffer for t in gd.tensors) != 1:
            raise ValueError(f"op {i} ({name}): its int8 filter shares a buffer with another tensor")
        dyn.buffers[td.buffer].data = np.asarray(flt.buffers[tf_.buffer].data, np.uint8).copy()
        td.type = schema.TensorType.FLOAT32
        td.quantization = None
        replaced += 1
    return bytes(fu.convert_object_to_bytearray(dyn)), replaced
