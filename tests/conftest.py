"""Shared fixtures: real models, real face photos (../shared/data/faces-dev by default)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # scripts.modelbuild.dlib_ref is the reference the tests compare with

FACES_DEV = Path(os.environ.get("EDGE_APP_FACES_DEV", ROOT.parent / "shared" / "data" / "faces-dev"))
DATA = Path(os.environ.get("EDGE_APP_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def faces_dev() -> Path:
    # Never skip: without real faces these tests prove nothing, so a missing folder is a failure.
    if not (FACES_DEV / "obama.jpg").is_file():
        pytest.fail(f"real face images not found in {FACES_DEV}; set EDGE_APP_FACES_DEV", pytrace=False)
    return FACES_DEV


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled models folder, to break in one way per test."""
    import shutil

    from edge_app.models import default_models_dir

    dst = tmp_path / "models"
    shutil.copytree(default_models_dir(), dst)
    return dst


def edit_manifest(models: Path, fn: Callable[[dict[str, Any]], object]) -> None:
    """Apply ``fn`` to the MANIFEST.json of a models folder (e.g. drop an entry) and write it back."""
    import json

    m = json.loads((models / "MANIFEST.json").read_text())
    fn(m)
    (models / "MANIFEST.json").write_text(json.dumps(m))


@pytest.fixture(scope="session")
def model_set():  # type: ignore[no-untyped-def]
    from edge_app.models import ModelSet

    return ModelSet()


@pytest.fixture(scope="session")
def pipeline(model_set):  # type: ignore[no-untyped-def]
    return model_set.pipeline(num_threads=2)


@pytest.fixture(scope="session")
def dlib_model_set():  # type: ignore[no-untyped-def]
    """The same model set with dlib's ResNet as the embedder (kept for sites enrolled with it)."""
    from edge_app.models import ModelSet

    return ModelSet(embedder="dlib")


@pytest.fixture(scope="session")
def dlib_pipeline(dlib_model_set):  # type: ignore[no-untyped-def]
    return dlib_model_set.pipeline(num_threads=2)


@pytest.fixture(scope="session")
def dlib_ref():  # type: ignore[no-untyped-def]
    from scripts.modelbuild.dlib_ref import DlibReference

    return DlibReference()


@pytest.fixture(scope="session")
def masked_photo(pipeline) -> Path:  # type: ignore[no-untyped-def]
    """A real masked photo (real-masked-dev) that the pipeline finds, calls masked and passes the gates."""
    from edge_app.imageio import read_image

    for f in sorted((DATA / "real-masked-dev").glob("*/masked/*.jpg")):
        faces = pipeline.process(read_image(f), max_faces=1)
        if faces and faces[0].masked and faces[0].quality.passed:
            return f
    pytest.fail(f"no usable real masked photo in {DATA / 'real-masked-dev'}; set EDGE_APP_DATA", pytrace=False)


@pytest.fixture(scope="session")
def rgb(faces_dev: Path):  # type: ignore[no-untyped-def]
    from edge_app.imageio import read_image

    cache: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = read_image(faces_dev / name)
        return cache[name]

    return load


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """An MJPG .avi of RGB frames (all of one size): what the video-file sources of the tests read."""
    import cv2

    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened(), path
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def require_tool(name: str, package: str) -> str:
    """A command the tests run for real; .ci/run installs its Debian package, so missing is a failure, never a skip."""
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's {package} package", pytrace=False)
    return path


def kiosk_frame(img: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int] = (640, 480),
                face_fraction: float = 0.35) -> np.ndarray:
    """Re-frame a photo the way a door camera sees a person: face about `face_fraction` of the
    frame height, centred, on a 640x480 canvas."""
    import cv2

    w, h = size
    x0, y0, x1, y1 = box
    scale = face_fraction * h / (y1 - y0)
    cx, cy = (x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale
    m = np.array([[scale, 0, w / 2 - cx], [0, scale, h / 2 - cy]], np.float64)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


# --- MQTT: a real mosquitto (tests/mqtt_broker.py) ----------------------------------------------


@pytest.fixture(scope="session")
def mqtt_certs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """CA, server (127.0.0.1, localhost) and client certificates."""
    from tests.mqtt_broker import make_certs

    return make_certs(tmp_path_factory.mktemp("mqtt-pki"))


@pytest.fixture
def mqtt_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Plain, anonymous mosquitto on a free loopback port, with persistence; stopped at teardown."""
    from tests.mqtt_broker import Broker

    broker = Broker(tmp_path / "mosquitto", persistence=True).start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_tls_broker(tmp_path: Path, mqtt_certs):  # type: ignore[no-untyped-def]
    """TLS-only mosquitto that wants a client certificate from mqtt_certs' CA and user kiosk / kiosk-secret."""
    from tests.mqtt_broker import Broker

    broker = Broker(tmp_path / "mosquitto-tls", tls=mqtt_certs, require_certificate=True,
                    users={"kiosk": "kiosk-secret"}).start()
    yield broker
    broker.stop()


# --- real faulty filesystems: a small tmpfs that can be filled, a read-only bind mount ----------


def umount(path: Path) -> None:
    """Unmount, waiting a little for a process that just exited to let go; lazily as a last resort."""
    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], check=True)  # detached at least; the caller still hears of it
    raise RuntimeError(f"{path} was still busy when unmounted (lazily unmounted)")


@contextlib.contextmanager
def tmpfs_mount(mnt: Path, size: str = "16m") -> Iterator[Path]:
    """A real tmpfs of `size` at `mnt` (root only), unmounted on the way out."""
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        umount(mnt)


@contextlib.contextmanager
def read_only_bind_mount(src: Path, dst: Path) -> Iterator[Path]:
    """`src` seen read-only at `dst` (mount --bind + remount,ro,bind), unmounted on the way out."""
    dst.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], check=True)
        yield dst
    finally:
        umount(dst)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs mounted under tmp_path, unmounted at teardown."""
    with tmpfs_mount(tmp_path / "tmpfs") as mnt:
        yield mnt


def fill_disk(folder: Path) -> Path:
    """Fill the filesystem holding `folder` to the last byte with a ballast file; returns the file."""
    ballast = folder / "ballast.bin"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                size //= 2
    finally:
        os.close(fd)
    return ballast


@pytest.fixture
def read_only_bind(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """`bind(src)` -> a read-only bind mount of src; unmounted at teardown."""
    with contextlib.ExitStack() as stack:
        def bind(src: Path) -> Path:
            return stack.enter_context(read_only_bind_mount(src, tmp_path / f"ro-{src.name}"))

        yield bind
