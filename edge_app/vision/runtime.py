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
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


@dataclass(frozen=True)
class Kernels:
    """Where the ops of a loaded model run: inside the delegate (XNNPACK by default) or on the
    interpreter's own built-in kernels, which for some op/type pairs are slow reference code."""

    delegate: str
    ops: int  # ops of the model graph
    delegated: int
    partitions: int  # delegate nodes: each boundary between the two costs a copy and a sync
    on_cpu: dict[str, int]  # op name -> count of ops left on the built-in kernels

    def __str__(self) -> str:
        text = f"{self.delegate}: {self.delegated}/{self.ops} ops"
        if self.on_cpu:
            text += ", built-in kernels: " + ", ".join(f"{n} {op}" for op, n in sorted(self.on_cpu.items()))
        return text


def delegated_ops(ops: list[dict[str, Any]]) -> tuple[set[int], int]:
    """Indices of the graph's ops that a delegate took, from the interpreter's node list, which keeps
    the replaced nodes and appends one DELEGATE node per partition: a partition is everything reached
    walking back from a DELEGATE node's outputs until its inputs (or constants)."""
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    graph = {o["index"]: o for o in ops if o["op_name"] != "DELEGATE"}
    producer = {int(t): i for i, o in graph.items() for t in o["outputs"]}
    inside: set[int] = set()
    for d in delegates:
        boundary = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            node = producer.get(t)
            if t in boundary or node is None or node in inside:
                continue
            inside.add(node)
            stack.extend(int(x) for x in graph[node]["inputs"] if x >= 0)
    return inside, len(delegates)


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
        self.delegate_name = Path(delegate).name if delegate else "XNNPACK"  # the runtimes' default delegate
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

    def kernels(self) -> Kernels:
        """Which ops the delegate runs and which stay on the built-in kernels."""
        ops = self._it._get_ops_details()
        inside, partitions = delegated_ops(ops)
        graph = [o for o in ops if o["op_name"] != "DELEGATE"]
        on_cpu = Counter(str(o["op_name"]) for o in graph if o["index"] not in inside)
        return Kernels(self.delegate_name, len(graph), len(inside), partitions, dict(on_cpu))


T = TypeVar("T")


class SideBySide:
    """Independent calls at the same time: the first on the caller's thread, the others on worker threads
    ("<name>_N"), made on first use and shut down when this object goes. Pays for model runs of one thread
    each: TFLite lets go of the GIL while it runs."""

    def __init__(self, name: str, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"{name}: side by side needs at least one worker, got {workers}")
        self.name = name
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def run(self, first: Callable[[], T], *others: Callable[[], T]) -> list[T]:
        """[first(), *others()], the others on the workers; an exception of any of them is raised here."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
            weakref.finalize(self, self._pool.shutdown, wait=False)  # an unused helper leaves no thread behind
        futures = [self._pool.submit(call) for call in others]
        return [first(), *(f.result() for f in futures)]
