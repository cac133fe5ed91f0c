"""scripts/liveness_videos.py: real models on videos made from a real photo; rates, bad clips, bad arguments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts.liveness_videos import Clip as VideoClip
from scripts.liveness_videos import Window, judge, main, summarise, sweep


def rigid_frames(photo: np.ndarray, n: int) -> list[np.ndarray]:
    """A printed photo held in front of the camera and slid sideways: every frame one affine copy."""
    frames = []
    for i in range(n):
        m = np.float32([[0.5, 0, 100 + 4 * i], [0, 0.5, 40 + 2 * i]])
        frames.append(cv2.warpAffine(photo, m, (640, 480), borderValue=(40, 40, 40)))
    return frames


@pytest.fixture
def video_dir(tmp_path: Path, faces_dev: Path) -> Path:
    photo = cv2.imread(str(faces_dev / "obama.jpg"))
    frames = rigid_frames(photo, 12)
    (tmp_path / "print" / "frames").mkdir(parents=True)
    out = cv2.VideoWriter(str(tmp_path / "print" / "slide.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for i, f in enumerate(frames):
        out.write(f)
        cv2.imwrite(str(tmp_path / "print" / "frames" / f"{i:03d}.png"), f)
    out.release()
    (tmp_path / "bonafide").mkdir()
    (tmp_path / "bonafide" / "broken.mp4").write_bytes(b"not a video")
    return tmp_path


def test_a_rigid_photo_fails_the_motion_cue_and_a_broken_clip_is_named(video_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    png = video_dir / "tradeoff.png"
    assert main([str(video_dir), "--json", "--max-side", "640", "--plot", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and r["plot"] == str(png)
    pr = r["kinds"]["print"]
    # the video and the folder of the same frames: 12 frames each, two windows of 5 each
    assert pr["clips"] == 2 and pr["frames"] == 24 and pr["frames_with_face"] == 24 and pr["windows"] == 4
    assert pr["rate"] == "APCER" and pr["motion"] == 0.0 and pr["both"] == 0.0  # one plane: never passes
    assert pr["residual_p10_median_p90"][2] < 0.1
    clips = {Path(c["path"]).name: c for c in r["clips"]}
    assert clips["slide.avi"]["residuals"] == pytest.approx(clips["frames"]["residuals"], abs=0.02)
    assert "broken.mp4" in clips["broken.mp4"]["error"] or "cannot open" in clips["broken.mp4"]["error"]
    assert r["kinds"]["bonafide"]["unreadable"] == 1 and r["kinds"]["bonafide"]["liveness"] is None


def test_rates_count_refused_live_windows_and_passed_attacks() -> None:
    args = argparse.Namespace(threshold=0.4, votes=3, motion_residual=0.1)
    live_still = Window([0.9, 0.8, 0.7, 0.2, 0.9], 0.03)  # live by the network, but does not move
    live_moving = Window([0.9, 0.1, 0.2, 0.3, 0.9], 0.25)  # moves, but only 2 live frames
    assert judge(live_still, args) == {"liveness": True, "motion": False, "both": False}
    assert judge(live_moving, args) == {"liveness": False, "motion": True, "both": False}
    assert judge(Window([0.5] * 5, None), args)["motion"] is False  # too few frames to tell: not moving
    clips = [VideoClip("a", "bonafide", 10, 10, [live_still, live_moving]),
             VideoClip("b", "screen", 10, 10, [live_still])]
    s = summarise(clips, args)
    assert s["bonafide"]["rate"] == "BPCER" and s["bonafide"]["liveness"] == 0.5 and s["bonafide"]["both"] == 1.0
    assert s["screen"]["rate"] == "APCER" and s["screen"]["liveness"] == 1.0 and s["screen"]["motion"] == 0.0
    # by threshold: a window passes while its 3rd best p(live) reaches it (0.8 and 0.3 here)
    rates = sweep(clips, 3, (0.2, 0.5, 0.8, 0.85))
    assert rates["bonafide"] == {"0.2": 0.0, "0.5": 0.5, "0.8": 0.5, "0.85": 1.0}
    assert rates["screen"] == {"0.2": 1.0, "0.5": 1.0, "0.8": 1.0, "0.85": 0.0}


def test_bad_arguments_exit_2_naming_the_problem(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([str(tmp_path / "nope")]) == 2
    assert f"video folder not found: {tmp_path / 'nope'}" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no videos" in capsys.readouterr().err
    assert main([str(tmp_path), "--votes", "6"]) == 2
    assert "--votes 6 exceeds --window 5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--fps", "0"])
    assert exc.value.code == 2
