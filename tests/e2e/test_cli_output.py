"""What `edge-app` prints: no runtime noise, a kiosk journal at INFO, video recognition lines, progress bars,
large images (issue 10 items 14, 16, 17). Real models, real photos, real subprocesses."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.cli import EXIT_ERROR, EXIT_OK, main
from edge_app.gallery.store import Gallery
from edge_app.imageio import read_image
from tests.conftest import kiosk_frame, write_video

EXE = Path(sys.executable).parent / "edge-app"
NOISE = "XNNPACK"


def run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def db(tmp_path_factory, pipeline, model_set, rgb):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("gallery") / "g.db"
    with Gallery(path) as g:
        for name, photo in (("Barack Obama", "obama.jpg"), ("Joe Biden", "biden.jpg")):
            g.add_person(name)
            e = pipeline.process(rgb(photo), max_faces=1)[0].embedding
            g.add_templates(name, e[None], model_sha=model_set.embedder_sha, masked=False)
    return path


@pytest.fixture(scope="module")
def frames(pipeline, rgb):  # type: ignore[no-untyped-def]
    hall = np.full((480, 640, 3), 90, np.uint8)

    def face(photo: str, grow: float = 0.0) -> np.ndarray:
        img = rgb(photo)
        return kiosk_frame(img, pipeline.detector.detect(img)[0].box, face_fraction=0.3 + grow)

    return hall, face


# --- 16: no runtime noise; the daemon's journal at INFO ----------------------------------------------


def test_recognize_prints_no_runtime_noise(db, faces_dev):
    res = subprocess.run([str(EXE), "recognize", str(faces_dev / "obama.jpg"), "--db", str(db)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == EXIT_OK, res.stderr
    assert "\tBarack Obama\t" in res.stdout
    assert NOISE not in res.stderr and NOISE not in res.stdout, res.stderr


def test_daemon_logs_one_line_per_decision_without_v(db, frames, tmp_path):
    hall, face = frames
    video = write_video(tmp_path / "door.avi", [hall] * 3 + [face("obama2.jpg", 0.01 * i) for i in range(8)]
                        + [hall] * 10, fps=10)
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text('[door]\npins = "mock"\npulse_seconds = 0.2\n[device]\nid = "log-test"\n')
    kiosk_db = tmp_path / "kiosk.db"
    shutil.copy(db, kiosk_db)
    res = subprocess.run([str(EXE), "run", "--config", str(cfg), "--db", str(kiosk_db), "--source", str(video)],
                         capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == EXIT_OK, res.stderr
    lines = res.stderr.splitlines()
    decisions = [x for x in lines if " granted " in x or " denied " in x]
    assert len(decisions) == 1, res.stderr
    assert decisions[0].startswith("INFO edge_app.daemon: granted Barack Obama (score 0.")
    assert decisions[0].endswith(", mask no, reason granted)")
    assert any("running: device log-test" in x for x in lines)
    assert sum("unlocked" in x for x in lines) == 1, res.stderr  # the relay's pulse once, not once per module
    assert NOISE not in res.stderr
    assert len(lines) < 21 / 2, res.stderr  # nothing per frame: 21 frames, a handful of lines


# --- 17: video lines, annotated video speed, progress bars, sub-folders --------------------------------


def test_video_frames_without_a_face_say_so(db, frames, tmp_path, capsys):
    hall, face = frames
    video = write_video(tmp_path / "v.avi", [hall, hall, face("biden.jpg"), hall], fps=5)
    code, out, _ = run(capsys, "recognize", str(video), "--db", str(db))
    assert code == EXIT_OK
    rows = [line.split("\t")[:2] for line in out.splitlines()]
    assert rows == [[f"{video}#0", "no face"], [f"{video}#1", "no face"], [f"{video}#2", "Joe Biden"],
                    [f"{video}#3", "no face"]]


def test_annotated_video_keeps_real_time_with_every(db, frames, tmp_path, capsys):
    hall, face = frames
    video = write_video(tmp_path / "v.avi", [face("biden.jpg")] * 10 + [hall] * 10, fps=10)
    out_video = tmp_path / "ann.mp4"
    code, out, _ = run(capsys, "recognize", str(video), "--db", str(db), "--every", "10",
                       "--annotate", str(out_video))
    assert code == EXIT_OK and len(out.splitlines()) == 2
    cap = cv2.VideoCapture(str(out_video))
    fps, n = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n == 2 and fps == pytest.approx(1.0)  # 2 s of input is 2 s of output


def test_no_progress_bar_unless_stdout_and_stderr_are_terminals(db, faces_dev, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("biden.jpg", "obama.jpg", "obama2.jpg"):
        shutil.copy(faces_dev / name, folder / name)
    master, slave = pty.openpty()  # stderr a terminal, stdout a pipe: `edge-app recognize DIR > log`
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 0x0 would hide a bar anyway
    try:
        proc = subprocess.run([str(EXE), "recognize", str(folder), "--db", str(db)], stdout=subprocess.PIPE,
                              stderr=slave, timeout=120, check=False, env={**os.environ, "TERM": "xterm"})
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
    assert proc.returncode == EXIT_OK
    assert len(proc.stdout.splitlines()) == 3
    assert b"\r" not in err.replace(b"\r\n", b"\n") and b"frame/s" not in err and b"it/s" not in err, err


def test_sub_folders_are_reported_or_read_with_recursive(db, faces_dev, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "more").mkdir(parents=True)
    shutil.copy(faces_dev / "biden.jpg", folder / "a.jpg")
    shutil.copy(faces_dev / "obama.jpg", folder / "more" / "b.jpg")
    code, out, err = run(capsys, "recognize", str(folder), "--db", str(db))
    assert code == EXIT_OK
    assert f"skipped sub-folder {folder / 'more'} (use --recursive)" in err
    assert [line.split("\t")[1] for line in out.splitlines()] == ["Joe Biden"]
    code, out, err = run(capsys, "recognize", str(folder), "--db", str(db), "--recursive")
    assert code == EXIT_OK and "skipped sub-folder" not in err
    assert sorted(line.split("\t")[1] for line in out.splitlines()) == ["Barack Obama", "Joe Biden"]


# --- 14: large images -------------------------------------------------------------------------------------

# The peak resident memory of the child, from a wrapper process whose only child it is.
_PEAK_RSS = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stderr.write(r.stderr)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
             "print(r.stdout, end='')\n")


def _peak(argv: list[str]) -> tuple[int, int, str, str]:
    res = subprocess.run([sys.executable, "-c", _PEAK_RSS, *argv], capture_output=True, text=True, timeout=300,
                         check=True)
    head, _, out = res.stdout.partition("\n")
    code, mb = map(int, head.split())
    return code, mb, out, res.stderr


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory, faces_dev):  # type: ignore[no-untyped-def]
    """A real face photo blown up to 12000x12000 (144 MP), written by a separate process so this one stays small."""
    path = tmp_path_factory.mktemp("huge") / "obama_12000.jpg"
    subprocess.run([sys.executable, "-c",
                    "import cv2, sys\nimg = cv2.imread(sys.argv[1])\n"
                    "cv2.imwrite(sys.argv[2], cv2.resize(img, (12000, 12000), interpolation=cv2.INTER_LINEAR),"
                    " [cv2.IMWRITE_JPEG_QUALITY, 80])",
                    str(faces_dev / "obama.jpg"), str(path)], check=True, timeout=300)
    return path


def test_a_144_megapixel_jpeg_is_recognised_in_bounded_memory(db, huge_jpeg, faces_dev):
    code, mb, out, err = _peak([str(EXE), "recognize", str(huge_jpeg), "--db", str(db), "--json"])
    assert code == EXIT_OK, err
    faces = json.loads(out)["faces"]
    assert [f["name"] for f in faces] == ["Barack Obama"]
    # Decoded at 1/4 (3000x3000, 27 MB) instead of 432 MB plus copies; the models and libraries are most of it.
    assert mb < 300, f"peak RSS {mb} MB"


def _png_header(w: int, h: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\x00" * 64)


def test_absurd_images_are_refused_before_decoding(db, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))  # 1.2 GB of pixels if it were decoded
    code, _, err = run(capsys, "recognize", str(bomb), "--db", str(db))
    assert code == EXIT_ERROR and f"image {bomb} is 20000x20000 (400 MP); the limit is 200 MP" in err
    big_png = tmp_path / "big.png"
    big_png.write_bytes(_png_header(9000, 9000))
    code, _, err = run(capsys, "recognize", str(big_png), "--db", str(db))
    assert code == EXIT_ERROR and "9000x9000 (81 MP); only JPEG is decoded reduced" in err
    huge_file = tmp_path / "huge.jpg"
    with huge_file.open("wb") as f:  # sparse: 60 MB on paper, nothing on disk
        f.write(b"\xff\xd8\xff")
        f.truncate(60 * 1024 * 1024)
    code, _, err = run(capsys, "recognize", str(huge_file), "--db", str(db))
    assert code == EXIT_ERROR and f"image {huge_file} is 60 MB; the limit is 50 MB" in err


def test_a_large_jpeg_is_decoded_reduced_and_upright(tmp_path, faces_dev):
    src = read_image(faces_dev / "obama.jpg")
    big = cv2.resize(src, (src.shape[1] * 8, src.shape[0] * 8), interpolation=cv2.INTER_LINEAR)
    assert big.shape[0] * big.shape[1] > 16_000_000
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    got = read_image(path)
    assert got.shape[0] * got.shape[1] <= 16_000_000 and got.shape[0] * 2 >= big.shape[0] // 4
    small = cv2.resize(big, (got.shape[1], got.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(got.astype(int) - small).mean() < 4  # the same picture, RGB order kept
