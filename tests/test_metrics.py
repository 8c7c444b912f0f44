from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reflexopt.data import Case
from reflexopt.errors import ConfigError, DataError, MetricError
from reflexopt.metrics import MetricScorer, contains, default_metric, exact, json_valid, label_report, rouge_l, token_f1


def cases(*ideals: str | None) -> list[Case]:
    return [Case(id=str(i), input=f"in{i}", ideal=x, line=i + 1, source="d.jsonl") for i, x in enumerate(ideals)]


def test_exact() -> None:
    assert exact("  Positive. ", "positive") == 1.0
    assert exact("positive!", "negative") == 0.0


def test_contains_requires_only_the_right_label() -> None:
    labels = ["positive", "negative"]
    assert contains("The sentiment is Positive.", "positive", label_set=labels) == 1.0
    assert contains("positive or negative", "positive", label_set=labels) == 0.0
    assert contains("negative", "positive", label_set=labels) == 0.0
    assert contains("positively", "positive", label_set=labels) == 0.0
    assert contains("Human", "Human", label_set=["Human", "Entity"]) == 1.0


def test_contains_reads_a_label_written_as_words() -> None:
    """A label written in snake or camel case is named by an answer that writes its words: "top up failed" for
    `top_up_failed` (the punctuation used to be deleted, so the label was "topupfailed" and the words never
    matched), "add to playlist" for `AddToPlaylist`; a label inside a longer one is still not the longer one."""
    intents = ["top_up_failed", "atm_support", "AddToPlaylist", "PlayMusic"]
    assert contains("Top up failed.", "top_up_failed", label_set=intents) == 1.0
    assert contains("top_up_failed", "top_up_failed", label_set=intents) == 1.0
    assert contains("Intent: add to playlist", "AddToPlaylist", label_set=intents) == 1.0
    assert contains("add to playlist, or play music", "AddToPlaylist", label_set=intents) == 0.0
    assert contains("atm", "atm_support", label_set=intents) == 0.0
    hate = ["hate", "not hate"]
    assert contains("not hate", "hate", label_set=hate) == 0.0
    assert contains("not_hate", "not hate", label_set=hate) == 1.0
    report = label_report(["top up failed", "ATM support", "AddToPlaylist"], ["top_up_failed", "atm_support",
                                                                             "AddToPlaylist"], intents)
    assert report is not None and report["macro_f1"] == 1.0 and report["no_label"] == 0


def test_token_f1_known_values() -> None:
    assert token_f1("the cat sat", "cat sat") == 1.0
    assert token_f1("cat", "cat sat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("dog", "cat") == 0.0


def test_rouge_l_known_values() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l("", "x") == 0.0
    mid = rouge_l("the cat sat", "the cat sat on the mat")
    assert 0.5 < mid < 1.0


def test_json_and_schema(tmp_path: Path) -> None:
    assert json_valid('```json\n{"a": 1}\n```', None) == 1.0
    assert json_valid("{a: 1}", None) == 0.0
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "required": ["label"]}))
    m = MetricScorer(f"json-schema:{schema}")
    assert m.score_sync(cases(None)[0], '{"label": "x"}').value == 1.0
    assert m.score_sync(cases(None)[0], '{"other": 1}').value == 0.0
    with pytest.raises(MetricError, match="no such schema"):
        MetricScorer(f"json-schema:{tmp_path / 'missing.json'}")


def test_regex_and_max_length() -> None:
    c = cases(None)[0]
    assert MetricScorer(r"regex:^\d+$").score_sync(c, "42").value == 1.0
    assert MetricScorer(r"regex:^\d+$").score_sync(c, "4 2").value == 0.0
    assert MetricScorer("max-length:5").score_sync(c, "abcde").value == 1.0
    assert MetricScorer("max-length:5").score_sync(c, "abcdef").passed is False
    with pytest.raises(MetricError, match="needs an argument"):
        MetricScorer("regex")
    with pytest.raises(MetricError, match="invalid regular expression"):
        MetricScorer("regex:(")


def test_unknown_metric_and_missing_reference() -> None:
    with pytest.raises(MetricError, match="unknown metric 'bleu'"):
        MetricScorer("bleu")
    with pytest.raises(DataError, match=r"d.jsonl:2: row has no reference"):
        MetricScorer("exact", cases("a", None))


