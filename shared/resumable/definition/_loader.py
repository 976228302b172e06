"""Find a pipeline from a ``MODULE:ATTR`` reference, as the CLI's commands take it.

``MODULE`` is a dotted module name importable from the current directory
(``examples.quickstart``) or a Python file (``path/to/file.py``); ``ATTR`` (dotted
attributes allowed) names one of:

- a :class:`~resumable.Pipeline` instance;
- a ``Pipeline`` subclass, constructed with no positional arguments;
- a function returning a ``Pipeline``, called with no positional arguments.

A class or function that accepts ``storage``, ``run_guid`` / ``run_id``, ``tenant_id``,
``max_workers`` or ``cleanup_on_success`` keyword arguments gets the requested values
through them. Any requested setting it did not take is applied afterwards with
``pipeline.replace(...)``, a copy with the same steps. Its step graph, and so its
fingerprint, never changes; attributes the pipeline derived from its own constructor
arguments are not recomputed, so a pipeline whose steps use its storage should accept a
``storage`` argument.

A pipeline is recognised by its ``__resumable_pipeline__`` marker (``resumable.Pipeline``
sets it), so that this layer needs nothing from the runners.

Every failure raises :class:`PipelineLoadError`, whose message says what was looked
for, what was found, and what to write instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from resumable._ids import validate_id
from resumable.definition._spec import PipelineSpec
from resumable.errors import PipelineLoadError, ResumableError

_EXAMPLE = "examples/quickstart.py:QuickstartPipeline"


class PipelineLike(Protocol):
    """What every part of resumable needs of a pipeline object (``resumable.Pipeline``)."""

    pipeline_name: str
    spec: PipelineSpec

    @property
    def cleanup_on_success(self) -> bool: ...

    def replace(self, **overrides: Any) -> Any: ...


def is_pipeline(value: object) -> bool:
    """A pipeline object (not the class of one)."""
    return not inspect.isclass(value) and getattr(value, "__resumable_pipeline__", False) is True


def _is_pipeline_class(value: object) -> bool:
    return inspect.isclass(value) and getattr(value, "__resumable_pipeline__", False) is True


def load_pipeline(
    target: str,
    *,
    storage: Any = None,
    run_id: str | None = None,
    tenant_id: str | None = None,
    max_workers: int | None = None,
    cleanup_on_success: bool | None = None,
) -> Any:
    """The pipeline ``target`` names (a :class:`PipelineLike`, a ``resumable.Pipeline``
    in practice), with the given settings applied.

    A setting left at ``None`` keeps the pipeline's own value. Raises
    :class:`PipelineLoadError` when ``target`` cannot be imported or is not a pipeline;
    an invalid setting (an unsafe run id, an unsupported storage URL) raises the
    library's own error for it.
    """
    if run_id is not None:  # "" too: an empty id is a mistake, not a request for a new one
        validate_id(run_id, "run id")
    module_ref, attr_path = _split(target)
    module = _import(module_ref)
    obj = _attribute(module, module_ref, attr_path)
    requested: dict[str, Any] = {
        "storage": storage,
        "run_guid": run_id,
        "tenant_id": tenant_id,
        "max_workers": max_workers,
        "cleanup_on_success": cleanup_on_success,
    }
    requested = {k: v for k, v in requested.items() if v is not None}
    taken: set[str] = set()
    if is_pipeline(obj):
        pipeline = obj
    elif _is_pipeline_class(obj):
        pipeline, taken = _construct(obj, target, requested)
    elif callable(obj) and not inspect.isclass(obj):
        pipeline, taken = _construct(obj, target, requested)
        if not is_pipeline(pipeline):
            raise PipelineLoadError(
                f"{target} returned {_describe(pipeline)}, not a Pipeline: the function must "
                "return a resumable.Pipeline"
            )
    else:
        raise PipelineLoadError(
            f"{target} is {_describe(obj)}, not a Pipeline: name a Pipeline instance, a "
            "Pipeline subclass, or a function returning a Pipeline"
        )
    rest = {k: v for k, v in requested.items() if k not in taken}
    return pipeline.replace(**rest) if rest else pipeline


def _split(target: str) -> tuple[str, str]:
    module_ref, sep, attr_path = target.rpartition(":")
    if not sep or not module_ref or not attr_path:
        raise PipelineLoadError(
            f"{target!r} is not a MODULE:ATTR reference: write the module or file, a colon, "
            f"and the pipeline's name, e.g. {_EXAMPLE}"
        )
    return module_ref, attr_path


def _is_file_ref(module_ref: str) -> bool:
    return module_ref.endswith(".py") or "/" in module_ref or os.sep in module_ref


def _import(module_ref: str) -> ModuleType:
    if _is_file_ref(module_ref):
        return _import_file(Path(module_ref))
    # Console scripts do not put the current directory on sys.path; `python -m` does.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_ref)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_ref == missing or module_ref.startswith(missing + "."):
            raise PipelineLoadError(
                f"cannot import module {module_ref!r}: no module named {missing!r} (is it on "
                f"the Python path, relative to {os.getcwd()}? a file can be named as "
                "path/to/file.py:ATTR)"
            ) from exc
        raise PipelineLoadError(f"importing module {module_ref!r} failed: {exc}") from exc
    except Exception as exc:
        raise PipelineLoadError(
            f"importing module {module_ref!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise PipelineLoadError(f"cannot load {str(path)!r}: no such file")
    path = path.resolve()
    # The file's folder goes on sys.path so that it can import its sibling modules.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) != str(path):
        # The name is another module's (a file called json.py): a name of its own.
        name = f"_resumable_target_{abs(hash(str(path)))}"
        existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"cannot load {str(path)!r}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PipelineLoadError(
            f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _attribute(module: ModuleType, module_ref: str, attr_path: str) -> Any:
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = _pipelines_in(module)
            hint = f"; it defines {', '.join(found)}" if found else "; it defines no pipeline"
            raise PipelineLoadError(
                f"module {module_ref!r} has no attribute {attr_path!r}{hint}"
            ) from None
    return obj


def _pipelines_in(module: ModuleType) -> list[str]:
    names = []
    for name, value in vars(module).items():
        if is_pipeline(value) or (
            _is_pipeline_class(value) and value.__module__ == module.__name__
        ):
            names.append(name)
    return sorted(names)


def _construct(factory: Any, target: str, requested: dict[str, Any]) -> tuple[Any, set[str]]:
    """Call ``factory`` with the requested settings it names as parameters."""
    parameters: Mapping[str, inspect.Parameter]
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    kwargs: dict[str, Any] = {}
    for key, value in requested.items():
        aliases = ("run_guid", "run_id") if key == "run_guid" else (key,)
        for alias in aliases:
            parameter = parameters.get(alias)
            if parameter is not None and parameter.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                kwargs[alias] = value
                break
    required = [
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in kwargs
    ]
    if required:
        raise PipelineLoadError(
            f"cannot call {target}: it requires argument(s) {', '.join(required)}; give them "
            "defaults, or name a function that builds the pipeline without arguments"
        )
    try:
        result = factory(**kwargs)
    except ResumableError:
        raise
    except Exception as exc:
        raise PipelineLoadError(f"calling {target}() failed: {type(exc).__name__}: {exc}") from exc
    taken = {"run_guid" if k == "run_id" else k for k in kwargs}
    return result, taken


def _describe(value: object) -> str:
    if inspect.isclass(value):
        return f"the class {value.__module__}.{value.__qualname__}"
    if isinstance(value, ModuleType):
        return f"the module {value.__name__}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"a {type(value).__name__} ({text})"
