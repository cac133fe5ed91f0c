"""The in-RAM matcher, fed from a real gallery file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import GalleryInputError, TemplateModelMismatch
from edge_app.gallery.matcher import Match, Matcher
from edge_app.gallery.store import Gallery, TemplateSet

SHA = "c" * 64
OLD_SHA = "d" * 64
DIM = 64
PEOPLE = ["Ann", "Ben", "Cat", "Dan", "Eve"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def gallery(tmp_path: Path, rng: np.random.Generator) -> Iterator[Gallery]:
    """Five persons with three templates each; the middle template of each is masked."""
    with Gallery(tmp_path / "g.db") as g:
        for name in PEOPLE:
            g.add_person(name)
            g.add_templates(name, rng.normal(size=(3, DIM)), model_sha=SHA, masked=[False, True, False])
        yield g


def reference(ts: TemplateSet, probe: np.ndarray) -> dict[str, tuple[float, bool]]:
    """Brute force, float64: per person name -> (score, is the best template masked); the score is the mean of
    the cosines with the best template and with the unit mean of the person's unit templates."""
    e = ts.embeddings.astype(np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    u = probe / np.linalg.norm(probe)
    s = e @ u
    out: dict[str, tuple[float, bool]] = {}
    for pid, name in ts.names.items():
        rows = np.flatnonzero(ts.person_ids == pid)
        best = rows[np.argmax(s[rows])]
        mean = e[rows].sum(axis=0)
        out[name] = (0.5 * float(s[best]) + 0.5 * float(mean @ u / np.linalg.norm(mean)), bool(ts.masked[best]))
    return out


def test_top_k_over_persons_best_template_each(gallery: Gallery, rng: np.random.Generator) -> None:
    m = Matcher.from_gallery(gallery, SHA)
    ts = gallery.load_templates(SHA)
    assert (m.n_templates, m.n_persons, m.dim, m.model_sha) == (15, 5, DIM, SHA)
    # Near Cat's masked template, so Cat first and via a masked template.
    cat_masked = ts.embeddings[(ts.person_ids == gallery.get_person("Cat").id) & ts.masked][0]
    probe = cat_masked + 0.05 * rng.normal(size=DIM)
    got = m.match(probe, k=3)
    ref = reference(ts, probe)
    want = sorted(ref, key=lambda n: -ref[n][0])[:3]
    assert [g.name for g in got] == want
    # Near one of three random templates: best cosine ~1, mean template ~0.58, so the score ~0.79.
    assert got[0].name == "Cat" and got[0].masked_template is True and 0.7 < got[0].score < 0.9
    assert len({g.person_id for g in got}) == 3  # persons, not templates
    assert [g.score for g in got] == sorted((g.score for g in got), reverse=True)
    for g in got:
        assert g.score == pytest.approx(ref[g.name][0], abs=1e-5)
        assert g.masked_template == ref[g.name][1]
        assert g.person_id == gallery.get_person(g.name).id


def test_k_larger_than_gallery_returns_every_person(gallery: Gallery, rng: np.random.Generator) -> None:
    m = Matcher.from_gallery(gallery, SHA)
    got = m.match(rng.normal(size=DIM), k=50)
    assert sorted(g.name for g in got) == sorted(PEOPLE)
    with pytest.raises(GalleryInputError, match="k must be"):
        m.match(rng.normal(size=DIM), k=0)


def test_batch_equals_single(gallery: Gallery, rng: np.random.Generator) -> None:
    m = Matcher.from_gallery(gallery, SHA)
    probes = rng.normal(size=(6, DIM)).astype(np.float32)
    batch = m.match_batch(probes, k=2)
    assert len(batch) == 6
    for probe, row in zip(probes, batch, strict=True):
        single = m.match(probe, k=2)
        assert [(x.person_id, x.name, x.masked_template) for x in row] == [
            (x.person_id, x.name, x.masked_template) for x in single]
        assert [x.score for x in row] == pytest.approx([x.score for x in single], abs=1e-6)
    assert m.match_batch(np.zeros((0, DIM), np.float32)) == []


def test_probe_dim_mismatch_names_both_dims(gallery: Gallery) -> None:
    m = Matcher.from_gallery(gallery, SHA)
    with pytest.raises(TemplateModelMismatch, match=rf"dim 128.*dim {DIM}") as exc:
        m.match(np.ones(128, np.float32))
    assert isinstance(exc.value, ValueError)
    with pytest.raises(TemplateModelMismatch, match="dim 32"):
        m.match_batch(np.ones((2, 32), np.float32))
    with pytest.raises(GalleryInputError, match="shape"):
        m.match(np.ones((1, DIM), np.float32))  # match wants one (d,) vector
    with pytest.raises(GalleryInputError, match="NaN"):
        m.match(np.full(DIM, np.nan))


def test_empty_gallery_returns_nothing(tmp_path: Path) -> None:
    with Gallery(tmp_path / "empty.db") as g:
        m = Matcher.from_gallery(g, SHA)
    assert (m.n_templates, m.n_persons, m.stale) == (0, 0, 0)
    assert m.match(np.ones(DIM, np.float32)) == []
    assert m.match_batch(np.ones((2, DIM), np.float32)) == [[], []]


def test_stale_templates_are_ignored_counted_and_warned(
        gallery: Gallery, rng: np.random.Generator, caplog: pytest.LogCaptureFixture) -> None:
    gallery.add_person("Old")
    old = rng.normal(size=(4, 128))
    gallery.add_templates("Old", old, model_sha=OLD_SHA, masked=False)
    with caplog.at_level(logging.WARNING, logger="edge_app.gallery.matcher"):
        m = Matcher.from_gallery(gallery, SHA)
    assert m.stale == 4
    assert m.n_templates == 15 and m.n_persons == 5
    assert any(r.levelno == logging.WARNING and "re-enrol" in r.getMessage() for r in caplog.records)
    assert "Old" not in {x.name for x in m.match(rng.normal(size=DIM), k=10)}


def test_no_warning_without_stale_templates(gallery: Gallery, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_app.gallery.matcher"):
        m = Matcher.from_gallery(gallery, SHA)
    assert m.stale == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_use_masked_selects_templates(tmp_path: Path, rng: np.random.Generator) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.add_person("Masky")
        g.add_person("Plain")
        masky = rng.normal(size=(2, DIM))
        g.add_templates("Masky", masky, model_sha=SHA, masked=True)
        g.add_templates("Plain", rng.normal(size=(2, DIM)), model_sha=SHA, masked=False)
        m = Matcher.from_gallery(g, SHA)
    probe = masky[0]
    assert [x.name for x in m.match(probe, use_masked=True)] == ["Masky"]
    assert [x.name for x in m.match(probe, use_masked=False)] == ["Plain"]
    both = m.match(probe)
    assert [x.name for x in both] == ["Masky", "Plain"]
    u = masky / np.linalg.norm(masky, axis=1, keepdims=True)
    mean = u.sum(axis=0) / np.linalg.norm(u.sum(axis=0))
    want = 0.5 + 0.5 * float(mean @ u[0])  # best template 1.0, mean template of the two
    assert both[0] == Match(both[0].person_id, "Masky", pytest.approx(want, abs=1e-5), True)  # type: ignore[arg-type]


def test_hand_built_template_set_is_normalised(rng: np.random.Generator) -> None:
    e = rng.normal(size=(3, 8)) * np.array([[1.0], [10.0], [0.1]])
    ts = TemplateSet(model_sha=SHA, embeddings=e.astype(np.float32),
                     person_ids=np.array([5, 9, 5], np.int64), masked=np.array([False, False, True]),
                     template_ids=np.array([1, 2, 3], np.int64), names={5: "Five", 9: "Nine"},
                     gallery_version=42)
    m = Matcher(ts)
    assert m.gallery_version == 42
    got = m.match(e[1] * 3.0, k=2)  # scale must not matter: cosine
    assert got[0].name == "Nine" and got[0].score == pytest.approx(1.0, abs=1e-6)
    got = m.match(e[2], k=1)
    assert (got[0].person_id, got[0].masked_template) == (5, True)
    # Rows are normalised before their mean: e[0] and e[2] (10x smaller) weigh the same.
    u = e[[0, 2]] / np.linalg.norm(e[[0, 2]], axis=1, keepdims=True)
    mean = u.sum(axis=0) / np.linalg.norm(u.sum(axis=0))
    assert got[0].score == pytest.approx(0.5 + 0.5 * float(mean @ u[1]), abs=1e-6)
    bad = TemplateSet(model_sha=SHA, embeddings=e.astype(np.float32), person_ids=np.array([5, 9, 5]),
                      masked=np.zeros(3, bool), template_ids=np.arange(3), names={5: "Five"},
                      gallery_version=0)
    with pytest.raises(GalleryInputError, match=r"lack person ids \[9\]"):
        Matcher(bad)
