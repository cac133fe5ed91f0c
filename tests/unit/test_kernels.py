"""Which kernels run each model: the shipped embedder must run every op on XNNPACK (issue 11, item 5)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edge_app.vision.runtime import delegated_ops


def _op(index: int, name: str, inputs: list[int], outputs: list[int]) -> dict[str, object]:
    return {"index": index, "op_name": name, "inputs": np.array(inputs), "outputs": np.array(outputs)}


def test_partition_walk_finds_the_ops_each_delegate_node_replaced() -> None:
    # t0 -> A -> t1 -> B -> t2 -> C (left on the CPU) -> t3 -> D -> t4; A, B in one partition, D in another.
    # t9 is a constant weight of B: a delegate input with no producer.
    ops = [_op(0, "CONV_2D", [0], [1]), _op(1, "PRELU", [1, 9], [2]), _op(2, "DEPTHWISE_CONV_2D", [2], [3]),
           _op(3, "FULLY_CONNECTED", [3, -1], [4]),
           _op(4, "DELEGATE", [0, 9], [2]), _op(5, "DELEGATE", [3], [4])]
    inside, partitions = delegated_ops(ops)
    assert inside == {0, 1, 3}
    assert partitions == 2


def test_partition_walk_without_a_delegate_leaves_every_op_on_the_cpu() -> None:
    ops = [_op(0, "CONV_2D", [0], [1]), _op(1, "PRELU", [1], [2])]
    assert delegated_ops(ops) == (set(), 0)


def test_shipped_embedder_and_detector_run_every_op_on_xnnpack(model_set) -> None:  # type: ignore[no-untyped-def]
    for name in ("face_embedder", "face_detector"):
        k = model_set.load(name).kernels()
        assert (k.delegated, k.partitions, k.on_cpu) == (k.ops, 1, {}), f"{name}: {k}"
        assert str(k) == f"XNNPACK: {k.ops}/{k.ops} ops"
    assert model_set.manifest["models"]["face_embedder"]["kernels"] == str(model_set.load("face_embedder").kernels())


def test_ops_left_on_builtin_kernels_are_named_and_counted(model_set) -> None:  # type: ignore[no-untyped-def]
    # dlib's full-int8 ResNet: XNNPACK takes most of it but not every quantized op.
    model = model_set.load("face_embedder_dlib")
    k = model.kernels()
    graph = Counter(str(o["op_name"]) for o in model._it._get_ops_details() if o["op_name"] != "DELEGATE")
    assert k.ops == sum(graph.values())
    assert k.on_cpu and sum(k.on_cpu.values()) == k.ops - k.delegated
    assert all(n <= graph[op] for op, n in k.on_cpu.items())
    assert k.partitions > 1
    for op, n in k.on_cpu.items():
        assert f"{n} {op}" in str(k)

