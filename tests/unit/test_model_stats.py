"""scripts/model_stats.py: MAC formulas per op, and the counts on the bundled models against their files."""

from __future__ import annotations

from pathlib import Path

from scripts.model_stats import main, model_stats, op_macs

MODELS = Path(__file__).resolve().parents[2] / "models_tflite"


def test_mac_formulas() -> None:
    # 3x3 conv, 3 -> 16 channels, 8x8 output: every output value is 3*3*3 multiply-adds.
    assert op_macs("CONV_2D", [(1, 8, 8, 3), (16, 3, 3, 3), (16,)], (1, 8, 8, 16)) == 8 * 8 * 16 * 27
    assert op_macs("DEPTHWISE_CONV_2D", [(1, 8, 8, 16), (1, 3, 3, 16), (16,)], (1, 8, 8, 16)) == 8 * 8 * 16 * 9
    assert op_macs("FULLY_CONNECTED", [(1, 512), (128, 512), (128,)], (1, 128)) == 128 * 512
    assert op_macs("TRANSPOSE_CONV", [(4,), (8, 2, 2, 16), (1, 4, 4, 16)], (1, 8, 8, 8)) == 4 * 4 * 16 * 2 * 2 * 8
    assert op_macs("ADD", [(1, 8), (1, 8)], (1, 8)) == 0


def test_bundled_models_counted_from_their_graphs() -> None:
    sface = model_stats(MODELS / "face_embedder.tflite")
    size = (MODELS / "face_embedder.tflite").stat().st_size
    # int8 weights are nearly the whole file; float activations mean no int8 input.
    assert 0.9 * size < sface.weight_bytes <= size and sface.weight_dtypes["int8"] > 0.95 * sface.weight_bytes
    assert sface.input == "1x112x112x3 float32" and 400e6 < sface.macs < 800e6
    assert sface.macs_by_op["CONV_2D"] > 0.9 * sface.macs
    detector = model_stats(MODELS / "face_detector.tflite")
    assert set(detector.weight_dtypes) <= {"float16", "int32", "float32"} and detector.weight_dtypes["float16"] > 0
    assert detector.ops["DEQUANTIZE"] > 0  # fp16 weights are widened at load: counted at 2 bytes each
    mask = model_stats(MODELS / "mask_classifier.tflite")
    assert mask.input == "1x64x64x3 uint8" and mask.macs < detector.macs < sface.macs


def test_table_and_json(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert main(["--models", str(MODELS)]) == 0
    out = capsys.readouterr().out
    assert "face_embedder.tflite" in out and "MMACs" in out
    assert main(["--models", str(tmp_path)]) == 1
    assert "no .tflite files in" in capsys.readouterr().err
