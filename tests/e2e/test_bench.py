"""scripts/bench.py, the speed figure of the README, runs on the default model set and reports every model."""

from __future__ import annotations

import json

from scripts import bench


def test_bench_times_the_default_pipeline_and_names_every_embedders_kernels(capsys, faces_dev):
    code = bench.main(["--frames", "6", "--warmup", "1", "--distinct", "3", "--no-dlib", "--no-liveness", "--json",
                       "--no-progress", "--faces-dev", str(faces_dev)])
    out = capsys.readouterr().out
    assert code == 0, out
    ours = json.loads(out)["ours"]
    # SFace and EdgeFace-XS run every op on XNNPACK; the third network of the default embedder all but the slice
    # that cuts its crop out of the chip.
    assert ours["kernels"]["embedder"] == "XNNPACK: 64/64 ops"
    assert ours["kernels"]["embedder_2"] == "XNNPACK: 910/910 ops"
    assert ours["kernels"]["embedder_3"] == "XNNPACK: 194/195 ops, built-in kernels: 1 STRIDED_SLICE"
    assert "sface+edgeface+reid embedder" in ours["pipeline"] and ours["stages"]["embed"]["n"] == 6
    # The two networks side by side, timed against the two in turn in the same process.
    assert set(ours["side_by_side"]) == {"eyes", "embed"}
    emb = ours["side_by_side"]["embed"]
    assert emb["side_by_side"]["n"] == emb["in_turn"]["n"] > 0 and emb["ratio_median"] > 0

    code = bench.main(["--frames", "3", "--warmup", "1", "--distinct", "2", "--no-dlib", "--no-liveness", "--json",
                       "--no-progress", "--faces-dev", str(faces_dev), "--embed-in-turn"])
    assert code == 0
    assert "embed" not in json.loads(capsys.readouterr().out)["ours"]["side_by_side"]
