"""`scripts/detection_eval.py` end to end on a few real crops and mask-set photos (its figures are in docs)."""

from __future__ import annotations

import json

from scripts import detection_eval
from tests.conftest import DATA


def test_detection_eval_reports_every_condition(capsys):  # type: ignore[no-untyped-def]
    code = detection_eval.main(["--step", "60", "--patches", "4", "--widths", "80,200", "--context", "6",
                                "--json", "--data", str(DATA)])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    rows = {(row["condition"], row["kind"]): row for row in r["rows"]}
    assert set(rows) == {(c, k) for c in ("as-crop", "80", "200") for k in ("masked", "unmasked")}
    assert all(row["n"] > 0 and 0.0 <= row["found"] <= 1.0 for row in rows.values())
    assert rows[("as-crop", "unmasked")]["found"] == 1.0  # every bare crop is found as it is
    # the mask status column: share of found faces called what their folder says (tests/unit/test_mask_status.py
    # holds the classifier to it over plain colours; these few crops only check the column)
    assert rows[("200", "unmasked")]["mask_status_right"] >= 0.85
    assert all(0.0 <= row["mask_status_right"] <= 1.0 for row in rows.values())
    ctx = r["in_context"]
    assert set(ctx) == {"masked", "unmasked"}
    for c in ctx.values():
        assert c["tried"] == 6 and 1 <= c["used"] <= 6
        assert c["found"]["200"] == 1.0  # found at full size, found again at 200 px with its surroundings
    assert r["false_faces"]["blank"] == 0 and r["false_faces"]["noise"] == 0


def test_detection_eval_names_a_bad_argument(capsys):  # type: ignore[no-untyped-def]
    assert detection_eval.main(["--context", "-1", "--data", str(DATA)]) == 2
    assert "--context is a number of photos" in capsys.readouterr().err
    assert detection_eval.main(["--context", "3", "--data", str(DATA / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
