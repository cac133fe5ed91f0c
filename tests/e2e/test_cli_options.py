"""`edge-app` option placement, lazy imports, missing galleries and usage errors (issue 10: 11, 13, 15, 17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_app.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, build_parser, main
from edge_app.gallery.store import Gallery

EXE = Path(sys.executable).parent / "edge-app"


def run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *argv: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == EXIT_USAGE
    return str(capsys.readouterr().err)


def small_gallery(path: Path, name: str = "Ada") -> Path:
    with Gallery(path) as g:
        g.add_person(name)
        g.add_templates(name, np.eye(1, 128, dtype=np.float32), model_sha="ab" * 32, masked=False)
    return path


# --- 11: common options before and after the subcommand -------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--db", "A.db", "--json", "gallery", "list"],
    ["gallery", "--db", "A.db", "--json", "list"],
    ["gallery", "list", "--db", "A.db", "--json"],
    ["--db", "A.db", "recognize", "x.jpg", "--json"],
    ["recognize", "--json", "x.jpg", "--db", "A.db"],
    ["--json", "enroll", "--name", "N", "p.jpg", "--db", "A.db"],
    ["enroll", "--db", "A.db", "--json", "--name", "N", "p.jpg"],
    ["--db", "A.db", "--json", "doctor"],
])
def test_common_options_parse_in_every_place(argv):
    args = build_parser().parse_args(argv)
    assert args.db == Path("A.db") and args.json is True
    # Options not given keep their defaults whatever the placement of the others.
    assert args.config is None and args.models is None and args.threads is None and args.verbose == 0


def test_an_option_after_the_command_does_not_reset_one_before_it():
    args = build_parser().parse_args(["--db", "A.db", "--threads", "3", "gallery", "list", "-v"])
    assert (args.db, args.threads, args.verbose) == (Path("A.db"), 3, 1)
    args = build_parser().parse_args(["--db", "A.db", "gallery", "--db", "B.db", "list"])
    assert args.db == Path("B.db")  # the later, inner one wins


def test_gallery_list_with_db_before_and_after(tmp_path, capsys):
    db = small_gallery(tmp_path / "g.db")
    outs = []
    for argv in (["gallery", "--db", str(db), "list", "--json"], ["gallery", "list", "--db", str(db), "--json"],
                 ["--db", str(db), "--json", "gallery", "list"]):
        code, out, err = run(capsys, *argv)
        assert code == EXIT_OK, err
        outs.append(json.loads(out))
    assert outs[0] == outs[1] == outs[2]
    assert [p["name"] for p in outs[0]["persons"]] == ["Ada"]


def test_enroll_and_recognize_with_options_before_the_command(tmp_path, faces_dev, capsys):
    db = tmp_path / "g.db"
    code, out, err = run(capsys, "--db", str(db), "--json", "enroll", "--name", "Biden", "--masked-templates", "0",
                         str(faces_dev / "biden.jpg"))
    assert code == EXIT_OK, err
    assert json.loads(out)["enrolled"] == 1
    code, out, err = run(capsys, "enroll", "--name", "Obama", "--masked-templates", "0",
                         str(faces_dev / "obama.jpg"), "--db", str(db), "--json")
    assert code == EXIT_OK, err
    for argv in (["--db", str(db), "--json", "recognize", str(faces_dev / "biden.jpg")],
                 ["recognize", str(faces_dev / "biden.jpg"), "--db", str(db), "--json"]):
        code, out, err = run(capsys, *argv)
        assert code == EXIT_OK, err
        assert [f["name"] for f in json.loads(out)["faces"]] == ["Biden"]


# --- 13: read-only commands refuse a missing gallery and create nothing ----------------------------


@pytest.mark.parametrize("argv", [
    ["gallery", "list"], ["gallery", "export", "OUT"], ["gallery", "remove", "Ada"], ["recognize", "FACE"],
])
def test_reading_commands_refuse_a_missing_gallery(tmp_path, faces_dev, capsys, argv):
    missing = tmp_path / "typo" / "new.db"
    argv = [str(tmp_path / "out.json") if a == "OUT" else str(faces_dev / "biden.jpg") if a == "FACE" else a
            for a in argv]
    code, _, err = run(capsys, *argv, "--db", str(missing))
    assert code == EXIT_ERROR
    assert f"gallery {missing} does not exist" in err and "enroll" in err
    assert not (tmp_path / "typo").exists() and not (tmp_path / "out.json").exists()
    # A folder where the file should be is refused the same way.
    code, _, err = run(capsys, *argv, "--db", str(tmp_path))
    assert code == EXIT_ERROR and "is a folder" in err


# --- 15: `--version` and `gallery list` do not load the heavy modules ------------------------------

HEAVY = ("cv2", "ai_edge_litert", "tflite_runtime", "paho", "cryptography", "gpiozero")


_PROBE = """import json, sys
from edge_app.cli import main
try:
    rc = main(sys.argv[2:])
except SystemExit as e:
    rc = e.code
print(json.dumps([rc, [m for m in sys.argv[1].split(",") if m in sys.modules]]))
"""


def _imported_by(argv: list[str]) -> set[str]:
    res = subprocess.run([sys.executable, "-c", _PROBE, ",".join(HEAVY), *argv], capture_output=True, text=True,
                         timeout=120, check=True)
    rc, mods = json.loads(res.stdout.strip().splitlines()[-1])
    assert rc in (0, None), res.stdout + res.stderr
    return set(mods)


def test_version_imports_no_heavy_module(tmp_path):
    assert _imported_by(["--version"]) == set()
    assert _imported_by(["--help"]) == set()
    db = small_gallery(tmp_path / "g.db")
    assert _imported_by(["gallery", "list", "--db", str(db)]) == set()


def test_version_of_the_installed_command():
    res = subprocess.run([str(EXE), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "edge-app 0.1.0"


# --- 17: usage errors say what is wrong, before any model runs --------------------------------------


def test_threshold_that_is_not_a_number(capsys):
    err = usage_error(capsys, "recognize", "x.jpg", "--threshold", "abc")
    assert "--threshold: 'abc' is not a number in [-1, 1]" in err
    err = usage_error(capsys, "recognize", "x.jpg", "--masked-threshold", "nan")
    assert "--masked-threshold: 'nan' is not a number in [-1, 1]" in err
    err = usage_error(capsys, "recognize", "x.jpg", "--every", "two")
    assert "--every: 'two' is not a whole number >= 1" in err


@pytest.mark.parametrize("name", ["", "   ", "a\x07b"])
def test_bad_name_is_a_usage_error(tmp_path, faces_dev, capsys, name):
    db = tmp_path / "g.db"
    err = usage_error(capsys, "enroll", "--name", name, str(faces_dev / "biden.jpg"), "--db", str(db))
    assert "argument --name: person name" in err
    assert not db.exists()  # refused while parsing: no model ran, no gallery was made