def test_scorer_labels_and_failure_category() -> None:
    cs = cases("positive", "negative", "positive", "negative")
    m = MetricScorer("contains", cs)
    assert m.label_set == ["negative", "positive"]
    s = m.score_sync(cs[0], "negative")
    assert s.value == 0.0 and s.passed is False and s.category == "wrong answer"


def test_default_metric() -> None:
    assert default_metric(cases("positive", "negative", "positive", "negative")) == "contains"
    assert default_metric(cases("Paris is the capital", "1969 moon landing year", "blue whale")) == "f1"
    long = "word " * 30
    assert default_metric(cases(long, long + "x")) == "rouge-l"
    with pytest.raises(ConfigError, match="--judge"):
        default_metric(cases("a", None))


def test_collapsed_label_needs_one_answer_the_references_do_not_give() -> None:
    from reflexopt.metrics import collapsed_label, named_label

    labels = ["positive", "negative", "not positive"]
    assert named_label("Not positive.", labels) == "not positive"  # the longer label, not both
    assert named_label("positive or negative", labels) is None
    half = ["positive", "negative"] * 10
    assert collapsed_label(["positive"] * 19 + ["negative"], half, labels) == ("positive", 19)
    assert collapsed_label(["positive"] * 17 + ["negative"] * 3, half, labels) is None  # varies enough
    assert collapsed_label(["positive"] * 20, ["positive"] * 19 + ["negative"], labels) is None  # it is right
    assert collapsed_label(["Not positive"] * 20, half, labels) == ("not positive", 20)
    assert collapsed_label(["positive"] * 9, half[:9], labels) is None  # too few answers to tell
    assert collapsed_label(["?"] * 20, half, labels) is None


def test_macro_f1_beside_accuracy_computed_by_hand() -> None:
    """8 answers, references 5 `up` and 3 `down`; the prompt answers `up` 5 times (4 right), `down` twice (1
    right) and names no label once. up: tp 4, fp 1, fn 1 -> F1 8/10; down: tp 1, fp 1, fn 2 -> F1 2/5;
    macro-F1 (0.8 + 0.4) / 2 = 0.6, where accuracy is 5/8."""
    from reflexopt.metrics import label_report

    outs = ["up", "up", "up", "up", "down", "up", "Label: down", "no idea"]
    gold = ["up", "up", "up", "up", "up", "down", "down", "down"]
    r = label_report(outs, gold, ["up", "down"])
    assert r is not None
    assert r["f1_by_label"] == {"up": 0.8, "down": 0.4}
    assert r["macro_f1"] == 0.6 and r["no_label"] == 1 and r["n"] == 8
    # balanced accuracy: up 4 of 5 right, down 1 of 3 -> (0.8 + 0.333) / 2, where accuracy is 5/8
    assert r["balanced_accuracy"] == 0.5667
    exact = label_report(outs, gold, ["up", "down"], exact=True)  # "Label: down" is no answer under exact
    assert exact is not None and exact["no_label"] == 2 and exact["f1_by_label"]["down"] == 0.0
    assert exact["balanced_accuracy"] == 0.4
    # one answer to everything: one over the number of labels, whatever the mix (accuracy 5/8)
    assert label_report(["up"] * 8, gold, ["up", "down"])["balanced_accuracy"] == 0.5  # type: ignore[index]
    assert label_report(["x"], ["up"], ["up"]) is None  # one label: nothing to average


