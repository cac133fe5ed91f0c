"""scripts/embeddings.py compare: the bound holds for faces the device would match; a face on one side only fails."""

from __future__ import annotations

from scripts.embeddings import compare


def dump(embeddings: dict[str, list[float] | None], low: list[str] | None = None) -> dict[str, object]:
    return {"machine": "x", "runtime": "r", "numpy": "n", "embedder": "sface", "embeddings": embeddings,
            "low_quality": low or []}


def test_same_vectors_pass_and_a_turned_vector_fails() -> None:
    a = dump({"p.jpg": [1.0, 0.0], "q.jpg": [0.0, 1.0]})
    lines, ok = compare(a, a, 0.999)
    assert ok and lines == ["p.jpg: cosine 1.000000", "q.jpg: cosine 1.000000"]
    b = dump({"p.jpg": [1.0, 0.05], "q.jpg": [0.0, 1.0]})  # cosine 0.99875
    assert not compare(a, b, 0.999)[1]


def test_low_quality_faces_are_listed_but_not_held_to_the_bound() -> None:
    a = dump({"p.jpg": [1.0, 0.0]}, low=["p.jpg"])
    b = dump({"p.jpg": [1.0, 0.05]})
    lines, ok = compare(a, b, 0.999)
    assert ok and "below the quality gates" in lines[0]


def test_a_face_on_one_machine_only_fails() -> None:
    lines, ok = compare(dump({"p.jpg": [1.0, 0.0]}), dump({"p.jpg": None}), 0.999)
    assert not ok and lines == ["p.jpg: a face on one machine only"]
    assert compare(dump({"p.jpg": None}), dump({"p.jpg": None}), 0.999) == (["p.jpg: no face on either"], True)
