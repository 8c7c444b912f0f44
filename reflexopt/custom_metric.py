"""A user's own metric: a function in a file (`--metric file.py:function`) or, from the Python API, a function
given in code (`ro.optimize(..., metric=fn)`). Either is called as `fn(output, case)` and returns a score in 0..1,
alone or with feedback text about the answer (`custom_result` has the forms); metrics.MetricScorer scores with
it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .data import Case
from .errors import MetricError

FEEDBACK_CHARS = 2000  # a custom metric's feedback kept per case (the meta-prompts show less)


def custom_result(raw: Any) -> tuple[float, str, str | None] | None:
    """(score, feedback, failure category) from what a custom metric returned, or None when it is none of the
    accepted forms: a bool or a number in 0..1; a pair (score, feedback); a mapping with `score` and optionally
    `feedback` and `category`; an object with `score` and `feedback` attributes (a dspy.Prediction, GEPA's
    score with feedback). The feedback is text about this one answer; it reaches the diagnosis and the
    rewrites as a judge's reasoning does."""
    value: Any
    feedback: Any = ""
    category: Any = None
    if isinstance(raw, Mapping):
        value, feedback, category = raw.get("score"), raw.get("feedback", ""), raw.get("category")
    elif isinstance(raw, (tuple, list)):
        if len(raw) != 2:
            return None
        value, feedback = raw
    elif hasattr(raw, "score") and hasattr(raw, "feedback"):
        value, feedback = raw.score, raw.feedback
    else:
        value = raw
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)  # numpy's numbers and bools too
    except (TypeError, ValueError):
        return None
    if number != number or not 0.0 <= number <= 1.0:
        return None
    text = "" if feedback is None else str(feedback).strip()[:FEEDBACK_CHARS]
    return number, text, (str(category).strip()[:80] or None) if category is not None else None


PYTHON = "python:"  # the spec of a metric given as a Python function (the Python API's `metric=fn`)
_FUNCTIONS: dict[str, Callable[[str, Case], Any]] = {}


def python_metric(fn: Callable[[str, Case], Any]) -> str:
    """A Python function as a metric of this process (`ro.optimize(..., metric=fn)`): called as a metric file's
    function is, `fn(output, case)`, with the same return forms. Returns its spec, `python:module.name`, which
    the run's config records. Only this process knows the function: a worker, or a resume in another process,
    must be given it again (or a file, `--metric file.py:fn`). A function registered again under its name (a
    notebook cell run twice) replaces the earlier one."""
    if not callable(fn):
        raise MetricError(f"metric {fn!r} is not callable", fix="pass a function (output, case) -> score")
    name = f"{PYTHON}{getattr(fn, '__module__', None) or 'function'}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    _FUNCTIONS[name] = fn
    return name


def is_user_metric(spec: str) -> bool:
    """Whether `--metric SPEC` names a user's own metric: a Python file, or a function given in code."""
    return spec.startswith(PYTHON) or spec.partition(":")[0].strip().endswith(".py")


def user_metric(spec: str) -> Callable[[str, Case], Any]:
    """The function a user-metric spec names (`is_user_metric`)."""
    return python_function(spec) if spec.startswith(PYTHON) else load_custom_metric(spec)


def python_function(spec: str) -> Callable[[str, Case], Any]:
    fn = _FUNCTIONS.get(spec)
    if fn is None:
        raise MetricError(f"metric {spec!r} is a Python function, and this process was not given it",
                          fix="pass the function again (ro.optimize(..., metric=fn)), or write it in a file and "
                              "use --metric file.py:function")
    return fn


def load_custom_metric(spec: str) -> Callable[[str, Case], Any]:
    """`path/to/file.py:function`, a function `(output: str, case)` returning a bool or a number in 0..1
    (DSPy-style), or that and feedback text (GEPA-style; `custom_result` has the forms)."""
    import importlib.util

    file, _, func = spec.partition(":")
    path = Path(file.strip())
    func = func.strip() or "metric"
    if not path.is_file():
        raise MetricError(f"{path}: no such metric file", fix="write --metric path/to/metrics.py:function_name")
    mod_spec = importlib.util.spec_from_file_location(f"reflexopt_user_metric_{path.stem}", path)
    if mod_spec is None or mod_spec.loader is None:
        raise MetricError(f"{path}: cannot be imported", fix="pass a Python file")
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file failed to import
        first = str(e).splitlines()[0] if str(e) else ""
        raise MetricError(f"{path}: importing it failed ({type(e).__name__}: {first})",
                          fix="fix the metric file") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise MetricError(f"{path} has no function {func!r}", fix=f"use one of {names}" if names else
                          "define def metric(output, case) -> float")
    return fn  # type: ignore[no-any-return]
