"""The coverage floor `make test` enforces (tests/coverage_floor.py), on synthetic reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import coverage_floor as floor


def _file(percent: float, statements: int = 10, branches: int = 4) -> dict[str, object]:
    return {
        "summary": {
            "percent_covered": percent,
            "num_statements": statements,
            "num_branches": branches,
        }
    }


def _report(**modules: dict[str, object]) -> dict[str, object]:
    files = {
        f"shared/resumable/{name.replace('__', '/')}.py": data for name, data in modules.items()
    }
    # every core pattern present, well covered, unless the test says otherwise
    for pattern in floor.CORE:
        path = "shared/resumable/" + pattern.replace("*", "")
        files.setdefault(path, _file(100.0))
    return {"files": files}


def test_floor_of_core_and_general_and_new_modules() -> None:
    assert floor.floor_of("serverless/_worker.py") == 95
    assert floor.floor_of("serverless/_worker_io.py") == 95
    assert floor.floor_of("serverless/transitions/_attempt.py") == 95
    assert floor.floor_of("checkpoint/_manifest.py") == 95
    # the lead's new map modules, and anything not listed: the general floor
    assert floor.floor_of("serverless/_map_state.py") == 85
    assert floor.floor_of("serverless/_map.py") == 85
    assert floor.floor_of("serverless/transitions/_item.py") == 85
    assert floor.floor_of("cli/_ui.py") == 85


def test_module_name_relative_to_the_package() -> None:
    assert floor.module_name("/w/shared/resumable/cli/_ui.py") == "cli/_ui.py"
    assert floor.module_name("shared\\resumable\\_log.py") == "_log.py"
    assert floor.module_name("/w/emulators/launcher.py") is None


def test_shortfalls_list_each_module_under_its_floor() -> None:
    report = _report(
        _log=_file(84.9),
        cli___ui=_file(85.0),
        serverless___control=_file(94.99),
        serverless___map_state=_file(70.0),
        checkpoint___codec=_file(95.0),
        empty=_file(0.0, statements=0, branches=0),
    )
    assert floor.shortfalls(report) == [
        ("_log.py", 84.9, 85.0),
        ("serverless/_control.py", 94.99, 95.0),
        ("serverless/_map_state.py", 70.0, 85.0),
    ]


def test_main_fails_listing_the_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(_report(_log=_file(80.0), serverless___worker=_file(90.0))))
    assert floor.main(["--json", str(path)]) == 1
    err = capsys.readouterr().err
    assert "2 module(s) under their floor" in err
    assert "_log.py" in err and "80.00% < 85%" in err
    assert "serverless/_worker.py" in err and "90.00% < 95%" in err


def test_main_passes_when_every_module_reaches_its_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(_report(_log=_file(85.0))))
    assert floor.main(["--json", str(path)]) == 0
    assert "every module" in capsys.readouterr().out


def test_a_core_pattern_matching_nothing_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report()
    del report["files"]["shared/resumable/serverless/_control.py"]  # type: ignore[attr-defined]
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(report))
    assert floor.main(["--json", str(path)]) == 1
    assert "'serverless/_control.py' matches no module" in capsys.readouterr().err


def test_no_library_module_measured_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps({"files": {"emulators/launcher.py": _file(100.0)}}))
    assert floor.main(["--json", str(path)]) == 1
    assert "no module of the library was measured" in capsys.readouterr().err
