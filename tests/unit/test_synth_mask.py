"""Synthetic masks on real photos, placed from keypoints of the real detector."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_app.vision.synth_mask import MASK_KINDS, MaskStyle, draw_mask, mask_polygon, random_style

PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


@pytest.fixture(scope="module")
def face(pipeline, rgb):  # type: ignore[no-untyped-def]
    def get(name: str) -> tuple[np.ndarray, np.ndarray]:
        img = rgb(name)
        faces = pipeline.process(img)
        assert faces, f"no face found in unmasked {name}"
        return img, faces[0].detection.keypoints.astype(np.float64)

    return get


def eye_distance(kps: np.ndarray) -> float:
    return float(np.hypot(*(kps[1] - kps[0])))


def disc(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return np.asarray((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2)


def style(kind: str = "surgical", **kw: object) -> MaskStyle:
    base: dict[str, object] = {"kind": kind, "colour": (140, 185, 220), "pattern": "plain",
                               "pattern_colour": (0, 0, 0), "top": 0.6, "width": 0.95, "chin": 0.7}
    base.update(kw)
    return MaskStyle(**base)  # type: ignore[arg-type]


def test_covers_nose_and_mouth_leaves_eyes_untouched(face):
    img, kps = face("obama.jpg")
    before = img.copy()
    d = eye_distance(kps)
    rng = np.random.default_rng(1)
    for kind in MASK_KINDS:
        for top in (0.35, None):  # the highest sensible top edge, then a random one
            s = random_style(rng, kind)
            if top is not None:
                s = MaskStyle(s.kind, s.colour, s.pattern, s.pattern_colour, top, s.width, s.chin)
            out = draw_mask(img, kps, s, rng)
            assert out.shape == img.shape and out.dtype == np.uint8
            changed = np.any(out != img, axis=2)
            keep = disc(img.shape, kps[0], 0.25 * d) | disc(img.shape, kps[1], 0.25 * d)
            # And the strip between the eyes, down to 0.1 eye distances (the nose bridge below it may be covered).
            for f in np.linspace(0, 1, 11):
                keep |= disc(img.shape, kps[0] + f * (kps[1] - kps[0]), 0.1 * d)
            assert not changed[keep].any(), f"{s}: {int(changed[keep].sum())} eye-region pixels changed"
            for i in (2, 3):  # nose tip, mouth centre
                region = disc(img.shape, kps[i], 0.2 * d)
                assert changed[region].mean() > 0.9, f"{s}: point {i} only {changed[region].mean():.2f} covered"
    np.testing.assert_array_equal(img, before)  # input untouched


def test_polygon_contains_nose_and_mouth_not_eyes(face):
    rng = np.random.default_rng(7)
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):  # frontal and two turned heads
        _, kps = face(name)
        for _ in range(15):
            s = random_style(rng)
            poly = mask_polygon(kps, s)
            assert poly.dtype == np.float32 and poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 40
            assert np.all(np.isfinite(poly))
            inside = [cv2.pointPolygonTest(poly, (float(x), float(y)), True) for x, y in kps[:4]]
            assert inside[2] > 0 and inside[3] > 0, f"{name} {s}: nose/mouth outside ({inside})"
            assert inside[0] < 0 and inside[1] < 0, f"{name} {s}: an eye inside ({inside})"


def test_deterministic_and_varied(face):
    img, kps = face("obama.jpg")
    a = draw_mask(img, kps, rng=np.random.default_rng(3))
    b = draw_mask(img, kps, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(draw_mask(img, kps), draw_mask(img, kps))  # no rng: seed 0
    styles = [random_style(np.random.default_rng(seed)) for seed in range(20)]
    assert {s.kind for s in styles} == set(MASK_KINDS)
    assert len(set(styles)) == 20
    assert len({s.colour for s in styles}) >= 10
    assert not np.array_equal(a, draw_mask(img, kps, rng=np.random.default_rng(4)))
    cloth = [random_style(np.random.default_rng(seed), "cloth").pattern for seed in range(40)]
    assert set(cloth) == {"plain", "stripes", "dots", "checks"}


def test_outline_follows_roll(face, pipeline):
    img, kps = face("obama.jpg")
    d = eye_distance(kps)
    s = style()
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(tuple(float(v) for v in kps[:4].mean(0)), 30.0, 1.0)
    rotated = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)

    def rot(pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]

    expected = rot(mask_polygon(kps, s))
    err = np.hypot(*(mask_polygon(rot(kps), s) - expected).T).mean()
    assert err < 0.01 * d, f"outline off by {err:.2f}px after rotating the keypoints"
    # The detector's own keypoints on the rotated photo give (nearly) the rotated outline too.
    faces = pipeline.process(rotated)
    assert faces, "no face in the rotated photo"
    err = np.hypot(*(mask_polygon(faces[0].detection.keypoints, s) - expected).T).mean()
    assert err < 0.1 * d, f"outline off by {err:.2f}px ({err / d:.3f} eye distances) on the rotated photo"
    # And the drawn mask covers the rotated nose and mouth.
    out = draw_mask(rotated, rot(kps), s)
    for p in rot(kps)[2:4]:
        assert np.any(out[int(p[1]), int(p[0])] != rotated[int(p[1]), int(p[0])])


def test_outline_follows_yaw(face):
    _, kps = face("obama.jpg")
    s = style()
    turned = kps.copy()
    turned[5] = kps[5] + 0.5 * (kps[2] - kps[5])  # left tragion halfway to the nose: head turned
    a, b = mask_polygon(kps, s), mask_polygon(turned, s)
    ex = (kps[1] - kps[0]) / eye_distance(kps)
    assert (a @ ex).max() - (b @ ex).max() > 0.3 * eye_distance(kps)  # the left side came in
    assert abs((b @ ex).min() - (a @ ex).min()) < 1e-3  # the right side did not move


def test_shading_follows_the_scene(face):
    img, kps = face("obama.jpg")
    dark = (img.astype(np.float32) * 0.3).astype(np.uint8)
    region = disc(img.shape, kps[3], 0.3 * eye_distance(kps))
    s = style(colour=(236, 238, 240))
    bright_mask = draw_mask(img, kps, s)[region].mean()
    dark_mask = draw_mask(dark, kps, s)[region].mean()
    assert bright_mask > 170 and dark_mask < 0.6 * bright_mask, (bright_mask, dark_mask)


def test_bad_inputs_are_named(face):
    img, kps = face("obama.jpg")
    with pytest.raises(ValueError, match="uint8 HxWx3.*float"):
        draw_mask(img.astype(np.float32), kps)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        draw_mask(img[..., 0], kps)
    with pytest.raises(ValueError, match=r"shape \(6, 2\).*\(5, 2\)"):
        draw_mask(img, kps[:5])
    nan = kps.copy()
    nan[2, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        draw_mask(img, nan)
    same = kps.copy()
    same[1] = same[0] + 1.0
    with pytest.raises(ValueError, match="eye distance"):
        draw_mask(img, same)
    with pytest.raises(ValueError, match="eye distance"):
        mask_polygon(same, style())
    with pytest.raises(ValueError, match="kind.*'bandana'"):
        style("bandana")
    with pytest.raises(ValueError, match="pattern.*'zigzag'"):
        style("cloth", pattern="zigzag")
    with pytest.raises(ValueError, match="pattern 'dots' is only for cloth"):
        style("surgical", pattern="dots")
    with pytest.raises(ValueError, match=r"colour.*\(300, 0, 0\)"):
        style(colour=(300, 0, 0))
    with pytest.raises(ValueError, match="top.*1.5"):
        style(top=1.5)
    with pytest.raises(ValueError, match="width.*nan"):
        style(width=float("nan"))
    with pytest.raises(ValueError, match="chin.*-0.2"):
        style(chin=-0.2)
    with pytest.raises(ValueError, match="kind.*'scarf'"):
        random_style(np.random.default_rng(0), "scarf")


def test_face_at_the_border(face):
    img, kps = face("obama.jpg")
    cut = img[: int(kps[2, 1]) + 5].copy()  # lower half of the face cut off just below the nose tip
    for kind in MASK_KINDS:
        out = draw_mask(cut, kps, random_style(np.random.default_rng(2), kind))
        assert out.shape == cut.shape
        assert np.any(out[-3:] != cut[-3:])  # the visible top of the mask is drawn
    side = img[:, int(kps[2, 0]):].copy()  # right half of the face cut off, keypoints shifted to match
    out = draw_mask(side, kps - (int(kps[2, 0]), 0), style())
    assert out.shape == side.shape
    away = kps + np.array([5000.0, 0.0])  # face entirely outside the image: nothing to draw
    np.testing.assert_array_equal(draw_mask(img, away, style()), img)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("kind", ["surgical", "cloth"])
def test_detector_still_finds_masked_faces(pipeline, rgb, kind):
    found = {}
    for i, name in enumerate(PORTRAITS):
        img = rgb(name)
        det = pipeline.process(img)[0].detection
        out = draw_mask(img, det.keypoints, random_style(np.random.default_rng(i), kind))
        # The same face: a detection whose box overlaps the unmasked face's box.
        found[name] = max((iou(f.detection.box, det.box) for f in pipeline.process(out)), default=0.0)
    assert sum(v >= 0.5 for v in found.values()) >= 3, f"{kind}: box IoU with the unmasked detection {found}"
