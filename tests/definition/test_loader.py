"""Loading a pipeline from a ``MODULE:ATTR`` reference (definition._loader): each way a
reference can be wrong is a PipelineLoadError saying what was found and what to write;
a file reference loads the file once, even when its name is taken by another module."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from resumable.definition._loader import load_pipeline
from resumable.errors import InvalidIdError, PipelineLoadError

PIPELINE = """
from resumable import Pipeline

def step(context):
    return {"done": True}

pipeline = Pipeline("loaded", {"a": {"function": step}}, storage="memory://loader")
"""


def _module(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_a_function_returning_something_else_is_refused(tmp_path: Path) -> None:
    path = _module(tmp_path, _unique("answer"), "def build():\n    return 42\n")
    with pytest.raises(PipelineLoadError, match=r"returned a int \(42\), not a Pipeline"):
        load_pipeline(f"{path}:build")


@pytest.mark.parametrize(
    ("attr", "found"),
    [
        ("json", "is the module json, not a Pipeline"),
        ("Thing", "is the class"),
        ("long_text", "is a str ('" + "x" * 56 + "...)"),
    ],
)
def test_what_the_reference_names_instead_of_a_pipeline_is_described(
    tmp_path: Path, attr: str, found: str
) -> None:
    body = "import json\n\nclass Thing:\n    pass\n\nlong_text = '" + "x" * 100 + "'\n"
    path = _module(tmp_path, _unique("things"), body)
    with pytest.raises(PipelineLoadError) as raised:
        load_pipeline(f"{path}:{attr}")
    assert found in str(raised.value)


def test_a_file_that_raises_on_import_is_reported_and_not_left_half_imported(
    tmp_path: Path,
) -> None:
    name = _unique("broken")
    path = _module(tmp_path, name, "raise RuntimeError('no GPU here')\n")
    with pytest.raises(PipelineLoadError, match=r"failed: RuntimeError: no GPU here"):
        load_pipeline(f"{path}:pipeline")
    assert name not in sys.modules


def test_a_file_that_is_not_python_source_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "notes.txt"
    data.write_text("pipeline = 1\n")
    with pytest.raises(PipelineLoadError, match="not a Python source file"):
        load_pipeline(f"{data}:pipeline")


def test_a_file_is_loaded_once_even_when_its_name_is_another_modules(tmp_path: Path) -> None:
    path = _module(tmp_path, "json", PIPELINE)  # `json` is the standard library's
    first = load_pipeline(f"{path}:pipeline")
    again = load_pipeline(f"{path}:pipeline")
    assert first.pipeline_name == "loaded" and again is first
    import json

    assert hasattr(json, "dumps")  # the standard module is left alone
    mine = _unique("mine")
    own = _module(tmp_path, mine, PIPELINE)
    assert load_pipeline(f"{own}:pipeline") is load_pipeline(f"{own}:pipeline")


def test_a_module_whose_own_import_fails_is_told_apart_from_a_missing_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _unique("needs")
    _module(tmp_path, name, "import no_such_dependency_xyz\n")
    with pytest.raises(PipelineLoadError) as raised:
        load_pipeline(f"{name}:pipeline")
    assert f"importing module {name!r} failed" in str(raised.value)
    assert "no_such_dependency_xyz" in str(raised.value)

    boom = _unique("boom")
    _module(tmp_path, boom, "1 / 0\n")
    with pytest.raises(PipelineLoadError, match="failed: ZeroDivisionError"):
        load_pipeline(f"{boom}:pipeline")


def test_a_factory_that_fails_is_reported_and_library_errors_pass_through(
    tmp_path: Path,
) -> None:
    body = """
    from resumable.errors import InvalidIdError

    def failing():
        raise OSError("the model file is missing")

    def refusing():
        raise InvalidIdError("run id 'a/b' is not safe")
    """
    path = _module(tmp_path, _unique("factories"), body)
    with pytest.raises(PipelineLoadError, match=r"calling .*:failing\(\) failed: OSError"):
        load_pipeline(f"{path}:failing")
    with pytest.raises(InvalidIdError, match="is not safe"):
        load_pipeline(f"{path}:refusing")


def test_an_empty_run_id_is_a_mistake_not_a_new_id(tmp_path: Path) -> None:
    path = _module(tmp_path, _unique("ok"), PIPELINE)
    with pytest.raises(InvalidIdError):
        load_pipeline(f"{path}:pipeline", run_id="")
