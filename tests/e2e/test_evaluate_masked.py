"""`scripts/evaluate.py --masked` end to end on a small folder of real labelled faces."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_app.models import ModelSet, default_models_dir
from scripts import evaluate
from scripts.common import image_files, not_rmfrd
from tests.conftest import DATA


@pytest.fixture(scope="module")
def people(tmp_path_factory):  # type: ignore[no-untyped-def]
    """DIR/<person>/<photo>: 14 people of real-masked-dev with 4 bare photos each, plus 6 strangers (the mask
    set's numbered web photos; RMFRD's photos are never used: its other people judge the product)."""
    dev = DATA / "real-masked-dev"
    src = DATA / "masks-chandrikadeb7" / "dataset" / "without_mask"
    if not dev.is_dir() or not src.is_dir():
        pytest.fail(f"real-masked-dev or the mask set not found in {DATA}; set EDGE_APP_DATA", pytrace=False)
    root = tmp_path_factory.mktemp("people")
    for person in sorted(d for d in dev.iterdir() if d.is_dir())[:14]:
        (root / person.name).mkdir()
        for p in image_files(person / "unmasked")[:4]:
            shutil.copy(p, root / person.name / p.name)
    for p in [p for p in not_rmfrd(image_files(src)) if p.name.startswith("augmented")][:6]:
        shutil.copy(p, root / p.name)
    return root


def test_masked_protocol_reports_three_scenarios_and_calibrates(people, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    out_json, roc = tmp_path / "eval.json", tmp_path / "roc.png"
    code = evaluate.main(["--masked", "--people", str(people), "--enrol", "1,2", "--masked-templates", "2",
                          "--models", str(models), "--json", str(out_json), "--roc", str(roc), "--no-progress",
                          "--calibrate", "--target-far", "0.05"])
    text, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["people"]["calibrate"] + report["people"]["test"] == 14
    for k in ("1", "2"):
        for sc in ("plain", "masked", "augment"):
            r = report["test"][k][sc]
            assert 0.0 <= r["rank1"]["rate"] <= 1.0 and r["genuine_pairs"] > 0 and r["impostor_pairs"] > 0
            assert set(r["tar_at_far"]) == {"0.01", "0.001"}
        assert report["test"][k]["mask_status"]["masked_probes_called_masked"]["rate"] >= 0.8
    assert roc.stat().st_size > 10_000
    # Three scenario rows per enrolment count, and a config snippet with the calibrated values.
    assert text.count("masked probe vs mask-augmented gallery") == 2
    cal = report["calibration"]["thresholds"]
    assert f"threshold = {cal['threshold']}" in text and f"masked_threshold = {cal['masked_threshold']}" in text
    t = ModelSet(models).thresholds()
    assert (t.plain, t.masked) == (cal["threshold"], cal["masked_threshold"])


@pytest.mark.parametrize("argv,message", [
    (["--enrol", "0"], "--enrol counts must be in 1..10"),
    (["--enrol", "x"], "comma-separated"),
    (["--masked-templates", "11"], "--masked-templates"),
    (["--target-far", "2"], "--target-far"),
    (["--people", "/nonexistent/people"], "--people folder not found"),
])
def test_bad_arguments_exit_2_naming_the_option(argv, message, capsys):
    assert evaluate.main(["--masked", *argv]) == 2
    assert message in capsys.readouterr().err


def test_too_few_people_is_a_usage_error(faces_dev, tmp_path, capsys):
    (tmp_path / "obama").mkdir()
    shutil.copy(faces_dev / "obama.jpg", tmp_path / "obama" / "a.jpg")
    assert evaluate.main(["--masked", "--people", str(tmp_path), "--no-progress"]) == 2
    assert "at least 4 labelled people" in capsys.readouterr().err


def test_too_few_impostor_pairs_for_the_target_far(people, capsys):
    assert evaluate.main(["--masked", "--people", str(people), "--enrol", "1", "--no-progress"]) == 2
    assert "cannot calibrate at FAR 0.001: needs >= 1000 impostor pairs" in capsys.readouterr().err
