"""Face detection at every distance a door sees: BlazeFace passes chained by need.

One short-range pass over the whole frame finds faces from ~100 px up (a 640x480 frame shrinks 5x into
the model's 128x128 input). The rest is done only when needed, so the common frame costs one pass plus
a refinement of a small face:

- refinement: a face narrower than ``refine_below`` px was only ~20-30 px in the model's input, and its
  keypoints are off by 15-60 % of the eye distance (obama2 at 64-90 px: the cosine score against the
  enrolled photo fell from 0.75 to 0.36-0.60). A second short-range pass on a square crop around it
  (``refine_context`` x its box) sees the face at ~50 % of the input and gives keypoints good to align on.
- close-up: nothing found and a face fills the frame (a person at the kiosk, a tight crop): the model
  misses faces that fill its whole input, masked ones most (57 % of real masked 160 px crops found). The
  frame is looked at again with a black border (constant beats replicate and reflect by 20 points), and
  only a candidate with a face's geometry is kept. Lowering the score threshold of this pass found a few
  more masked faces but tripled the false faces on face-less patches, so it keeps the model's own.
- small faces: nothing found yet, and a second, full-range model (192x192, one 48x48 anchor grid) looks
  for faces of 40-100 px that the short-range model does not see at all.
- tiles: still nothing, and the short-range model looks at overlapping squares of ``tile`` x the frame's
  shorter side (12 of 240 px in 640x480), where a 60-160 px face is a quarter to two thirds of its input;
  a candidate counts only if a pass on a crop around it finds it again. Real masked faces framed at 64 /
  100 / 160 px: found 10 / 24 / 63 % without it, 36 / 57 / 68 % with it; false faces in 100 face-less
  frames 6 -> 9. It costs 12+ model runs on a frame with nobody in it, so a camera stream runs it on every
  ``tile_every``-th such frame only (the daemon: every 3rd), and a face it found is looked for again around
  where it was in the next frames (``look_again_frames``), one pass each, so the door's vote sees it in
  every frame while the person stands there.
- lifted close-up, last of all: the frame low in a bigger canvas (the forehead of a face this close is cut
  off at the top), at a score of 0.4: 7 of the 16 real masked crops no other pass found, for 3 false faces in
  163 face-less patches. Run before the small-face passes it pre-empted them with false faces in wide frames.
- turned close-up, after that: the frame turned by 25 degrees each way (a head tilted or bent towards the
  camera stands upright for the model), at a score of 0.45 and not refined by an upright pass: 6 of the 9
  real masked crops no upright pass found, for one more false face in 100 face-less patches; 2 passes more
  on a frame with nobody in it.

docs/detection.md has the measurements behind each choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_app.vision.detector import Detection, FaceDetector, iou


@dataclass(frozen=True)
class CascadeOptions:
    refine_below: float = 260.0  # face box width (frame px) under which keypoints come from a crop pass; 0: never
    refine_context: float = 2.0  # side of the refinement crop / face box width
    refine_min_score: float = 0.3  # a known face, re-found on its crop: a low bar only picks the candidate
    close_up: bool = True  # padded pass when the full-frame pass finds nothing
    close_up_pads: tuple[float, ...] = (0.25, 0.5)  # border on each side / frame's longer side, tried in turn
    close_up_min_score: float = 0.5
    # Still nothing: the frame low in a canvas of side (1 + 2 x 0.5) x its own, raised by close_up_lift x its side
    # (a face so close that its forehead leaves the frame); 0: off. Its own score bar: these faces score low.
    close_up_lift: float = 0.3
    close_up_lift_min_score: float = 0.4
    # Still nothing: the frame turned by each angle (degrees) on a canvas (1 + 2 x 0.5) x its side (a head
    # tilted or bent towards the camera); (): off. Below the model's own score: a tilted face scores low.
    close_up_turns: tuple[float, ...] = (25.0, -25.0)
    close_up_turn_min_score: float = 0.45
    small_faces: bool = True  # full-range pass when nothing was found (needs the far model)
    tile: float = 0.5  # side of the overlapping squares looked at when nothing was found / frame height; 0: off
    tile_min_score: float = 0.6  # 0.5 found a face on a lectern; 0.6 loses 1-3 points of masked faces
    tile_every: int = 1  # the tile pass on every n-th frame with no face (streams; 1: every frame)
    look_again_frames: int = 5  # frames a face found by the tile pass is looked for again around its place

    def __post_init__(self) -> None:
        if self.refine_below < 0:
            raise ValueError(f"refine_below is a face width in px, >= 0 (0: off), got {self.refine_below}")
        if not 1.0 <= self.refine_context <= 4.0:
            raise ValueError(f"refine_context is a crop side / face width in [1, 4], got {self.refine_context}")
        if self.tile_every < 1 or self.look_again_frames < 0:
            raise ValueError(f"tile_every must be >= 1 and look_again_frames >= 0, got {self.tile_every}, "
                             f"{self.look_again_frames}")
        if not 0.0 <= self.tile <= 1.0:
            raise ValueError(f"tile is a square side / the frame's shorter side, 0..1 (0: off), got {self.tile}")
        if not 0.0 <= self.close_up_lift <= 1.0:
            raise ValueError(f"close_up_lift is a share of the frame's side, 0..1 (0: off), got {self.close_up_lift}")
        if any(not 0.0 < abs(a) <= 60.0 for a in self.close_up_turns):
            raise ValueError(f"close_up_turns are angles in degrees, 0 < |a| <= 60, got {self.close_up_turns}")
        for name in ("refine_min_score", "close_up_min_score", "close_up_lift_min_score", "close_up_turn_min_score",
                     "tile_min_score"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} is a score in (0, 1), got {v}")
        if any(not 0.0 < p <= 2.0 for p in self.close_up_pads):
            raise ValueError(f"close_up_pads are border ratios in (0, 2], got {self.close_up_pads}")


def plausible(det: Detection) -> bool:
    """A detection with a face's geometry: eyes level-ish, apart by a face's share of the box, in its
    upper part. Guards the passes that run below the model's own score threshold."""
    x0, y0, x1, y1 = det.box
    w, h = x1 - x0, y1 - y0
    right_eye, left_eye = det.keypoints[0], det.keypoints[1]
    d = left_eye - right_eye
    eye_dist = float(np.hypot(*d))
    mid = (left_eye + right_eye) / 2
    return bool(w > 0 and h > 0 and 0.6 < w / h < 1.6
                and d[0] > 0 and abs(d[1]) < 0.8 * d[0]  # subject's right eye left in the image, roll < ~40 deg
                and 0.2 * w < eye_dist < 0.7 * w
                and x0 < mid[0] < x1 and y0 < mid[1] < y0 + 0.65 * h)


