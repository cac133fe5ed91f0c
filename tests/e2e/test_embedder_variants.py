"""scripts/embedder_variants.py on real models and real photos: the table's machinery and its errors.

The SFace builds themselves need TensorFlow to make; here every variant slot holds the shipped
embedder, so each build must agree with the "float32" one exactly and the kernels line must be the
model's own. A small real-masked-dev (3 people, linked) keeps it to seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import embedder_variants as ev
from scripts.modelbuild.sface import SHIPPED, VARIANTS
from tests.conftest import DATA

PEOPLE = 3


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, faces_dev: Path) -> Path:
    src = DATA / "real-masked-dev"
    if not src.is_dir():
        pytest.fail(f"real-masked-dev not found in {DATA}; set EDGE_APP_DATA", pytrace=False)
    root = tmp_path_factory.mktemp("data")
    (root / "real-masked-dev").mkdir()
    people = sorted(p for p in src.iterdir() if (p / "masked").is_dir())[:PEOPLE]
    for p in people:
        (root / "real-masked-dev" / p.name).symlink_to(p)
    (root / "faces-dev").mkdir()
    for name in ("obama.jpg", "obama2.jpg"):
        (root / "faces-dev" / name).symlink_to(faces_dev / name)
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, model_set) -> Path:  # type: ignore[no-untyped-def]
    w = tmp_path_factory.mktemp("work")
    for name in VARIANTS:
        (w / f"sface_{name}.tflite").symlink_to(model_set.info("face_embedder").path)
    return w


def test_table_of_identical_builds(small_data: Path, work: Path, model_set, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = ev.main(["--work", str(work), "--data", str(small_data), "--runs", "3", "--warmup", "1",
                  "--threads", "1,2", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads(out.out)
    photos = ev.photos(small_data)
    assert r["chips"]["n"] + len(r["chips"]["photos_without_face"]) == len(photos)
    rows = {v["variant"]: v for v in r["variants"]}
    assert list(rows) == [*VARIANTS, "dlib (int8)"]
    assert [n for n, v in rows.items() if v["shipped"]] == [SHIPPED]
    kernels = str(model_set.load("face_embedder").kernels())
    for name in VARIANTS:
        v = rows[name]
        assert v["cosine_to_float32"]["n"] == r["chips"]["n"]
        assert v["cosine_to_float32"]["min"] > 0.9999  # the same model, so the same embedding
        assert v["kernels"] == kernels
        assert set(v["latency"]) == {"1", "2"} and v["latency"]["1"]["n"] == 3
        assert v["real_masked_dev"] == rows["float32"]["real_masked_dev"]
    rm = rows["float32"]["real_masked_dev"]
    assert rm["gallery"]["people"] == PEOPLE
    # Each round enrols one unmasked photo a person; every other photo of the enrolled people probes.
    missed = set(r["chips"]["photos_without_face"])
    found = [(p, k) for f, p, k in photos if p is not None and str(f.relative_to(small_data)) not in missed]
    unmasked = {p: sum(k == "unmasked" for q, k in found if q == p) for p, _ in found}
    masked = {p: sum(k == "masked" for q, k in found if q == p) for p, _ in found}
    assert rm["gallery"]["rounds"] == max(unmasked.values())
    rounds = range(rm["gallery"]["rounds"])
    assert rm["masked"]["probes"] == sum(masked[p] for r in rounds for p in unmasked if unmasked[p] > r)
    assert rm["unmasked"]["probes"] == sum(unmasked[p] - 1 for r in rounds for p in unmasked if unmasked[p] > r)
    assert rows["dlib (int8)"]["kernels"] == str(model_set.load("face_embedder_dlib").kernels())
    assert "cosine_to_float32" not in rows["dlib (int8)"]


def test_text_table_names_every_build(small_data: Path, work: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert ev.main(["--work", str(work), "--data", str(small_data), "--runs", "2", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    for name in VARIANTS:
        assert f"\n  {name:<18}XNNPACK: " in text
    assert f"{SHIPPED} *" in text


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "must be >= 1"),
    (["--threads", ","], "--threads takes counts like 1,2"),
    (["--runs", "x"], "not an integer"),
    (["--also", "old"], "--also takes NAME=PATH, got 'old'"),
    (["--also", "old=/no/such.tflite"], "--also old: model file not found: /no/such.tflite"),
])
def test_bad_arguments_exit_2_naming_them(argv: list[str], message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        ev.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_folders_exit_2_naming_them(tmp_path: Path, work: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert ev.main(["--models", str(tmp_path / "nomodels")]) == 2
    assert f"--models folder not found: {tmp_path / 'nomodels'}" in capsys.readouterr().err
    assert ev.main(["--work", str(work), "--data", str(tmp_path)]) == 2
    assert f"data folder not found: {tmp_path / 'real-masked-dev'}" in capsys.readouterr().err
