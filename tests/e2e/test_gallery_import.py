"""`edge-app gallery import` reads what `gallery export` writes (issue 10 item 12): real enrolment, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_app.cli import EXIT_ERROR, EXIT_OK, main
from edge_app.gallery.store import Gallery


def run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exported(tmp_path_factory, faces_dev, model_set):  # type: ignore[no-untyped-def]
    """A gallery enrolled from real photos (plain + masked templates, a schedule, an end date), exported."""
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "source.db"
    for name, photo in (("Barack Obama", "obama.jpg"), ("Joe Biden", "biden.jpg")):
        assert main(["enroll", "--db", str(db), "--name", name, "--masked-templates", "2",
                     str(faces_dev / photo)]) == EXIT_OK
    with Gallery(db) as g:
        g.upsert_person("Joe Biden", valid_until="2031-01-20", note="visitor",
                        schedule=[{"days": ["mon", "tue"], "start": "08:00", "end": "18:00"}])
        g.upsert_person("Barack Obama", active=False)
    out = tmp / "gallery.json"
    assert main(["gallery", "export", str(out), "--db", str(db)]) == EXIT_OK
    return db, out, model_set.embedder_sha


def snapshot(db, sha):  # type: ignore[no-untyped-def]
    """What recognition and the access policy see: persons, their rules, their templates."""
    with Gallery(db) as g:
        persons = [(p.name, p.active, p.valid_from, p.valid_until, p.schedule, p.note, p.n_templates, p.n_masked)
                   for p in g.list_persons()]
        t = g.load_templates(sha)
        templates = sorted((t.names[int(pid)], bool(m), row.tobytes())
                           for pid, m, row in zip(t.person_ids, t.masked, t.embeddings, strict=True))
        return persons, templates, g.stale_template_counts(sha), g.gallery_version


def test_round_trip_into_a_fresh_gallery(exported, tmp_path, capsys):
    src, out, sha = exported
    fresh = tmp_path / "new" / "kiosk.db"
    code, text, err = run(capsys, "gallery", "import", str(out), "--db", str(fresh))
    assert code == EXIT_OK, err
    assert "imported 2 person(s), 6 template(s)" in text
    a, b = snapshot(src, sha), snapshot(fresh, sha)
    assert a[0] == b[0]  # names, active, validity, schedule, note, template counts
    assert len(a[1]) == 6 and [x[:2] for x in a[1]] == [x[:2] for x in b[1]]
    for (_, _, x), (_, _, y) in zip(a[1], b[1], strict=True):  # the same vectors (renormalised: 1 ulp)
        assert np.allclose(np.frombuffer(x, "<f4"), np.frombuffer(y, "<f4"), rtol=0, atol=1e-6)
    assert b[2] == {}  # every template is the current embedder's
    # The imported gallery exports to the same persons and templates.
    again = tmp_path / "again.json"
    assert run(capsys, "gallery", "export", str(again), "--db", str(fresh))[0] == EXIT_OK
    p1, p2 = json.loads(out.read_text())["persons"], json.loads(again.read_text())["persons"]
    assert [(p["name"], p["schedule"], [t["model_sha"] for t in p["templates"]]) for p in p1] == \
           [(p["name"], p["schedule"], [t["model_sha"] for t in p["templates"]]) for p in p2]


def test_merge_refuses_a_name_clash_and_replace_replaces(exported, tmp_path, faces_dev, capsys):
    src, out, sha = exported
    db = tmp_path / "kiosk.db"
    with Gallery(db) as g:
        g.add_person("Joe Biden")
        g.add_person("Someone Else")
    before = snapshot(db, sha)
    code, _, err = run(capsys, "gallery", "import", str(out), "--db", str(db))
    assert code == EXIT_ERROR
    assert "gallery.json" in err and "'Joe Biden'" in err and "--replace" in err and "nothing imported" in err
    assert snapshot(db, sha) == before  # not even Barack Obama went in
    code, text, err = run(capsys, "gallery", "import", str(out), "--replace", "--db", str(db))
    assert code == EXIT_OK, err
    assert "2 person(s) removed" in text
    assert snapshot(db, sha)[0] == snapshot(src, sha)[0]  # exactly the file's persons


def _broken(out, tmp_path, change):  # type: ignore[no-untyped-def]
    doc = json.loads(out.read_text())
    change(doc)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    return path


def _sha(doc):  # type: ignore[no-untyped-def]
    doc["persons"][1]["templates"][0]["model_sha"] = "cd" * 32


def _version(doc):  # type: ignore[no-untyped-def]
    doc["schema_version"] = 99


def _base64(doc):  # type: ignore[no-untyped-def]
    doc["persons"][0]["templates"][1]["embedding"] = "not base64!"


def _short(doc):  # type: ignore[no-untyped-def]
    doc["persons"][0]["templates"][0]["embedding"] = "AAAAAA=="


def _nan(doc):  # type: ignore[no-untyped-def]
    doc["persons"][0]["templates"][0]["embedding"] = __import__("base64").b64encode(
        np.full(doc["persons"][0]["templates"][0]["dim"], np.nan, "<f4").tobytes()).decode()


def _format(doc):  # type: ignore[no-untyped-def]
    doc["format"] = "something-else"


def _name(doc):  # type: ignore[no-untyped-def]
    doc["persons"][1]["name"] = "  "


def _dupe(doc):  # type: ignore[no-untyped-def]
    doc["persons"][1]["name"] = doc["persons"][0]["name"]


def _schedule(doc):  # type: ignore[no-untyped-def]
    doc["persons"][0]["schedule"] = [{"days": ["someday"], "start": "08:00", "end": "18:00"}]


def _dim(doc):  # type: ignore[no-untyped-def]
    # The right embedder's sha with 64 values: loaded, every probe would fail (nobody recognised).
    for t in doc["persons"][1]["templates"]:
        t["dim"], t["embedding"] = 64, __import__("base64").b64encode(np.ones(64, "<f4").tobytes()).decode()


def _masked_only(doc):  # type: ignore[no-untyped-def]
    doc["persons"][1]["templates"] = [t for t in doc["persons"][1]["templates"] if t["masked"]]


def _source(doc):  # type: ignore[no-untyped-def]
    doc["persons"][0]["templates"][0]["source"] = ["not", "text"]  # a clean import, not a TypeError


@pytest.mark.parametrize(("change", "says"), [
    (_sha, "made by another embedder (cdcdcdcdcdcd…)"),
    (_version, "newer edge-app (schema_version 99"),
    (_base64, "persons[0] ('Barack Obama') templates[1]: 'embedding' is not base64"),
    (_short, "'embedding' has 4 bytes, a 896-d float32 vector has 3584"),  # the default embedder's
    (_nan, "NaN/inf"),
    (_format, "not an edge-app gallery export (format 'something-else'"),
    (_name, "persons[1]: person name is empty"),
    (_dupe, "names appear more than once: 'Barack Obama'"),
    (_schedule, "bad schedule"),
    (_dim, "templates of [64] values, the embedder"),
    (_masked_only, "1 person(s) with masked templates only: 'Joe Biden'"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_fault_and_nothing_is_written(
        exported, tmp_path, capsys, change, says):
    _, out, sha = exported
    bad = _broken(out, tmp_path, change)
    fresh = tmp_path / "fresh" / "g.db"
    code, _, err = run(capsys, "gallery", "import", str(bad), "--db", str(fresh))
    assert code == EXIT_ERROR
    assert str(bad) in err and says in err, err
    assert not fresh.parent.exists()  # a bad file creates no gallery
    existing = tmp_path / "existing.db"
    with Gallery(existing) as g:
        g.add_person("Ada")
    before = snapshot(existing, sha)
    code, _, err = run(capsys, "gallery", "import", str(bad), "--replace", "--db", str(existing))
    assert code == EXIT_ERROR and says in err
    assert snapshot(existing, sha) == before  # --replace did not empty it either


def test_exports_are_private_and_an_odd_source_field_is_ignored(exported, tmp_path, capsys):
    import os
    import stat

    src, out, _ = exported
    old = os.umask(0)  # a shell with umask 000 must not write world-readable templates
    try:
        assert run(capsys, "gallery", "export", str(tmp_path / "e.json"), "--db", str(src))[0] == EXIT_OK
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "e.json").stat().st_mode) == 0o600
    odd = _broken(out, tmp_path, _source)
    assert run(capsys, "gallery", "import", str(odd), "--db", str(tmp_path / "g.db"))[0] == EXIT_OK


def test_corrupt_and_missing_files(exported, tmp_path, capsys):
    _, out, _ = exported
    truncated = tmp_path / "truncated.json"
    truncated.write_text(out.read_text()[:5000])
    code, _, err = run(capsys, "gallery", "import", str(truncated), "--db", str(tmp_path / "g.db"))
    assert code == EXIT_ERROR and "truncated.json: not valid JSON (line" in err and "corrupt or truncated" in err
    binary = tmp_path / "photo.json"
    binary.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not JSON")
    code, _, err = run(capsys, "gallery", "import", str(binary), "--db", str(tmp_path / "g.db"))
    assert code == EXIT_ERROR and "photo.json: not UTF-8 text" in err
    code, _, err = run(capsys, "gallery", "import", str(tmp_path / "nope.json"), "--db", str(tmp_path / "g.db"))
    assert code == EXIT_ERROR and "gallery file not found" in err and "nope.json" in err
    assert not (tmp_path / "g.db").exists()


def test_export_to_stdout_piped_into_import_from_stdin(exported, tmp_path):
    src, _, sha = exported
    exe = Path(sys.executable).parent / "edge-app"
    dst = tmp_path / "piped.db"
    export = subprocess.Popen([str(exe), "gallery", "export", "-", "--db", str(src)],
                                            stdout=subprocess.PIPE)
    res = subprocess.run([str(exe), "gallery", "import", "-", "--db", str(dst), "--json"],
                                       stdin=export.stdout, capture_output=True, text=True, timeout=120, check=False)
    assert export.wait(timeout=60) == 0
    assert res.returncode == EXIT_OK, res.stderr
    assert json.loads(res.stdout)["persons"] == 2
    assert snapshot(dst, sha)[0] == snapshot(src, sha)[0]
