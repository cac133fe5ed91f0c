"""`scripts/door_latency.py` end to end: real daemon, models, SQLite and gpiozero's MockFactory."""

from __future__ import annotations

import json

import pytest

from scripts import door_latency
from tests.conftest import DATA


@pytest.mark.parametrize("liveness", [False, True])
def test_obama_walks_up_and_the_door_opens_on_the_third_face_frame(capsys, liveness):  # type: ignore[no-untyped-def]
    args = ["--people", "2", "--json", "--no-progress", "--data", str(DATA)] + (["--liveness"] if liveness else [])
    assert door_latency.main(args) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["liveness"] is liveness and r["people"] == 2 and r["granted"] == 2
    assert [row["frames"] for row in r["rows"]] == [3, 3]  # the vote: 3 agreeing frames
    assert all(row["ms"] > 0 for row in r["rows"])
    assert "no liveness check" not in captured.err  # the check is either in the vote or switched off