def test_eval_and_optimize_report_macro_f1_for_a_label_metric(tmp_path: Path, fakes: Any) -> None:
    from conftest import label_model, label_rows, write_jsonl

    from reflexopt import optimize
    from reflexopt.config import eval_config
    from reflexopt.eval_run import eval_prompt

    data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
    prompt = tmp_path / "p.md"
    prompt.write_text("Label it: positive or negative.\n")
    fakes("fake/task", label_model)
    s = eval_prompt(eval_config(data, prompt, model="fake/task", metric="contains")).summary()
    assert s["labels"]["macro_f1"] == 1.0 and s["labels"]["f1_by_label"] == {"negative": 1.0, "positive": 1.0}
    assert s["labels"]["balanced_accuracy"] == 1.0
    f1 = eval_prompt(eval_config(data, prompt, model="fake/task", metric="f1")).summary()
    assert "labels" not in f1  # not a label metric
    # a label metric also tests the prompt against answering the most common label of these references
    const = s["constant"]
    assert const["n"] == 40 and const["tuned_n"] == 40 and const["tuned_delta"] == pytest.approx(1 - const["score"])
    assert const["tuned_p"] < 0.05 and "constant" not in f1
    from rich.console import Console

    from reflexopt.cli.render import eval_table

    console = Console(record=True, width=250)
    console.print(eval_table(s))
    out = " ".join(console.export_text().split())
    assert f"to every case scores {const['score']:.3f}: this prompt is above it by" in out
    assert "not significant" not in out
    from reflexopt.report import eval_report

    html = eval_report(eval_prompt(eval_config(data, prompt, model="fake/task", metric="contains")), title="eval")
    assert f"to every case scores {const['score']:.3f} — this prompt is above it by" in html  # the page says it too
    fakes("fake/reasoner", lambda m: "no")
    r = optimize(str(data), str(prompt), model="fake/task", metric="contains", max_trials=2,
                 reasoning_model="fake/reasoner")
    assert r.test_labels is not None and r.test_labels["baseline"]["macro_f1"] == 1.0


def test_a_tuned_prompt_that_answers_one_label_is_flagged_in_the_figures_and_the_summary(tmp_path: Path,
                                                                                           fakes: Any) -> None:
    """A run can ship a prompt that answers the same label whatever the case (its accuracy is that label's share
    of the references). The label figures say so on eval and on the verdict's test split, and the summary warns."""
    from conftest import label_rows, names_labels, write_jsonl
    from rich.console import Console

    from reflexopt import optimize
    from reflexopt.cli.render import optimize_summary
    from reflexopt.config import eval_config
    from reflexopt.eval_run import eval_prompt
    from reflexopt.metrics import label_report

    flat = label_report(["positive"] * 18 + ["negative"] * 2, ["positive", "negative"] * 10, ["positive", "negative"])
    assert flat is not None and flat["collapsed"] == {"label": "positive", "answers": 18, "of": 20}
    varied = label_report(["positive", "negative"] * 10, ["positive", "negative"] * 10, ["positive", "negative"])
    assert varied is not None and "collapsed" not in varied

    data = write_jsonl(tmp_path / "d.jsonl", label_rows(60))
    prompt = tmp_path / "p.md"
    prompt.write_text("Look at it.\n")
    # once the prompt names the labels, the model answers "positive" whatever the item
    fakes("fake/task", lambda m: "positive" if names_labels(" ".join(x["content"] for x in m)) else "?")
    fakes("fake/reasoner", lambda m: "no")
    s = eval_prompt(eval_config(data, prompt, model="fake/task", metric="contains")).summary()
    assert "collapsed" not in (s.get("labels") or {})  # no label named at all: not a constant label
    r = optimize(str(data), str(prompt), model="fake/task", metric="contains", max_trials=3,
                 reasoning_model="fake/reasoner")
    assert r.best_candidate != "baseline" and r.test_labels is not None
    assert r.test_labels["best"]["collapsed"]["label"] == "positive"
    console = Console(record=True, width=200)
    console.print(optimize_summary(r.to_json()))
    out = console.export_text()
    assert "warning" in out and "answers 'positive' to" in out and "constant answer" in out
    # and the closing line, which a user reads last, does not call it a tuned prompt's gain without saying so
    from reflexopt.cli.render import print_optimize

    console = Console(record=True, width=300)
    print_optimize(console, r)
    last = console.export_text().strip().splitlines()[-1]
    assert last.startswith("best prompt:"), last
    assert "but it answers 'positive' 21 of 21 times (collapsed) on test" in last, last


