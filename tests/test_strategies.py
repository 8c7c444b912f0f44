"""Every search strategy behind one contract (fakes), and the DSPy adapter on garbage completions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, label_rows, names_labels, write_jsonl

from reflexopt.config import Budget, DataSpec, ModelSpec, OptimizeConfig, ScorerSpec
from reflexopt.errors import ConfigError
from reflexopt.models import FunctionModel, register_fake, unregister_fake
from reflexopt.optimizer import Optimizer, optimize
from reflexopt.prompt import Demo, Prompt
from reflexopt.strategies import get_strategy, strategy_names


def _task(messages: list[dict[str, str]]) -> str:
    text = " ".join(m["content"] for m in messages)
    item = messages[-1]["content"]
    return ("positive" if "good" in item else "negative") if names_labels(text) else "hmm"


def _reasoner(messages: list[dict[str, str]]) -> str:
    return "<prompt>Classify the gadget review as positive or negative.</prompt>"


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    rows = [{"input": f"{'good' if i % 2 else 'bad'} gadget {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(60)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "p.md").write_text("Look at this.\n")
    task, reasoner = FunctionModel(_task), FunctionModel(_reasoner)
    register_fake("fake/s-task", task)
    register_fake("fake/s-reasoner", reasoner)
    yield data, tmp_path / "p.md", task, reasoner
    unregister_fake("fake/s-task")
    unregister_fake("fake/s-reasoner")


def _cfg(data: Path, prompt: Path, strategy: str, max_calls: int = 400) -> OptimizeConfig:
    return OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), model=ModelSpec(id="fake/s-task"),
                          reasoning=ModelSpec(id="fake/s-reasoner"), scorer=ScorerSpec(metric="contains"),
                          budget=Budget(max_calls=max_calls, max_trials=8, patience=8), strategy=strategy)


@pytest.mark.parametrize("strategy", strategy_names())
def test_strategy_contract(setup: Any, strategy: str, tmp_path: Path) -> None:
    """Same workload, same verdict: budget never exceeded, never worse than the baseline on val, the best is a
    prompt file eval accepts, the test split is untouched by the search, and a re-run costs 0 calls."""
    data, prompt, task, reasoner = setup
    cfg = _cfg(data, prompt, strategy)
    r = optimize(cfg, run_dir=tmp_path / f"run-{strategy}")
    assert r.model_calls <= 400 and r.usage["budget_calls_used"] <= 400
    assert r.best_val >= r.baseline_val
    assert r.best_test > r.baseline_test + 0.5, strategy  # every strategy finds the label set here
    from reflexopt.prompt import parse_prompt

    parse_prompt(r.best_prompt)
    events = [json.loads(x) for x in (Path(r.run_dir) / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "stop" for e in events)
    evals = [json.loads(x) for x in (Path(r.run_dir) / "evals.jsonl").read_text().splitlines()]
    splits = [e["split"] for e in evals]
    assert set(splits) == {"train", "val", "test"} or set(splits) == {"val", "test"}
    first_test = splits.index("test")  # nothing but the verdict scores test, and only after the search
    assert set(splits[first_test:]) == {"test"}, splits[first_test:]
    test_ids = {e["case_id"] for e in evals if e["split"] == "test"}
    assert test_ids and not test_ids & {e["case_id"] for e in evals if e["split"] != "test"}
    served = len(task.calls) + len(reasoner.calls)
    again = optimize(cfg, run_dir=tmp_path / f"again-{strategy}")
    assert again.model_calls == 0 and len(task.calls) + len(reasoner.calls) == served
    assert again.best_prompt == r.best_prompt


@pytest.mark.parametrize("strategy", ["mipro", "gepa"])
def test_dspy_strategy_never_exceeds_max_calls(setup: Any, strategy: str, tmp_path: Path) -> None:
    data, prompt, task, reasoner = setup
    r = optimize(_cfg(data, prompt, strategy, max_calls=90), run_dir=tmp_path / "run")
    assert r.usage["budget_calls_used"] <= 90
    assert len(task.calls) + len(reasoner.calls) <= 90


def test_unknown_strategy_is_a_config_error(setup: Any) -> None:
    data, prompt, _, _ = setup
    with pytest.raises(ConfigError, match="unknown strategy"):
        Optimizer(_cfg(data, prompt, "annealing"))
    with pytest.raises(ConfigError):
        get_strategy("")


@pytest.mark.parametrize("garbage", ["", "   ", "[[ ## answer ## ]]", '{"answer": ', "\x00\x01", "a" * 5000,
                                     "<prompt></prompt>", "```json\n{]\n```"])
def test_adapter_never_fails_to_parse(garbage: str) -> None:
    from reflexopt.data import Case
    from reflexopt.strategies.dspy_opt import ReflexAdapter, TaskSignature

    base = Prompt("Classify.\n", answer_cue="Answer:", demo_style="turns")
    adapter = ReflexAdapter(base, {"x": Case(id="1", input="x")})
    sig = TaskSignature.with_instructions("Say positive or negative.")
    assert adapter.parse(sig, garbage) == {"answer": garbage.strip()}
    import dspy

    demos = [dspy.Example(input="great", answer="positive")]
    msgs = adapter.format(sig, demos, {"input": "x"})
    expected = Prompt("Say positive or negative.\n", answer_cue="Answer:", demos=(Demo("great", "positive"),))
    assert msgs == expected.render(Case(id="1", input="x"))


def test_dspy_and_litellm_stay_off_the_start_up_path() -> None:
    import subprocess
    import sys

    code = ("import sys, reflexopt, reflexopt.cli, reflexopt.optimizer, reflexopt.strategies; "
            "print('dspy' in sys.modules, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("strategy", ["mipro", "gepa"])
def test_json_output_stays_one_object_when_dspy_prints(strategy: str, openai_server: FakeOpenAI,
                                                       tmp_path: Path) -> None:
    """DSPy prints its progress and logs; `--json` must still print exactly one JSON object on stdout, and
    stderr nothing at all."""
    openai_server.responder = lambda req: "positive" if "good" in req["messages"][-1]["content"] else "negative"
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
    (tmp_path / "p.md").write_text("Label it.\n")
    r = subprocess.run([sys.executable, "-m", "reflexopt", "optimize", str(data), str(tmp_path / "p.md"), "-m",
                        "openai/t", "--api-base", openai_server.url, "--metric", "contains", "--strategy", strategy,
                        "--max-calls", "150", "--json"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "REFLEXOPT_HOME": str(tmp_path / "h"),
                            "OPENAI_API_KEY": "sk-test-00000000000000"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["model_calls"] <= 150
    # and stderr stays clean: no DSPy log lines ("WARNING dspy.predict.predict: Input contains fields not in
    # signature"), no tqdm bars, no library warnings
    noise = [line for line in r.stderr.splitlines()
             if re.search(r"dspy|WARNING|Warning|Traceback|it/s\]|\d%\|", line)]
    assert not noise, noise[:5]
