"""A frozen camera's picture, told from a live one's (edge_app.hardware.freeze)."""

from __future__ import annotations

import numpy as np

from edge_app.hardware.freeze import RepeatedFrames


def test_only_a_pixel_for_pixel_repeat_counts_and_its_duration_is_measured():
    t = [100.0]
    watch = RepeatedFrames(clock=lambda: t[0])
    frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert not watch.repeated(frame) and watch.frozen_for() == 0.0
    t[0] = 101.0
    assert watch.repeated(frame.copy()) and watch.count == 1  # the same pixels in a new buffer
    t[0] = 104.5
    assert watch.repeated(frame) and watch.frozen_for() == 3.5 and watch.count == 2
    nudged = frame.copy()
    nudged[1, 2, 0] ^= 1  # one value in a row the quick check skips (not a multiple of 8)
    assert not watch.repeated(nudged) and watch.frozen_for() == 0.0
    assert not watch.repeated(nudged[:240])  # another size is another picture
    frame[0, 0, 0] ^= 1
    buffer = frame  # a source that writes each new picture into the same buffer
    assert not watch.repeated(buffer)
    buffer[100, 100, 1] ^= 1
    assert not watch.repeated(buffer)  # kept as a copy: the change is seen
