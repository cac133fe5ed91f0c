"""MediaPipe BlazeFace: letterbox, SSD anchors, box/keypoint decode, weighted NMS.

The anchor and decode parameters are those of MediaPipe's face_detection_short_range and
face_detection_full_range graphs (SsdAnchorsCalculator / TensorsToDetectionsCalculator).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_app.vision.runtime import TFLiteModel

# Keypoint order of BlazeFace, from the subject's point of view.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class Detection:
    """One face in frame pixel coordinates."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    keypoints: np.ndarray = field(repr=False)  # (6, 2) float32, x/y in frame pixels

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class _Variant:
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per distinct stride
    min_score: float


# Short range: 4 SSD layers at strides 8,16,16,16 -> 2 anchors per 16x16 cell, 6 per 8x8 cell = 896.
# Full range: one layer at stride 4 with a single anchor -> 48x48 = 2304.
_VARIANTS = {
    128: _Variant(128, (8, 16), (2, 6), 0.5),
    192: _Variant(192, (4,), (1,), 0.6),
}


def ssd_anchors(size: int) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1]; fixed_anchor_size means every anchor is 1x1."""
    v = _VARIANTS[size]
    out = []
    for stride, per_cell in zip(v.strides, v.anchors_per_cell, strict=True):
        n = size // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one x0, y0, x1, y1 box with each row of boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED suppression: overlapping candidates are averaged, weighted by score,
    which steadies boxes and keypoints from frame to frame better than hard NMS."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    results = []
    remaining = np.arange(len(scores))
    while remaining.size:
        top = remaining[0]
        overlap = iou(boxes[top], boxes[remaining])
        group = remaining[overlap > iou_threshold]
        group = group if group.size else remaining[:1]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kp = (kps[group] * w[:, :, None]).sum(0) / w.sum()
        results.append((box, kp, float(scores[top])))
        remaining = remaining[overlap <= iou_threshold]
        if top in remaining:  # iou with itself is 1, so this only guards degenerate boxes
            remaining = remaining[remaining != top]
    return results


def area_shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize(..., INTER_AREA), the same pixels. By an odd whole factor (640x480 -> 128x96: 5) it is a box
    filter read every k-th pixel, twice as fast here: with k*k odd, no average lies on a rounding tie."""
    h, w = image.shape[:2]
    k = w // width
    if k > 1 and k % 2 == 1 and w == k * width and h == k * height:
        box = cv2.boxFilter(image, -1, (k, k), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(box[::k, ::k])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def check_frame(frame: np.ndarray) -> None:
    """ValueError unless ``frame`` is an RGB uint8 image (H, W, 3)."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")


class FaceDetector:
    """BlazeFace on an RGB uint8 frame of any size."""

    def __init__(self, model: TFLiteModel, min_score: float | None = None,
                 iou_threshold: float = 0.3, max_faces: int = 10) -> None:
        shape = model.input.shape
        if len(shape) != 4 or shape[1] != shape[2] or shape[1] not in _VARIANTS or shape[3] != 3:
            raise ValueError(f"{model.path.name}: not a BlazeFace input shape: {shape}")
        self.model = model
        self.size = shape[1]
        self.variant = _VARIANTS[self.size]
        self.anchors = ssd_anchors(self.size)
        self.min_score = self.variant.min_score if min_score is None else min_score
        self.iou_threshold = iou_threshold
        self.max_faces = max_faces
        n_out = model.outputs[0].shape[1]
        if n_out != len(self.anchors):
            raise ValueError(f"{model.path.name}: {n_out} outputs for {len(self.anchors)} anchors")

    def view(self, frame: np.ndarray, x0: float, y0: float, side: float) -> tuple[np.ndarray, np.ndarray]:
        """The square frame region [x0, x0 + side)^2 as the model's input; what lies outside the frame is
        black (a letterbox, or the border that makes a close-up face small enough for the model).

        Returns the RGB uint8 canvas and the map back to the frame: frame = input * m[:, 0] + m[:, 1] per axis
        (x, y), exact for the pixels actually resized, so rounding never biases keypoints."""
        check_frame(frame)
        if not side > 0:
            raise ValueError(f"view side must be positive, got {side}")
        h, w = frame.shape[:2]
        s = self.size / side
        fx0, fy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        fx1, fy1 = min(w, int(np.ceil(x0 + side))), min(h, int(np.ceil(y0 + side)))
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        if fx1 - fx0 < 1 or fy1 - fy0 < 1:
            raise ValueError(f"view ({x0:.1f}, {y0:.1f}, side {side:.1f}) lies outside the {w}x{h} frame")
        # Where the frame part starts on the canvas; the map back below is exact for whatever rounding did.
        dx = int(np.clip(round((fx0 - x0) * s), 0, self.size - 1))
        dy = int(np.clip(round((fy0 - y0) * s), 0, self.size - 1))
        nw = max(1, min(self.size - dx, round((fx1 - fx0) * s)))
        nh = max(1, min(self.size - dy, round((fy1 - fy0) * s)))
        # Averaging when shrinking (no aliasing); enlarging a small crop wants bilinear.
        part = frame[fy0:fy1, fx0:fx1]
        canvas[dy:dy + nh, dx:dx + nw] = (area_shrink(part, nw, nh) if nw < fx1 - fx0
                                          else cv2.resize(part, (nw, nh), interpolation=cv2.INTER_LINEAR))
        ax, ay = (fx1 - fx0) / nw, (fy1 - fy0) / nh
        back = np.array([[ax, fx0 - dx * ax], [ay, fy0 - dy * ay]], np.float64)
        return canvas, back

    def to_tensor(self, canvas: np.ndarray) -> np.ndarray:
        """RGB uint8 (size, size, 3) -> the model's input tensor (1, size, size, 3), [-1, 1] or quantized."""
        real = canvas.astype(np.float32) / 127.5 - 1.0
        spec = self.model.input
        if spec.dtype == np.float32:
            return real[None]
        # quantized input: map [-1, 1] into the tensor's integer range
        q = np.clip(np.round(real / spec.scale + spec.zero_point), np.iinfo(spec.dtype).min, np.iinfo(spec.dtype).max)
        return q.astype(spec.dtype)[None]

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """Letterbox to the model's square input; returns tensor, scale and padding (in input px)."""
        h, w = frame.shape[:2] if frame.ndim >= 2 else (0, 0)
        side = max(h, w)
        canvas, back = self.view(frame, (w - side) / 2, (h - side) / 2, side)
        return self.to_tensor(canvas), 1.0 / back[0, 0], -back[0, 1] / back[0, 0], -back[1, 1] / back[1, 0]

    def decode(self, raw_boxes: np.ndarray, raw_scores: np.ndarray,
               min_score: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw model outputs -> boxes (N, 4) and keypoints (N, 6, 2) in input pixels, scores (N,)."""
        raw_boxes = raw_boxes.reshape(len(self.anchors), -1)
        # MediaPipe clips logits at +-100; float64 keeps exp() of that finite.
        logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -100.0, 100.0)
        scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        keep = scores >= (self.min_score if min_score is None else min_score)
        r, a, scores = raw_boxes[keep], self.anchors[keep] * self.size, scores[keep]
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        w, h = r[:, 2], r[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
        return boxes, kps, scores

    def detect(self, frame: np.ndarray, min_score: float | None = None) -> list[Detection]:
        """Faces in the whole frame, letterboxed to the model's input."""
        h, w = frame.shape[:2] if frame.ndim >= 2 else (0, 0)
        side = max(h, w)
        return self.detect_region(frame, (w - side) / 2, (h - side) / 2, side, min_score)

    def detect_turned(self, frame: np.ndarray, degrees: float, pad: float, lift: float,
                      min_score: float | None = None) -> list[Detection]:
        """Faces in the frame turned by ``degrees`` (counter-clockwise) about its centre, seen on a square
        canvas ``pad`` x its longer side wider on each side and raised by ``lift`` x that side: a tilted head
        the upright passes miss stands upright here. Keypoints map back exactly; the box is the upright
        box's size about its mapped centre."""
        check_frame(frame)
        h, w = frame.shape[:2]
        side = max(h, w)
        s = self.size / (side * (1 + 2 * pad))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, s)
        m[0, 2] += self.size / 2 - w / 2
        m[1, 2] += self.size / 2 - h / 2 + lift * side * s
        # warpAffine has no area averaging (INTER_AREA gives the same pixels as INTER_LINEAR).
        canvas = cv2.warpAffine(frame, m, (self.size, self.size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        back = cv2.invertAffineTransform(m)
        faces = []
        for box, kp, score in self._candidates(canvas, min_score):
            centre = np.array([box[0] + box[2], box[1] + box[3]]) / 2 @ back[:, :2].T + back[:, 2]
            half = np.array([box[2] - box[0], box[3] - box[1]]) / (2 * s)
            faces += self._clipped(np.concatenate([centre - half, centre + half]),
                                   kp @ back[:, :2].T + back[:, 2], score, w, h)
        return faces

    def detect_region(self, frame: np.ndarray, x0: float, y0: float, side: float,
                      min_score: float | None = None) -> list[Detection]:
        """Faces seen in the square region [x0, x0 + side)^2 of the frame (see view), in frame pixels,
        clipped to the frame; min_score overrides the detector's own for this call."""
        canvas, back = self.view(frame, x0, y0, side)
        h, w = frame.shape[:2]
        scale, offset = back[:, 0], back[:, 1]
        faces = []
        for box, kp, score in self._candidates(canvas, min_score):
            faces += self._clipped(box * np.tile(scale, 2) + np.tile(offset, 2), kp * scale + offset, score, w, h)
        return faces

    def _candidates(self, canvas: np.ndarray, min_score: float | None) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Boxes, keypoints (input px) and scores of one model run on the canvas, after weighted NMS."""
        outs = self.model.run(self.to_tensor(canvas))
        # Outputs are (1, N, 16) regressors and (1, N, 1) scores; tell them apart by shape.
        raw_boxes = next(o for o in outs if o.shape[-1] == 16)
        raw_scores = next(o for o in outs if o.shape[-1] == 1)
        boxes, kps, scores = self.decode(raw_boxes, raw_scores, min_score)
        if not len(scores):
            return []
        return list(weighted_nms(boxes, kps, scores, self.iou_threshold)[: self.max_faces])

    @staticmethod
    def _clipped(box: np.ndarray, kp: np.ndarray, score: float, w: int, h: int) -> list[Detection]:
        """The detection with its box clipped to the w x h frame; none when little of it is left."""
        x0, y0 = float(np.clip(box[0], 0, w)), float(np.clip(box[1], 0, h))
        x1, y1 = float(np.clip(box[2], 0, w)), float(np.clip(box[3], 0, h))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return []
        return [Detection((x0, y0, x1, y1), float(score), kp.astype(np.float32))]
