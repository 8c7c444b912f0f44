"""The curated public API: what `import reflexopt` exports, and that every export resolves."""

from __future__ import annotations

import reflexopt

EXPECTED = {
    "Budget", "DataSpec", "EvalConfig", "ModelSpec", "OptimizeConfig", "OptimizeResult", "Optimizer", "Prompt",
    "ReflexoptError", "ScorerSpec", "eval_prompt", "eval_models", "evaluate", "load_dataset", "load_prompt",
    "optimize", "strategy_names", "PromptSet", "Task", "EventBus", "current_prompt", "Score",
}


def test_exports_are_exactly_the_curated_list() -> None:
    assert set(reflexopt.__all__) == EXPECTED
    assert set(dir(reflexopt)) >= EXPECTED
    for name in EXPECTED:
        assert getattr(reflexopt, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        reflexopt.nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_plain_string_api(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import label_model, label_rows, write_jsonl

    from reflexopt.models import FunctionModel, register_fake, unregister_fake

    data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
    (tmp_path / "p.md").write_text("Look.\n")
    register_fake("fake/api", FunctionModel(label_model))
    try:
        r = reflexopt.optimize(str(data), str(tmp_path / "p.md"), model="fake/api", metric="contains",
                               max_trials=6, output=tmp_path / "best.md")
    finally:
        unregister_fake("fake/api")
    assert r.best_test > r.baseline_test and (tmp_path / "best.md").read_text() == r.best_prompt
