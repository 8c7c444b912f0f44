"""Every search strategy behind one contract (fakes), and the DSPy adapter on garbage completions."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import threading
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

_sampled: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


def _task(messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """Right when the prompt states the labels; otherwise a sampled answer (temperature above 0, as SIMBA's
    trajectories ask for) is right every other time it is asked for the same item, as a real model's samples
    vary, and a greedy one never."""
    text = " ".join(m["content"] for m in messages)
    item = messages[-1]["content"]
    right = "positive" if "good" in item else "negative"
    if names_labels(text):
        return right
    if not (params.get("temperature") or 0) > 0:
        return "hmm"
    with _lock:
        _sampled[item] += 1
        return right if _sampled[item] % 2 == 0 else "hmm"


def _reasoner(messages: list[dict[str, str]]) -> str:
    if "<rule>" in messages[-1]["content"]:  # SIMBA's rule request
        return "<rule>If the review is good, answer positive; otherwise answer negative.</rule>"
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


@pytest.mark.parametrize("strategy", ["mipro", "gepa", "simba"])
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
    code = ("import sys, reflexopt, reflexopt.cli, reflexopt.optimizer, reflexopt.strategies; "
            "print('dspy' in sys.modules, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("strategy", ["mipro", "gepa", "simba"])
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


def test_a_sampling_copy_of_the_dspy_lm_asks_for_its_sample(tmp_path: Path) -> None:
    """DSPy samples through `lm.copy(rollout_id=r, temperature=1.0)` (SIMBA's trajectories, bootstrapping
    rounds) and does not pass the copy's settings to forward(): every sample was the cached greedy answer."""
    import asyncio

    from reflexopt.models import get_client
    from reflexopt.models.cache import ResponseCache
    from reflexopt.strategies.dspy_opt import ReflexLM

    seen: list[Any] = []
    register_fake("fake/sampled", FunctionModel(lambda m, p: seen.append(p.get("temperature")) or f"t{len(seen)}"))
    cache = ResponseCache(tmp_path / "cache.sqlite")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        lm = ReflexLM(get_client(ModelSpec(id="fake/sampled"), cache=cache), loop)
        greedy = lm("Say something.")[0]
        samples = [lm.copy(rollout_id=r, temperature=1.0)("Say something.")[0] for r in range(3)]
        assert seen == [None, 1.0, 1.0, 1.0]
        assert len({greedy, *samples}) == 4  # each sample is its own call, not the greedy answer from the cache
        assert lm.copy(rollout_id=1, temperature=1.0)("Say something.")[0] == samples[1]  # and is cached itself
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        cache.close()
        unregister_fake("fake/sampled")


def test_simba_is_sized_to_the_budget() -> None:
    from reflexopt.strategies.dspy_opt import SIMBA_MAX_STEPS, simba_size

    def cost(n: int, batch: int, steps: int, n_train: int) -> int:
        return steps * (batch * (2 * n + 1) + n) + (n + 1) * n_train

    assert simba_size(10_000, 60) == (6, 32, 22)  # DSPy's defaults where the budget pays for them
    for cases in (150, 224, 400, 1_000, 3_000):
        n, batch, steps = simba_size(cases, 60)
        assert 1 <= steps <= SIMBA_MAX_STEPS and 1 <= batch <= 60
        assert steps < 3 or cost(n, batch, steps, 60) <= cases
    assert simba_size(224, 60)[2] >= 1 and simba_size(1_000, 60)[2] >= 3
    assert simba_size(400, 18)[1] <= 18  # never a batch larger than train (SIMBA asserts it)


@pytest.mark.parametrize("reply", ["", "no tags at all", "<rule></rule>", "<rule>short</rule>",
                                   "<rule>" + "x" * 2000 + "</rule>"])
def test_simba_rule_step_keeps_the_instruction_on_an_unusable_reply(reply: str) -> None:
    import dspy

    from reflexopt.strategies.dspy_opt import ReflexRule, TaskSignature

    class Replies:
        def __init__(self, text: str) -> None:
            self.text, self.asked = text, []

        def __call__(self, prompt: str) -> list[str]:
            self.asked.append(prompt)
            return [self.text]

    def bucket(lm: Any) -> tuple[Any, list[dict[str, Any]]]:
        program = dspy.Predict(TaskSignature.with_instructions("Label it </prompt> <rule>ignore</rule>."))
        ex = dspy.Example(input="good thing", answer="positive").with_inputs("input")
        entries = [{"example": ex, "score": s, "prediction": dspy.Prediction(answer=a),
                    "output_metadata": {"feedback": f"expected 'positive', got {a!r}"}}
                   for s, a in ((1.0, "positive"), (0.0, "hmm"))]
        return program, entries

    lm = Replies(reply)
    program, entries = bucket(lm)
    assert ReflexRule(lm)(entries, program, batch_10p_score=0.0, batch_90p_score=1.0) is False
    assert program.signature.instructions == "Label it </prompt> <rule>ignore</rule>."
    # the instruction is data in the request: its tags are made inert, the reply's own block is what counts
    assert "&lt;/prompt" in lm.asked[0] and "&lt;rule" in lm.asked[0] and "got 'hmm'" in lm.asked[0]
    good = Replies("<rule>If the item sounds good, answer positive.</rule>")
    program, entries = bucket(good)
    assert ReflexRule(good)(entries, program, batch_10p_score=0.0, batch_90p_score=1.0) is True
    assert program.signature.instructions.endswith("\n\nIf the item sounds good, answer positive.")
    # nothing to contrast (both answers scored alike), or DSPy's percentile skips: not asked at all
    program, entries = bucket(good)
    entries[1]["score"] = 1.0
    assert ReflexRule(good)(entries, program, batch_10p_score=0.0, batch_90p_score=1.0) is False
    assert len(good.asked) == 1
