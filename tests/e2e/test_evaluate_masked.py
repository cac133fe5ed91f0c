"""`scripts/evaluate.py --masked` end to end on a small folder of real labelled faces."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from edge_app.models import ModelSet, default_models_dir
from scripts import evaluate
from tests.conftest import DATA

IDENTITY = re.compile(r"^\d+_\d+_([a-z]+)_\d+\.")


@pytest.fixture(scope="module")
def people(tmp_path_factory):  # type: ignore[no-untyped-def]
    """DIR/<person>/<photo>: 10 people of the data set with 4 photos each, plus 6 strangers."""
    src = DATA / "masks-chandrikadeb7" / "dataset" / "without_mask"
    if not src.is_dir():
        pytest.fail(f"labelled faces not found in {src}; set EDGE_APP_DATA", pytrace=False)
    by: dict[str, list] = {}
    strangers = []
    for p in sorted(src.glob("*.jpg")):
        m = IDENTITY.match(p.name)
        if m:
            by.setdefault(m.group(1), []).append(p)
        elif p.name.startswith("augmented"):
            strangers.append(p)
    root = tmp_path_factory.mktemp("people")
    chosen = [n for n, ps in sorted(by.items()) if len(ps) >= 6][:10]
    for name in chosen:
        (root / name).mkdir()
        for p in by[name][:4]:
            shutil.copy(p, root / name / p.name)
    for p in strangers[:6]:
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
    assert report["people"]["calibrate"] + report["people"]["test"] == 10
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
