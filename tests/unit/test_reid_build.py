"""scripts/modelbuild/reid.py's checks of its input: the IR folder, its files' hashes and the ops it can rebuild.
(The conversion itself runs with the build extras, TensorFlow and OpenVINO, which the tests do not install; its
result is checked against OpenVINO's runtime by the build and recorded in MANIFEST.json.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scripts.modelbuild import reid

ROOT = Path(__file__).resolve().parents[2]


def test_no_folder_names_the_option_and_the_variable(monkeypatch):
    monkeypatch.delenv("EDGE_APP_REID", raising=False)
    with pytest.raises(FileNotFoundError, match="pass --reid DIR or set \\$EDGE_APP_REID"):
        reid.ir_dir(None)


def test_a_missing_or_other_file_is_refused_by_name(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=f"{reid.NAME}.xml not found"):
        reid.ir_dir(tmp_path)
    (tmp_path / f"{reid.NAME}.xml").write_text("<net/>")
    with pytest.raises(ValueError, match=f"{reid.NAME}.xml: sha256 .* expected {reid.XML_SHA256}"):
        reid.ir_dir(tmp_path)
    monkeypatch.setenv("EDGE_APP_REID", str(tmp_path))  # the variable is read when --reid is not given
    with pytest.raises(ValueError, match="another export of the model"):
        reid.ir_dir(None)


def test_an_op_it_cannot_rebuild_is_named(tmp_path):
    xml = tmp_path / "net.xml"
    xml.write_text('<net name="x" version="11"><layers>'
                   '<layer id="0" name="in" type="Parameter"/><layer id="1" name="r" type="Interpolate"/>'
                   '<layer id="2" name="out" type="Result"/></layers><edges>'
                   '<edge from-layer="0" from-port="0" to-layer="1" to-port="0"/>'
                   '<edge from-layer="1" from-port="1" to-layer="2" to-port="0"/></edges></net>')
    with pytest.raises(NotImplementedError, match="net.xml: IR ops not handled here: \\['Interpolate'\\]"):
        reid.IRGraph(xml, b"")


def test_the_shipped_model_is_the_one_the_build_recorded():
    manifest = json.loads((ROOT / "models_tflite" / "MANIFEST.json").read_text())
    entry = manifest["models"]["face_embedder_reid"]
    data = (ROOT / "models_tflite" / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert entry["source"]["sha256"] == {"xml": reid.XML_SHA256, "bin": reid.BIN_SHA256}
    builds = entry["agreement"]["builds"]
    # The float32 rebuild matches OpenVINO's runtime; the shipped int8-weight build stays within the floor.
    assert builds["float32"]["max_abs_diff_vs_openvino"] <= reid.TOLERANCE
    assert builds[entry["agreement"]["chosen"]]["cosine_vs_openvino"]["min"] >= reid.COSINE_FLOOR
    assert entry["input"]["shape"] == [1, reid.CHIP, reid.CHIP, 3] and entry["output"]["dim"] == reid.DIM
