"""`scripts/evaluate.py --openset` end to end on a small <person>/{masked,unmasked} folder of real photos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_app.models import ModelSet, default_models_dir
from scripts import evaluate
from tests.conftest import DATA


@pytest.fixture(scope="module")
def people(tmp_path_factory):  # type: ignore[no-untyped-def]
    """8 people of real-masked-dev with 2 unmasked and 1 masked photo each."""
    src = DATA / "real-masked-dev"
    if not src.is_dir():
        pytest.fail(f"real masked photos not found in {src}; set EDGE_APP_DATA", pytrace=False)
    root = tmp_path_factory.mktemp("openset")
    for d in sorted(p for p in src.iterdir() if p.is_dir())[:8]:
        for kind, n in (("unmasked", 2), ("masked", 1)):
            (root / d.name / kind).mkdir(parents=True)
            for f in sorted((d / kind).glob("*.jpg"))[:n]:
                shutil.copy(f, root / d.name / kind / f.name)
    return root


def test_openset_reports_rates_and_calibrates(people, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    out_json, det = tmp_path / "open.json", tmp_path / "det.png"
    code = evaluate.main(["--openset", str(people), "--enrol", "1", "--gallery-size", "0", "--models", str(models),
                          "--masked-templates", "1", "--json", str(out_json), "--det", str(det), "--no-progress",
                          "--cache", str(tmp_path / "cache"), "--calibrate", "--target-fpir", "0.2",
                          "--target-frame-fpir", "0.2"])
    _text, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["people"] == 8 and set(report["results"]) == {"crop", "framed"}
    for how in ("crop", "framed"):
        for kind in ("masked", "unmasked"):
            r = report["results"][how]["1"][kind]
            assert r["probes"] > 0 and 0 <= r["found"] <= 1 and 0 <= r["rank1"] <= 1
            assert set(r["at_fpir"]) == {"0.01", "0.001"}
            for mode in ("photo", "walkup"):
                assert 0 <= r[mode]["strangers_granted"] <= 1
    # calibration wrote a rule the kiosk loads, for the embedder it was measured with
    t = ModelSet(models).thresholds()
    rule = report["calibration"]["rule"]
    assert (t.plain, t.masked, t.margin, t.masked_margin) == (round(rule["threshold"], 4),
                                                             round(rule["masked_threshold"], 4),
                                                             rule["margin"], rule["masked_margin"])
    assert report["calibration"]["stranger_walkups_granted"] <= 0.2
    assert det.stat().st_size > 10_000
    # a second run reads the embeddings from the cache and gives the same figures
    code = evaluate.main(["--openset", str(people), "--enrol", "1", "--gallery-size", "0", "--models", str(models),
                          "--masked-templates", "1", "--json", "-", "--no-progress",
                          "--cache", str(tmp_path / "cache")])
    again = json.loads(capsys.readouterr().out)
    assert code == 0 and len(list((tmp_path / "cache").glob("openset-*.npz"))) == 1
    assert again["results"]["crop"]["1"]["masked"]["rank1"] == report["results"]["crop"]["1"]["masked"]["rank1"]


def test_openset_refuses_a_folder_without_the_layout(tmp_path, capsys):
    (tmp_path / "alice").mkdir()
    assert evaluate.main(["--openset", str(tmp_path), "--no-progress"]) == 2
    assert "expected subfolders masked/ and/or unmasked/" in capsys.readouterr().err


def test_enrol_masked_is_refused_for_calibration_and_out_of_range(people, capsys):
    assert evaluate.main(["--openset", str(people), "--enrol-masked", "1", "--calibrate", "--no-progress"]) == 2
    assert "--enrol-masked must be in 0..10 and is not for --calibrate" in capsys.readouterr().err
    assert evaluate.main(["--openset", str(people), "--enrol-masked", "11", "--no-progress"]) == 2
    assert "--enrol-masked" in capsys.readouterr().err


def test_tnorm_cohort_file_is_checked_before_any_photo_is_embedded(people, tmp_path, capsys):
    """--tnorm: a wrong cohort file is refused with its name and the fault, exit 2, and nothing embedded (t-norm is an
    experiment on one network's embeddings: SFace's here; the fused default embedder refuses it by name)."""
    ms = ModelSet(embedder="sface")
    dim = ms.pipeline(mask=False).embedder.dim
    cache = tmp_path / "cache"
    good = np.zeros((4, dim), np.float32)
    good[:, 0] = 1
    cases = {
        "garbage.npz": None,
        "single.npy": "npy",
        "no_masked.npz": {"plain": good},
        "wrong_dim.npz": {"plain": good, "masked": np.ones((4, dim + 1), np.float32)},
        "nan.npz": {"plain": good, "masked": np.full((4, dim), np.nan, np.float32)},
        "other_embedder.npz": {"plain": good, "masked": good, "embedder_sha256": np.array("f" * 64)},
    }
    expect = {"garbage.npz": "not a readable .npz file", "single.npy": "not an .npz archive",
              "no_masked.npz": "array 'masked'",
              "wrong_dim.npz": f"array 'masked' must be (n, {dim})", "nan.npz": "not finite",
              "other_embedder.npz": "made with embedder ffffffffffff"}
    for name, arrays in cases.items():
        path = tmp_path / name
        if arrays is None:
            path.write_bytes(b"not an npz")
        elif arrays == "npy":
            np.save(path, good)
        else:
            np.savez(path, **arrays)
        code = evaluate.main(["--openset", str(people), "--embedder", "sface", "--tnorm", str(path), "--cache",
                              str(cache), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and str(path) in err and expect[name] in err, (name, err)
    np.savez(tmp_path / "ok.npz", plain=good, masked=good, embedder_sha256=np.array(ms.embedder_sha))
    code = evaluate.main(["--openset", str(people), "--embedder", "sface", "--tnorm", str(tmp_path / "ok.npz"),
                          "--tnorm-top", "5", "--cache", str(cache), "--no-progress"])
    assert code == 2 and "--tnorm-top must be in 1..4" in capsys.readouterr().err
    code = evaluate.main(["--openset", str(people), "--tnorm", str(tmp_path / "ok.npz"), "--cache", str(cache),
                          "--no-progress"])
    assert code == 2 and "--tnorm is not defined for the fused embedder sface+edgeface+reid" in capsys.readouterr().err
    assert not cache.exists() or not list(cache.glob("openset-*.npz"))