def test_the_verdict_shows_what_answering_the_most_common_label_scores(tmp_path: Path, fakes: Any) -> None:
    """On an imbalanced label set, a model that cannot tell the cases apart can score below a prompt that answers
    the majority label to every case. The verdict scores that constant answer on test (the run's own scorer, no
    model call), and the summary and the report say when the tuned prompt is not above it."""
    from conftest import names_labels, write_jsonl
    from rich.console import Console

    from reflexopt import optimize
    from reflexopt.cli.render import optimize_summary
    from reflexopt.report import write_report

    rows = [{"input": f"{'good' if i % 3 else 'bad'} item {i}", "ideal": "positive" if i % 3 else "negative"}
            for i in range(90)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Look at it.\n")
    # once the prompt names the labels, the model answers the minority label whatever the item
    fakes("fake/task", lambda m: "negative" if names_labels(" ".join(x["content"] for x in m)) else "?")
    fakes("fake/reasoner", lambda m: "no")
    r = optimize(str(data), str(prompt), model="fake/task", metric="contains", max_trials=3,
                 reasoning_model="fake/reasoner")
    assert r.best_candidate != "baseline" and r.test_labels is not None
    const = r.test_labels["constant"]
    assert const["label"] == "positive" and const["n"] > 0
    assert const["score"] == pytest.approx(1 - r.best_test, abs=1e-3)  # "negative" everywhere gets the rest
    assert const["score"] > 0.6 > r.best_test
    console = Console(record=True, width=250)
    console.print(optimize_summary(r.to_json()))
    out = " ".join(console.export_text().split())
    assert "answering 'positive' to every case scores" in out and "is not above it" in out
    assert "--balanced weighs every label alike" in out  # two in three are positive: the way out is named
    even = optimize(str(data), str(prompt), model="fake/task", metric="contains", max_trials=3,
                    reasoning_model="fake/reasoner", balanced=True)
    assert even.test_labels is not None and even.test_labels["constant"]["score"] == 0.5
    console = Console(record=True, width=250)
    console.print(optimize_summary(even.to_json()))
    assert "--balanced weighs" not in " ".join(console.export_text().split())  # balanced already
    html = write_report(Path(r.run_dir)).read_text(encoding="utf-8")
    assert "answering &#x27;positive&#x27; to every case scores" in html and "is not above it" in html


def test_the_tuned_prompt_is_tested_against_the_constant_answer_and_a_small_lead_is_called_not_significant() -> None:
    """A tuned prompt a little above the constant answer on test may be so by chance: the verdict compares them
    case by case (paired), and the summary says when the lead is not significant, and not when it is."""
    import asyncio

    from rich.console import Console

    from reflexopt.cli.render import constant_line
    from reflexopt.config import ScorerSpec
    from reflexopt.data import Case
    from reflexopt.evaluate import CaseResult, constant_against
    from reflexopt.scoring import make_scorer

    train = [Case(id=f"t{i}", input="x", ideal="positive" if i % 3 else "negative") for i in range(30)]
    test = [Case(id=f"c{i}", input="x", ideal="positive" if i % 3 else "negative") for i in range(60)]
    scorer, _ = make_scorer(ScorerSpec(metric="contains"), [*train, *test])

    def run(right_negatives: int) -> dict[str, Any]:
        # answers "positive" everywhere except on the first `right_negatives` negative cases
        negs = [c.id for c in test if c.ideal == "negative"][:right_negatives]
        best = [CaseResult(case_id=c.id, input="x", output="negative" if c.id in negs else "positive", ideal=c.ideal,
                           score=1.0 if c.id in negs or c.ideal == "positive" else 0.0, passed=None) for c in test]
        const = asyncio.run(constant_against(scorer, train, test, best))
        assert const is not None
        return const

    def shown(const: dict[str, Any]) -> str:
        console = Console(record=True, width=300)
        console.print(constant_line(const, below=False, skewed=False))
        return " ".join(console.export_text().split())

    small = run(2)  # 2 of 60 cases better than "positive" everywhere
    assert small["label"] == "positive" and small["tuned_n"] == 60
    assert small["tuned_delta"] == pytest.approx(2 / 60, abs=1e-4) and small["tuned_p"] >= 0.05
    assert "above it by +0.033 on the same 60 cases" in shown(small) and "not significant" in shown(small)
    large = run(15)
    assert large["tuned_p"] < 0.05 and "above it by +0.250" in shown(large) and "not significant" not in shown(large)
    assert "above it" not in shown(run(0))  # level with it: nothing to test
    from reflexopt.report import _labels_kpi

    figures = {"macro_f1": 0.5, "f1_by_label": {"positive": 0.8, "negative": 0.2}}
    html = _labels_kpi({"baseline": figures, "best": figures, "constant": small}, 0.7)
    assert "above it by +0.033 on the same 60 cases (p = " in html and "not significant" in html
