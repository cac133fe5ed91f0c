"""Load and run a .tflite model with ai-edge-litert, falling back to tflite-runtime.

TensorFlow itself is never imported here: the device has only the small runtime.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Tried in order; the first that imports wins.
_RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


# The C++ runtime prints notes such as "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight
# to file descriptor 2 when an interpreter is built; no environment variable of ai-edge-litert turns them
# off. fd 2 is process-wide, so model loads that capture it take turns.
_STDERR_LOCK = threading.Lock()
_NOISE_PREFIX = "INFO: "


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Catch what native code writes to fd 2 meanwhile; pass every line on except the runtime's INFO notes
    (those go to the debug log). Lines written by other threads meanwhile are passed on too, late."""
    with _STDERR_LOCK:
        with suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (closed by a service manager): nothing to keep quiet
            yield
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                _pass_on(sink.read().decode("utf-8", "replace"))


def _pass_on(caught: str) -> None:
    # Also on a failed load: the runtime's own error lines say why.
    for line in caught.splitlines():
        if line.startswith(_NOISE_PREFIX):
            log.debug("runtime: %s", line[len(_NOISE_PREFIX):])
        elif line.strip():
            print(line, file=sys.stderr)


def _runtime_module() -> Any:
    errors = []
    for name in _RUNTIMES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError(
        "no TFLite runtime found; install ai-edge-litert (or tflite-runtime on boards without it). "
        + "; ".join(errors)
    )


def runtime_name() -> str:
    """Dotted module name of the runtime that will be used."""
    return str(_runtime_module().__name__)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    index: int
    shape: tuple[int, ...]
    dtype: type
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


def _spec(d: dict[str, Any]) -> TensorSpec:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorSpec(d["name"], int(d["index"]), tuple(int(x) for x in d["shape"]), d["dtype"],
                      float(scale), int(zp))


class TFLiteModel:
    """One interpreter, one input tensor. Not thread-safe: one instance per thread."""

    def __init__(self, path: str | Path, num_threads: int = 2, delegate: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        mod = _runtime_module()
        delegates = []
        if delegate:
            # e.g. "libedgetpu.so.1" for a Coral; the model must then be compiled for the Edge TPU.
            delegates.append(mod.load_delegate(delegate))
        try:
            with quiet_native_stderr():
                self._it = mod.Interpreter(model_path=str(path), num_threads=num_threads,
                                           experimental_delegates=delegates or None)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"cannot load TFLite model {path}: {exc}") from exc
        self.path = path
        self.inputs = [_spec(d) for d in self._it.get_input_details()]
        self.outputs = [_spec(d) for d in self._it.get_output_details()]
        if len(self.inputs) != 1:
            raise ValueError(f"{path}: expected one input tensor, found {len(self.inputs)}")
        self.input = self.inputs[0]
        log.debug("loaded %s with %s (%d threads)", path.name, _runtime_module().__name__, num_threads)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on ``x`` (already in the input dtype and shape); outputs dequantized to float32."""
        if tuple(x.shape) != self.input.shape:
            raise ValueError(f"{self.path.name}: input shape {tuple(x.shape)}, expected {self.input.shape}")
        if x.dtype != self.input.dtype:
            raise ValueError(f"{self.path.name}: input dtype {x.dtype}, expected {np.dtype(self.input.dtype)}")
        self._it.set_tensor(self.input.index, x)
        self._it.invoke()
        outs = []
        for spec in self.outputs:
            y = self._it.get_tensor(spec.index)
            if spec.quantized:
                y = (y.astype(np.float32) - spec.zero_point) * spec.scale
            outs.append(np.asarray(y, dtype=np.float32))
        return outs