def _centre(det: Detection) -> np.ndarray:
    return np.array([(det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2])


class FaceCascade:
    """Detects like FaceDetector (``detect(frame) -> list[Detection]``), with the passes above."""

    def __init__(self, near: FaceDetector, far: FaceDetector | None = None,
                 options: CascadeOptions | None = None) -> None:
        if near.size != 128:
            raise ValueError(f"the cascade's first pass is the short-range model (128 px input), got {near.size} px")
        if far is not None and far.size == near.size:
            raise ValueError("the small-face pass needs the full-range model (192 px input), got a second short one")
        self.near = near
        self.far = far
        self.options = options or CascadeOptions()
        self.passes = 0  # model runs of the last detect(), for the bench and the evaluation
        self._misses = 0  # frames with no face since the last tile pass
        self._recent: list[tuple[Detection, int]] = []  # faces of the tile pass, frames left to look again

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """RGB uint8 frame -> faces in frame pixels."""
        o = self.options
        self.passes = 1
        faces = self.near.detect(frame)
        if not faces and self._recent:
            # Found again on a crop around them: their keypoints are already a refinement pass's.
            found = self._look_again(frame)
            if found:
                return found
        if not faces and o.close_up:
            faces = self._close_up(frame)
        if not faces and o.small_faces and self.far is not None:
            self.passes += 1
            faces = self.far.detect(frame)
        if not faces and o.tile:
            self._misses += 1
            if self._misses >= o.tile_every:
                self._misses = 0
                found = self._tiles(frame)  # confirmed on a crop: refined already
                if o.tile_every > 1:  # a stream that skips tile passes: follow what this one found
                    self._recent = [(f, o.look_again_frames) for f in found]
                if found:
                    return found
        if not faces and o.close_up and o.close_up_lift:
            # Last: its low score bar must not pre-empt the passes that find small faces in a wide frame.
            faces = self._lifted(frame)
        if not faces and o.close_up and o.close_up_turns:
            # Not refined: an upright pass on a crop would give a tilted face worse keypoints than this one.
            return self._turned(frame)
        return [self.refine(frame, f) if f.width < o.refine_below else f for f in faces]

    def _close_up(self, frame: np.ndarray) -> list[Detection]:
        for pad in self.options.close_up_pads:
            found = self._canvas(frame, pad, 0.0, self.options.close_up_min_score)
            if found:
                return found
        return []

    def _lifted(self, frame: np.ndarray) -> list[Detection]:
        return self._canvas(frame, 0.5, self.options.close_up_lift, self.options.close_up_lift_min_score)

    def _turned(self, frame: np.ndarray) -> list[Detection]:
        for degrees in self.options.close_up_turns:
            self.passes += 1
            found = [f for f in self.near.detect_turned(frame, degrees, 0.5, 0.0,
                                                        self.options.close_up_turn_min_score)
                     if plausible(f)]
            if found:
                return found
        return []

    def _canvas(self, frame: np.ndarray, pad: float, lift: float, min_score: float) -> list[Detection]:
        """Faces with a face's geometry in the frame seen on a square canvas ``pad`` x its longer side wider on
        each side, the frame raised by ``lift`` x that side."""
        h, w = frame.shape[:2]
        side = max(h, w)
        big = side * (1 + 2 * pad)
        self.passes += 1
        found = self.near.detect_region(frame, (w - big) / 2, (h - big) / 2 - lift * side, big, min_score)
        return [f for f in found if plausible(f)]

    def _tiles(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        side = max(64.0, self.options.tile * min(h, w))  # below 64 px a square holds no findable face
        # Overlapping squares: adjacent ones share at least a third of a side, so a face up to that size is
        # whole in one of them.
        xs = np.linspace(0, w - side, max(1, int(np.ceil((w - side) / (side * 2 / 3))) + 1))
        ys = np.linspace(0, h - side, max(1, int(np.ceil((h - side) / (side * 2 / 3))) + 1))
        found: list[Detection] = []
        for y in ys:
            for x in xs:
                self.passes += 1
                found += [f for f in self.near.detect_region(frame, float(x), float(y), side,
                                                             self.options.tile_min_score) if plausible(f)]
        # One face seen in two squares: keep the better-scored one.
        boxes = np.array([f.box for f in found], np.float64)
        kept: list[int] = []
        for i in np.argsort([-f.score for f in found]):
            if all(iou(boxes[i], boxes[[j]])[0] < 0.3 for j in kept):
                kept.append(int(i))
        # A face must be found again on a crop around it at the model's own score: most things a square
        # mistakes for a face are not. That crop pass is also its refinement (box and keypoints).
        out = []
        for f in (found[i] for i in kept):
            again = self._around(frame, f, self.options.tile_min_score)
            if again is not None:
                out.append(Detection(again.box, max(f.score, again.score), again.keypoints))
        return out

    def _look_again(self, frame: np.ndarray) -> list[Detection]:
        """The faces of a recent tile pass, looked for on a crop around where they were last seen."""
        found, keep = [], []
        for det, left in self._recent:
            again = self._around(frame, det, self.options.tile_min_score)
            if again:
                found.append(again)
                keep.append((again, self.options.look_again_frames))
            elif left > 1:
                keep.append((det, left - 1))
        self._recent = keep
        return found

    def _around(self, frame: np.ndarray, det: Detection, min_score: float) -> Detection | None:
        """The detection of a pass on a square of refine_context x its size around it nearest its centre
        (within half its width), or None."""
        side = self.options.refine_context * max(det.width, det.height)
        c = _centre(det)
        self.passes += 1
        again = [f for f in self.near.detect_region(frame, c[0] - side / 2, c[1] - side / 2, side, min_score)
                 if np.linalg.norm(_centre(f) - c) < 0.5 * det.width]
        return min(again, key=lambda f: float(np.linalg.norm(_centre(f) - c)), default=None)

    def refine(self, frame: np.ndarray, det: Detection) -> Detection:
        """The face again from a crop around it: box and keypoints of that pass, the better score; the
        detection unchanged if the crop pass does not find it."""
        # The same face: its centre within half a box of the first one's (a neighbour's is further away).
        best = self._around(frame, det, self.options.refine_min_score)
        if best is None:
            return det
        return Detection(best.box, max(det.score, best.score), best.keypoints)
