"""scripts/bench.py, the speed figure of the README, runs on the default model set and reports every model."""

from __future__ import annotations

import json

from scripts import bench


def test_bench_times_the_default_pipeline_and_names_both_embedders_kernels(capsys, faces_dev):
    code = bench.main(["--frames", "6", "--warmup", "1", "--distinct", "3", "--no-dlib", "--no-liveness", "--json",
                       "--no-progress", "--faces-dev", str(faces_dev)])
    out = capsys.readouterr().out
    assert code == 0, out
    ours = json.loads(out)["ours"]
    # SFace and EdgeFace-XS (the fused default embedder) both run every op on XNNPACK.
    assert ours["kernels"]["embedder"] == "XNNPACK: 64/64 ops"
    assert ours["kernels"]["embedder_2"] == "XNNPACK: 910/910 ops"
    assert "sface+edgeface embedder" in ours["pipeline"] and ours["stages"]["embed"]["n"] == 6
