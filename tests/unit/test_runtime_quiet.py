"""The TFLite runtime's notes on fd 2 are kept out of stderr; everything else written there passes (item 16)."""

from __future__ import annotations

import logging
import os

import pytest

from edge_app.vision.runtime import quiet_native_stderr


def test_runtime_info_notes_go_to_the_debug_log_and_errors_pass(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="edge_app.vision.runtime")
    with quiet_native_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: something real\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "ERROR: something real" in err
    assert "runtime: Created TensorFlow Lite XNNPACK delegate for CPU." in caplog.text
    os.write(2, b"after\n")  # fd 2 is back
    assert capfd.readouterr().err == "after\n"


def test_a_failed_load_still_shows_what_the_runtime_said(capfd):
    with pytest.raises(RuntimeError), quiet_native_stderr():
        os.write(2, b"ERROR: Didn't find op for builtin opcode\n")
        raise RuntimeError("load failed")
    assert "Didn't find op" in capfd.readouterr().err


def test_loading_a_real_model_prints_nothing(capfd, model_set):
    model_set.pipeline(num_threads=1)
    assert capfd.readouterr().err == ""
