"""vision.runtime.SideBySide: independent calls at once, results in order, errors where the caller sees them."""

from __future__ import annotations

import threading

import pytest

from edge_app.vision.runtime import SideBySide


def test_results_come_in_order_and_the_others_run_on_named_workers():
    side = SideBySide("probe", 2)
    names: dict[str, str] = {}

    def call(key: str) -> str:
        names[key] = threading.current_thread().name
        return key

    assert side.run(lambda: call("a"), lambda: call("b"), lambda: call("c")) == ["a", "b", "c"]
    assert names["a"] == threading.current_thread().name
    assert names["b"].startswith("probe_") and names["c"].startswith("probe_")


def test_an_error_on_a_worker_is_raised_to_the_caller_and_a_bad_size_is_named():
    def fail() -> int:
        raise ValueError("worker failed")

    with pytest.raises(ValueError, match="worker failed"):
        SideBySide("probe", 1).run(lambda: 1, fail)
    with pytest.raises(ValueError, match="at least one worker"):
        SideBySide("probe", 0)
