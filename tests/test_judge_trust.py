"""A judge you can trust: self-agreement, agreement with people, structured verdicts, contradictions, the default
reasoner and duplicate trials shown as such."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, Scripted, label_rows, write_jsonl
from typer.testing import CliRunner

from reflexopt.agreement import human_agreement, self_agreement
from reflexopt.cli import app
from reflexopt.config import Budget, DataSpec, ModelSpec, OptimizeConfig, ScorerSpec, eval_config
from reflexopt.data import Case, load_dataset
from reflexopt.eval_run import eval_prompt
from reflexopt.judge import JudgeScorer, Rubric, contradiction, load_rubric
from reflexopt.models import ResponseCache, get_client
from reflexopt.optimizer import optimize
from reflexopt.report import trajectory_svg

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "judge-check" / "graded.jsonl"
RUBRIC = Rubric("r", "Grade it.", 1, 5, 4)
runner = CliRunner()


def verdict(score: float, reasoning: str = "ok", category: str = "none") -> str:
    return json.dumps({"reasoning": reasoning, "score": score, "failure_category": category})


# ------------------------------------------------------------------ self-agreement
def test_self_agreement_measures_a_known_spread_on_a_judge_deterministic_at_temperature_0(
        fakes: Any, tmp_path: Path) -> None:
    """At temperature 0 the judge always gives the same verdict (a deterministic server): asking the identical
    request again would read "no noise". Above 0 its raw score spreads with SD 0.6 (0.15 on the 0..1 scale)."""
    rng = random.Random(7)

    def judge(messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        if not params.get("temperature"):
            return verdict(3)
        return verdict(min(5.0, max(1.0, 3 + rng.gauss(0, 0.6))))

    fakes("fake/spread-judge", judge)
    cache = ResponseCache(tmp_path / "cache.db")
    scorer = JudgeScorer(get_client(ModelSpec(id="fake/spread-judge"), role="judge", cache=cache), RUBRIC)
    items = [(Case(id=str(i), input=f"question {i}"), f"answer {i}") for i in range(300)]
    async def verdicts() -> list[Any]:
        return list(await asyncio.gather(*(scorer.score(c, o) for c, o in items)))

    first = asyncio.run(verdicts())
    assert {s.value for s in first} == {0.5}
    sa = asyncio.run(self_agreement(scorer, items))
    assert sa.n == 300
    assert sa.sd == pytest.approx(0.15, rel=0.2)
    # the redraws were their own requests (the cache told them apart from the verdicts), and one was paraphrased
    assert scorer.client.meter.calls == 900
    assert scorer.stats["verdicts"] == 300  # redraws are not the run's verdicts
    again = asyncio.run(self_agreement(scorer, items))  # asked again: the same redraws, from the cache
    assert again.sd == sa.sd and scorer.client.meter.calls == 900


def test_self_agreement_of_a_judge_that_never_wavers_is_zero(fakes: Any) -> None:
    fakes("fake/steady-judge", lambda m: verdict(4))
    scorer = JudgeScorer(get_client(ModelSpec(id="fake/steady-judge"), role="judge", cache=False), RUBRIC)
    sa = asyncio.run(self_agreement(scorer, [(Case(id=str(i), input="q"), "a") for i in range(5)]))
    assert (sa.n, sa.sd, sa.pass_agree, sa.exact_agree) == (5, 0.0, 1.0, 1.0)


def test_the_paraphrased_judge_prompt_carries_the_same_material(fakes: Any) -> None:
    fakes("fake/unused", lambda m: verdict(3))
    scorer = JudgeScorer(get_client(ModelSpec(id="fake/unused"), role="judge", cache=False), RUBRIC)
    case = Case(id="1", input="the input text", ideal="the reference")
    a = scorer.messages(case, "the response")[1]["content"]
    b = scorer.messages(case, "the response", variant="judge_alt")[1]["content"]
    assert a != b
    for part in ("the input text", "the reference", "the response", "Grade it."):
        assert part in a and part in b
    assert b.index("the response") < b.index("the input text")  # reordered: the response first


# ------------------------------------------------------------------ agreement with people
HAND_JUDGE = [5, 3, 4, 4, 4, 1, 5, 4, 5, 2, 4, 3]  # the fake judge's scores for g01..g12


def test_eval_reports_agreement_with_people_as_computed_by_hand(fakes: Any) -> None:
    """examples/judge-check: human scores 5 4 5 2 4 1 5 3 5 1 5 3. By hand:
    - Spearman: midranks of the people 10 6.5 10 3 6.5 1.5 10 4.5 10 1.5 10 4.5, of the judge 11 3.5 7 7 7 1 11 7
      11 2 7 3.5; their Pearson correlation is 0.79390.
    - pass (4 or more): the people pass 7 of 12, the judge 8; they agree on 9. Chance agreement
      7/12 * 8/12 + 5/12 * 4/12 = 76/144, so kappa = (108/144 - 76/144) / (68/144) = 8/17 = 0.47059."""
    by_response = {json.loads(x)["response"]: s for x, s in zip(EXAMPLE.read_text().splitlines(), HAND_JUDGE)}

    def judge(messages: list[dict[str, str]]) -> str:
        response = re.search(r"<response>\n(.*?)\n</response>", messages[-1]["content"], re.S)
        assert response is not None
        return verdict(by_response[response.group(1)], "graded")

    fakes("fake/hand-judge", judge)
    cfg = eval_config(EXAMPLE, None, judge="fake/hand-judge", rubric="summary", responses="response", human="human")
    summary = eval_prompt(cfg).summary()
    h = summary["human_agreement"]
    assert h["n"] == 12 and h["kind"] == "scores"
    assert h["spearman"] == pytest.approx(0.79390, abs=1e-4)
    assert h["kappa"] == pytest.approx(8 / 17, abs=1e-4)
    assert (h["judge_pass_rate"], h["human_pass_rate"]) == (pytest.approx(8 / 12, abs=1e-4),
                                                            pytest.approx(7 / 12, abs=1e-4))
    # the case furthest apart first: g04 (judge 4, people 2)
    assert h["disagreements"][0]["case_id"] == "g04" and h["disagreements"][0]["human"] == 2.0
    assert summary["model_calls"] == 12 + 2 * 10  # no task model: 12 verdicts, 10 cases re-judged twice


def test_pass_fail_labels_and_a_human_column_kept_out_of_the_input(tmp_path: Path, fakes: Any) -> None:
    rows = [{"question": f"q{i}", "response": f"r{i}", "ok": ["pass", "fail"][i % 2]} for i in range(6)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cases = load_dataset(data, aside=["response", "ok"])
    assert cases[0].input == {"question": "q0"} and cases[0].extra == {"response": "r0", "ok": "pass"}
    # the judge agrees on all but the last case
    scored = {c.id: (5.0 if i % 2 == 0 else 1.0, "") for i, c in enumerate(cases)}
    scored[cases[5].id] = (5.0, "")
    h = human_agreement("ok", cases, scored, RUBRIC)
    assert h.kind == "pass/fail" and h.n == 6
    # people pass 3 of 6, the judge 4; agree on 5: kappa = (5/6 - 1/2) / (1/2) = 2/3
    assert h.kappa == pytest.approx(2 / 3)
    assert [d["case_id"] for d in h.disagreements] == [cases[5].id]


def test_a_bad_human_label_names_the_file_and_line(tmp_path: Path, fakes: Any) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "response": "b", "human": "maybe"}] * 1)
    fakes("fake/j", lambda m: verdict(4))
    result = runner.invoke(app, ["eval", str(data), "--responses", "response", "--judge", "fake/j",
                                 "--human", "human"], terminal_width=300)
    assert result.exit_code == 2
    assert "d.jsonl:1: human label 'human' is 'maybe'" in result.output and "pass/fail" in result.output


def test_eval_cli_prints_rho_kappa_and_the_cases_most_apart(fakes: Any) -> None:
    fakes("fake/cli-judge", lambda m: verdict(4, "fine"))
    result = runner.invoke(app, ["eval", str(EXAMPLE), "--responses", "response", "--judge", "fake/cli-judge",
                                 "--judge-criteria", "summary", "--human", "human"])
    assert result.exit_code == 0, result.output
    assert "agreement with people" in result.output and "kappa" in result.output
    assert "where the judge and people disagree most" in result.output and "g06" in result.output


# ------------------------------------------------------------------ structured verdicts
def _judge_request(req: dict[str, Any]) -> bool:
    return "Rubric" in json.dumps(req["messages"])


def test_verdicts_are_asked_with_a_schema_on_an_openai_compatible_server(openai_server: FakeOpenAI) -> None:
    openai_server.responder = lambda req: verdict(4)
    spec = ModelSpec(id="openai/judge", api_base=openai_server.url)
    scorer = JudgeScorer(get_client(spec, role="judge", cache=False), RUBRIC)
    s = asyncio.run(scorer.score(Case(id="1", input="q"), "a"))
    assert s.value == 0.75
    body = openai_server.requests[-1][1]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["reasoning", "score", "failure_category"]
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert scorer.report()["structured"] == "json_schema"


LLAMA_CPP_REFUSAL = Scripted(status=500, body={"error": {"message": "1 validation error: {'type': 'literal_error', "
                                                        "'loc': ('body', 'response_format', 'type'), 'msg': "
                                                        "\"Input should be 'text' or 'json_object'\"}"}})


def test_a_server_that_refuses_a_form_is_asked_the_next_then_plain_text(openai_server: FakeOpenAI) -> None:
    """llama-cpp-python's server answers OpenAI's json_schema form with a 500 naming `response_format` and reads
    json_object with a schema; a server that takes neither is asked for text, which is parsed. With many cases in
    flight, the refused form is sent once (with its retries), not once per case."""
    refuse: set[str] = {"json_schema"}
    openai_server.refuse = lambda req: (LLAMA_CPP_REFUSAL if (req.get("response_format") or {}).get("type") in refuse
                                        else None)
    openai_server.responder = lambda req: "Here you go: " + verdict(2, "weak", "missing detail")
    spec = ModelSpec(id="openai/judge", api_base=openai_server.url, max_retries=1)
    scorer = JudgeScorer(get_client(spec, role="judge", cache=False), RUBRIC)

    async def six() -> list[Any]:
        return list(await asyncio.gather(*(scorer.score(Case(id=str(i), input="q"), f"a{i}") for i in range(6))))

    assert [s.value for s in asyncio.run(six())] == [0.25] * 6
    formats = [(r.get("response_format") or {}).get("type") for _, r in openai_server.requests]
    assert formats == ["json_schema", "json_schema"] + ["json_object"] * 6  # one refused form: 1 try + 1 retry
    assert openai_server.requests[-1][1]["response_format"]["schema"]["properties"]["score"]["maximum"] == 5
    assert scorer.structured == "json_object+schema"

    refuse.add("json_object")
    openai_server.requests.clear()
    scorer = JudgeScorer(get_client(spec.model_copy(update={"max_retries": 0}), role="judge", cache=False), RUBRIC)
    assert [s.value for s in asyncio.run(six())] == [0.25] * 6
    formats = [(r.get("response_format") or {}).get("type") for _, r in openai_server.requests]
    assert formats == ["json_schema", "json_object"] + [None] * 6 and scorer.structured == "text"


def test_parse_failures_are_counted_and_shown(fakes: Any, tmp_path: Path) -> None:
    replies = iter(["no json here"] * 3 + [verdict(5)] * 50)
    fakes("fake/mumbler", lambda m: next(replies))
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": f"q{i}", "response": f"a{i}"} for i in range(4)])
    cfg = eval_config(data, None, judge="fake/mumbler", responses="response", self_agreement=0, concurrency=1)
    s = eval_prompt(cfg, on_note=lambda n: None).summary()
    assert s["judge"]["parse_errors"] == 1 and s["judge"]["verdicts"] == 3 and s["errors"] == 1


# ------------------------------------------------------------------ contradictions
SUMMARY = load_rubric("summary")


@pytest.mark.parametrize(("score", "reasoning", "category", "flagged"), [
    (3, "The response does not summarize the input; it repeats the chat.", "off-topic", True),  # level 1 said
    (1, "The response does not summarize the input.", "off-topic", False),  # said and scored the same
    (4, "Covers the key points, with a small omission.", "missing detail", False),
    (2, "A fine summary.", "none", True),  # no failure named, yet below the pass mark
    (5, "It covers every key point of the input and is concise.", "none", False),
    (1, "It covers every key point of the input.", "refusal", True),  # level 5's words, the lowest score
])
def test_contradiction_flag(score: int, reasoning: str, category: str, flagged: bool) -> None:
    assert (contradiction(SUMMARY, score, reasoning, category) is not None) == flagged


def test_negation_keeps_a_level_from_matching() -> None:
    brief = Rubric("b", "5 — Exactly 3 sentences, all facts right.\n1 — Missing critical content.", 1, 5, 4)
    assert contradiction(brief, 2, "The response has exactly 3 sentences.", "x") is not None
    assert contradiction(brief, 2, "The response does not have exactly 3 sentences.", "x") is None


CORRECTNESS = load_rubric("correctness")


@pytest.mark.parametrize(("score", "reasoning", "flagged"), [
    (4, "The AI response does not match the reference answer.", True),  # a denial, passed
    (4, "The AI response 'avion' does not match the reference answer 'aéronef'.", True),
    (4, "Correct on the main point, but it does not match the reference exactly.", False),  # it concedes
    (4, "The response isn't accurate.", True),
    (5, "The response does not contain any errors and matches the reference.", False),  # "not" is not the claim's
    (2, "The AI response does not match the reference answer.", False),  # said and scored alike
    (5, "It is the same as the reference.", False),
])
def test_a_pass_whose_reasoning_denies_a_match_is_a_contradiction(score: int, reasoning: str, flagged: bool) -> None:
    assert (contradiction(CORRECTNESS, score, reasoning, "") is not None) == flagged


def test_a_verdict_whose_reasoning_contradicts_its_score_gets_a_second_opinion(fakes: Any, tmp_path: Path) -> None:
    """Qwen2.5-Coder-1.5B passed wrong answers with a 4 of 5 whose reasoning said "does not match the reference".
    Such a verdict gets a second opinion, on the request paraphrased (judge_alt), and the mean of the two scores
    stands; a verdict that does not contradict itself, or only names no failure, is asked once."""
    asked: list[str] = []

    def judge(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        alt = text.startswith("# AI response under review")  # the paraphrased request
        asked.append("alt" if alt else "judge")
        answer = text.split("<response>")[1].split("</response>")[0]
        if "Paris" in answer:
            return verdict(5, "Says the same as the reference.")
        if "Nice" in answer:
            return verdict(2, "ok", "none")  # names no failure and fails: flagged, not asked again
        if alt:
            return verdict(2, "The response names the wrong city.", "wrong answer")
        return verdict(4, "The AI response does not match the reference answer.")

    fakes("fake/slippery", judge)
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": "Capital of France?", "ideal": "Paris, the capital",
                                               "response": r} for r in ("Lyon", "Paris, it is", "Nice")])
    cfg = eval_config(data, None, judge="fake/slippery", rubric="correctness", responses="response",
                      self_agreement=0)
    report = eval_prompt(cfg)
    lyon, paris, nice = report.results
    assert (lyon.score, lyon.passed) == (0.5, False)  # (4 + 2) / 2 = 3 of 5, below the pass mark 4
    assert lyon.flag is not None and "a second opinion (the request paraphrased) scored 2, so 3" in lyon.flag
    assert (paris.score, paris.flag) == (1.0, None) and nice.flag is not None and "second" not in nice.flag
    assert sorted(asked) == ["alt", "judge", "judge", "judge"]  # one second opinion
    j = report.summary()["judge"]
    assert (j["contradictions"], j["second_opinions"], j["overturned"]) == (2, 1, 1)
    from reflexopt.cli.render import judge_text

    assert "2 of 3 verdicts contradict their score (1 given a second opinion, 1 of them turned" in judge_text(j)


def test_contradictions_are_counted_and_listed_in_eval(fakes: Any, tmp_path: Path) -> None:
    fakes("fake/muddled", lambda m: verdict(3, "The response does not summarize the input.", "off-topic"))
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": f"chat {i}", "response": f"r{i}"} for i in range(5)])
    cfg = eval_config(data, None, judge="fake/muddled", rubric="summary", responses="response",
                      self_agreement=0)
    report = eval_prompt(cfg)
    j = report.summary()["judge"]
    assert j["contradictions"] == 5 == j["verdicts"] and len(j["flagged"]) == 5
    assert "level 1" in j["flagged"][0]["why"] and all(r.flag for r in report.results)


def test_a_judge_that_is_the_task_model_is_named_loudly(fakes: Any, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(6))
    (tmp_path / "p.md").write_text("Label it: {input}\n")
    fakes("fake/selfie", lambda m: verdict(5) if "Rubric" in m[-1]["content"] else "positive")
    notes: list[str] = []
    cfg = eval_config(data, tmp_path / "p.md", model="fake/selfie", judge="fake/selfie", self_agreement=0)
    s = eval_prompt(cfg, on_note=notes.append).summary()
    assert any(n.startswith("WARNING: the judge is the task model") for n in notes)
    assert s["judge"]["grades_own_answers"] is True


# ------------------------------------------------------------------ the default reasoner, duplicates
def test_the_judge_reasons_when_no_reasoning_model_is_named(fakes: Any, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Label it.\n")
    fakes("fake/small", lambda m: "positive")
    asked: list[str] = []

    def judge(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        if "<response>" in text:  # a verdict (or a redraw of one)
            return verdict(4 if "positive" in text.split("<response>")[-1] else 2, "ok", "none")
        asked.append(text)
        return "<prompt>Label the review as positive or negative.</prompt>"

    fakes("fake/big-judge", judge)
    cfg = OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                         model=ModelSpec(id="fake/small"), scorer=ScorerSpec(judge=ModelSpec(id="fake/big-judge")),
                         budget=Budget(max_trials=10, patience=10))  # the LLM rewrites come after 4 no-LLM trials
    assert cfg.reasoner()[0].id == "fake/big-judge"
    assert cfg.model_copy(update={"scorer": ScorerSpec()}).reasoner()[0].id == "fake/small"
    events: list[tuple[str, dict[str, Any]]] = []
    r = optimize(cfg, on_event=lambda k, d: events.append((k, d)))
    start = next(d for k, d in events if k == "start")
    assert start["models"]["reasoning"] == "fake/big-judge (the judge)"
    assert r.reasoner == "fake/big-judge (the judge)"
    assert r.usage["by_role"]["reasoning"]["model_calls"] > 0 and asked  # the judge's model wrote the rewrites
    assert r.judge is not None and r.judge["verdicts"] > 0 and r.judge["self_agreement"]["n"] >= 2


def test_duplicate_trials_are_marked_and_counted(fakes: Any, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Label it.\n")
    fakes("fake/t", lambda m: "positive")
    fakes("fake/same", lambda m: "<prompt>Say positive or negative.</prompt>")  # every rewrite is the same
    cfg = OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                         model=ModelSpec(id="fake/t"), reasoning=ModelSpec(id="fake/same"),
                         budget=Budget(max_trials=12, patience=12))
    events: list[tuple[str, dict[str, Any]]] = []
    r = optimize(cfg, on_event=lambda k, d: events.append((k, d)))
    dups = [d for k, d in events if k == "trial" and d["state"] == "duplicate"]
    assert dups and r.duplicate_trials == len(dups) and all(d["duplicate_of"] for d in dups)
    assert r.distinct_candidates is not None and r.distinct_candidates <= r.trials - len(dups)
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    svg = trajectory_svg(cands, list(r.accepted_path))
    assert svg.count("class=dup") == len(dups)
    assert f"duplicate of {dups[0]['duplicate_of']}" in svg


def test_the_judge_record_reaches_trackers_and_the_summary_table() -> None:
    from rich.console import Console

    from reflexopt.cli.render import judge_text
    from reflexopt.trackers import judge_metrics

    record = {"self_agreement": {"n": 10, "sd": 0.12, "pass_agree": 0.9, "exact_agree": 0.6}, "verdicts": 40,
              "known": {"n": 5, "references_passed": 4, "foils_failed": 2, "warning": "w"},
              "contradictions": 3, "parse_errors": 1, "structured": "json_object+schema", "flagged": [],
              "grades_own_answers": True}
    m = judge_metrics(record)
    assert m["judge_self_agreement_sd"] == 0.12 and m["judge_contradictions"] == 3 and m["judge_parse_errors"] == 1
    assert m["judge_known_right"] == 0.6
    assert judge_metrics(None) == {}
    console = Console(width=200, record=True)
    console.print(judge_text(record))
    line = console.export_text()
    assert "self-agreement SD 0.120 (10 cases re-judged, pass/fail agrees 90%)" in line
    assert "3 of 40 verdicts contradict their score" in line and "1 unparseable" in line
    assert "known answers: passed 4 of 5 references, failed 2 of 5 foils" in line
    assert "grades its own answers" in line


# ------------------------------------------------------------------ the verdict's second chance
def test_the_verdict_re_judges_what_the_judge_could_not_score(fakes: Any, tmp_path: Path) -> None:
    """A case whose verdict did not parse (after its retries) was dropped from the verdict. It is now judged
    once more, as a new request, and counted: re-judged, then scored or still not."""
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
    (tmp_path / "p.md").write_text("Label it positive or negative.\n")
    # not the reference's words, which pass without asking the judge
    fakes("fake/t", lambda m: "it is positive" if "good" in m[-1]["content"] else "it is negative")
    seen: dict[str, int] = {}

    def flaky(messages: list[dict[str, str]]) -> str:
        text = messages[0]["content"] + messages[1]["content"]
        if "item 3" in text or "item 13" in text:  # the first three asks of each request do not parse
            seen[text] = seen.get(text, 0) + 1
            if seen[text] <= 3:
                return "I think it is fine"
        return verdict(5)

    fakes("fake/flaky", flaky)
    cfg = OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                         model=ModelSpec(id="fake/t"), reasoning=ModelSpec(id="fake/t"),
                         scorer=ScorerSpec(judge=ModelSpec(id="fake/flaky")), budget=Budget(max_trials=1))
    r = optimize(cfg)
    cov = r.test_cases
    assert cov is not None
    flaky_in_test = cov["rejudged"]["verdicts"]
    assert flaky_in_test > 0 and cov["rejudged"]["then_scored"] == flaky_in_test
    assert cov["not_scored"] == {"baseline": 0, "best": 0} and cov["paired"] == cov["n"]


def test_the_dry_run_states_the_reserve_for_the_verdict(fakes: Any, tmp_path: Path) -> None:
    from reflexopt.optimizer import Optimizer

    data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
    (tmp_path / "p.md").write_text("Label it.\n")
    fakes("fake/t", lambda m: "positive")
    fakes("fake/j", lambda m: verdict(4))
    cfg = OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                         model=ModelSpec(id="fake/t"), scorer=ScorerSpec(judge=ModelSpec(id="fake/j")))
    est = Optimizer(cfg).estimate()
    n_test = est["n_test"]
    assert est["calls_final_test"] == 2 * n_test * 2  # task + verdict, both prompts
    assert est["calls_verdict_reserve"] == -(-n_test // 2)  # a quarter of the verdicts again
    assert est["calls_judge_checks"] == 35  # 20 redraws, 5 references, 5 foils, 5 inputs given back
    result = runner.invoke(app, ["optimize", str(data), str(tmp_path / "p.md"), "-m", "fake/t", "--judge", "fake/j",
                                 "--dry-run"], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert f"+ {est['calls_verdict_reserve']} kept for the judge's retries and re-judging" in result.output


# ------------------------------------------------------------------ answers that repeat the input
def test_echoes_count_only_cases_whose_reference_changes_the_input() -> None:
    from reflexopt.agreement import echo_figures, echo_text
    from reflexopt.evaluate import CaseResult

    inputs = ["The dog saw the cat.", "The boy ate.", "Stay here.", "The sun rose."]
    ideals = ["The cat was seen by the dog.", "The boy ate.", "Do not stay here.", None]  # 2nd: no change asked
    outputs = ["the dog saw the cat", "The boy ate.", "Do not stay here.", "The sun rose."]

    def results(outs: list[str], passed: bool) -> list[CaseResult]:
        return [CaseResult(str(i), x, o, ideal, 1.0 if passed else 0.0, passed)
                for i, (x, o, ideal) in enumerate(zip(inputs, outs, ideals, strict=True))]

    e = echo_figures(results(outputs, True))
    assert e == {"echoes": 1, "of": 2, "passed": 1}  # case 1 only (case 2's reference is its input, 4 has none)
    assert echo_text(e) == "repeats the input unchanged on 1 of 2 cases whose reference changes it (all 1 passed " \
                           "by the scorer)"
    assert echo_figures(results(outputs, False)) == {"echoes": 1, "of": 2, "passed": 0}
    assert echo_figures(results(["x", "y", "", "z"], True)) is None  # no answer repeats its input
    assert echo_figures([CaseResult("0", "a", "", "b", 0.0, False)]) is None  # an empty answer copies nothing


def _passive_rows(n: int) -> list[dict[str, str]]:
    return [{"input": f"The doctor {i} thanked the tourist.", "ideal": f"The tourist was thanked by the doctor {i}."}
            for i in range(n)]


def _meaning_judge(messages: list[dict[str, str]]) -> str:
    """A judge that grades the meaning only: an active sentence says what its passive reference says."""
    text = messages[-1]["content"]
    if "<response>" not in text:
        return "<prompt>Rewrite the sentence.</prompt>"
    answer = text.split("<response>")[-1].split("</response>")[0]
    return verdict(5 if "thanked" in answer else 1, "same meaning" if "thanked" in answer else "unrelated")


def _copies_judged(tmp_path: Path) -> str:
    """The shipped correctness rubric with `fail_copies: false`: the judge grades copies of the input too."""
    path = tmp_path / "correctness_copies_judged.md"
    path.write_text("---\nscale: [1, 5]\npass: 4\nfail_copies: false\n---\n" + load_rubric("correctness").text)
    return str(path)


def test_eval_says_when_answers_repeat_the_input_and_the_judge_passes_them(fakes: Any, tmp_path: Path) -> None:
    """With a rubric that lets the judge grade copies (`fail_copies: false`), a meaning-only judge passes them:
    the summary says so."""
    data = write_jsonl(tmp_path / "d.jsonl", _passive_rows(12))
    (tmp_path / "p.md").write_text("Here is a sentence.\n")
    fakes("fake/echo", lambda m: m[-1]["content"].split("\n")[-1])  # repeats the sentence it was given
    fakes("fake/meaning-judge", _meaning_judge)
    rubric = _copies_judged(tmp_path)
    result = runner.invoke(app, ["eval", str(data), str(tmp_path / "p.md"), "-m", "fake/echo", "--judge",
                                 "fake/meaning-judge", "--judge-criteria", rubric, "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["score"] == 1.0 and s["echo"] == {"echoes": 12, "of": 12, "passed": 12}
    table = runner.invoke(app, ["eval", str(data), str(tmp_path / "p.md"), "-m", "fake/echo", "--judge",
                                "fake/meaning-judge", "--judge-criteria", rubric])
    assert "copies of the input" in table.output and "on 12 of 12 cases" in table.output
    assert "scorer passes a copy" in table.output


def test_a_copy_of_the_input_fails_without_asking_the_judge(fakes: Any, tmp_path: Path) -> None:
    """By default an answer that repeats its input where the reference changes it fails unjudged (the rubric's
    lowest score), and is counted in the judge's record; the meaning-only judge that would pass it is asked only
    about the known answers. Copies are left out of the self-agreement redraws (they have no verdict to redraw)."""
    data = write_jsonl(tmp_path / "d.jsonl", _passive_rows(12))
    (tmp_path / "p.md").write_text("Here is a sentence.\n")
    fakes("fake/echo", lambda m: m[-1]["content"].split("\n")[-1])
    asked: list[str] = []
    fakes("fake/meaning-judge", lambda m: asked.append(m[-1]["content"]) or _meaning_judge(m))
    result = runner.invoke(app, ["eval", str(data), str(tmp_path / "p.md"), "-m", "fake/echo", "--judge",
                                 "fake/meaning-judge", "--judge-criteria", "correctness", "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["score"] == 0.0 and s["pass_rate"] == 0.0
    # 5 references, 5 foils and 5 inputs given back in a sentence, none a bare copy
    assert len(asked) == 15 and not any("<response>\nThe doctor" in a for a in asked)
    assert s["echo"] == {"echoes": 12, "of": 12, "passed": 0}
    assert s["judge"]["copies"] == 12 and s["judge"]["verdicts"] == 0
    assert (s["judge"]["self_agreement"] or {}).get("n", 0) == 0
    table = runner.invoke(app, ["eval", str(data), str(tmp_path / "p.md"), "-m", "fake/echo", "--judge",
                                "fake/meaning-judge", "--judge-criteria", "correctness"])
    assert "12 copies of the input failed unjudged" in table.output
    assert "scorer passes a copy" not in table.output


def test_an_answer_that_gives_a_short_input_back_without_the_reference_fails_unjudged(fakes: Any,
                                                                                       tmp_path: Path) -> None:
    """`The word "legitimate" is a verb` for *illegitimate*: a short input given back, without the reference,
    where the reference changes the input, fails unjudged (Qwen passed such answers) and is counted; an answer
    that holds the reference, or that does not hold the input, goes to the judge, as do all with
    `fail_restatements: false` and inputs too long to give back in a line."""
    from reflexopt.metrics import gives_input_back

    assert gives_input_back("legitimate", "illegitimate", 'The word "legitimate" is a verb.')
    assert gives_input_back("cover", "couverture", 'The correct spelling of the word is "cover."')
    assert not gives_input_back("hot", "cold", "The opposite of hot is cold.")  # the reference is there
    assert not gives_input_back("aircraft", "aéronef", "avion")  # another right answer, without the input
    assert not gives_input_back("jury", "jury", 'The answer is "jury".')  # the reference keeps the input
    assert not gives_input_back("a b c d e f g h i j k l m", "x", "a b c d e f g h i j k l m, so x?")  # not short
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": w, "ideal": "un" + w} for w in
                                               ("kind", "able", "done", "fair", "even", "real")])
    (tmp_path / "p.md").write_text("Here is a word.\n")
    fakes("fake/talker", lambda m: f'The word "{m[-1]["content"].split(chr(10))[-1]}" is an adjective.')
    asked: list[str] = []
    fakes("fake/easy-judge", lambda m: asked.append(m[-1]["content"]) or verdict(5))  # passes anything
    args = ["eval", str(data), str(tmp_path / "p.md"), "-m", "fake/talker", "--judge", "fake/easy-judge",
            "--judge-criteria", "correctness"]
    s = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert s["score"] == 0.0 and s["judge"]["restatements"] == 6 and s["judge"]["verdicts"] == 0
    assert not any("is an adjective" in a.split("<response>")[-1] for a in asked)  # only the known answers asked
    assert "passed 5 of 5 answers that only give the input back" in s["judge"]["known"]["warning"]
    table = " ".join(runner.invoke(app, args, terminal_width=300).output.replace("│", " ").split())
    assert "6 answers giving the input back failed unjudged" in table
    rubric = tmp_path / "loose.md"
    rubric.write_text("---\nfail_restatements: false\n---\nJudge it against the reference.\n")
    loose = json.loads(runner.invoke(app, [*args[:-1], str(rubric), "--json"]).stdout)
    assert loose["score"] == 1.0 and loose["judge"]["restatements"] == 0


def test_the_copy_check_asks_the_judge_where_the_reference_keeps_the_input(fakes: Any) -> None:
    """Only a copy where the reference changes the input fails unjudged: a reference equal to its input (case,
    punctuation and articles aside), no reference, an answer that changes the input, or a rubric with
    `fail_copies: false` go to the judge."""
    fakes("fake/unused", lambda m: verdict(5))
    scorer = JudgeScorer(get_client(ModelSpec(id="fake/unused")), RUBRIC)
    changed = Case(id="1", input="The dog bit the man.", ideal="The man was bitten by the dog.")

    def fails(s: JudgeScorer, case: Case, output: str) -> bool:
        v = s.unjudged(case, output)
        return v is not None and v.passed is False

    assert fails(scorer, changed, "the dog bit the man") and fails(scorer, changed, "The dog bit a man!")
    assert not fails(scorer, changed, "The man was bitten by the dog.")
    assert not fails(scorer, changed, "")
    assert not fails(scorer, Case(id="2", input="The dog bit the man.", ideal="the dog bit a man"),
                     "The dog bit the man.")
    assert not fails(scorer, Case(id="3", input="The dog bit the man."), "The dog bit the man.")
    judged = JudgeScorer(get_client(ModelSpec(id="fake/unused")), Rubric("r", "Grade it.", 1, 5, 4,
                                                                          fail_copies=False))
    assert not fails(judged, changed, "The dog bit the man.")
    s = asyncio.run(scorer.score(changed, "The dog bit the man."))
    assert (s.value, s.passed, s.raw, s.category, s.calls) == (0.0, False, 1.0, "copy of the input", 0)


@pytest.mark.parametrize("key,value", [("fail_copies", "sometimes"), ("pass_matches", "1")])
def test_a_rubric_with_a_bad_rule_value_is_refused_naming_the_file(tmp_path: Path, key: str, value: str) -> None:
    from reflexopt.errors import RubricError

    bad = tmp_path / "r.md"
    bad.write_text(f"---\n{key}: {value}\n---\nGrade it from 1 to 5.\n")
    with pytest.raises(RubricError) as e:
        load_rubric(str(bad))
    assert "r.md" in str(e.value) and f"{key} must be true or false" in str(e.value)
    assert f"{key}: false" in str(e.value)


def _optimize_a_copier(fakes: Any, tmp_path: Path, rubric: str) -> Any:
    """optimize on 40 passive-voice rows: the starting prompt's answers are unrelated, and under any other prompt
    the model repeats the sentence it was given; the judge grades the meaning only."""
    data = write_jsonl(tmp_path / "d.jsonl", _passive_rows(40))
    (tmp_path / "p.md").write_text("Here is a sentence.\n")

    def task(messages: list[dict[str, str]]) -> str:
        if messages[0]["content"].strip() == "Here is a sentence.":  # the starting prompt, as the system message
            return "I like turtles."
        return messages[-1]["content"].split("\n")[-1]

    fakes("fake/echo-when-told", task)
    fakes("fake/meaning-judge", _meaning_judge)
    return optimize(OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                                   model=ModelSpec(id="fake/echo-when-told"),
                                   scorer=ScorerSpec(judge=ModelSpec(id="fake/meaning-judge"), rubric=rubric),
                                   budget=Budget(max_trials=4, patience=4)))


def test_optimize_warns_when_its_gain_is_answers_that_repeat_the_input(fakes: Any, tmp_path: Path) -> None:
    """The starting prompt's answers are unrelated; any rewrite makes the model repeat the sentence, which a
    meaning-only judge passes (given a rubric with `fail_copies: false`): a significant gain that does not do the
    task, and the summary says so."""
    from reflexopt.cli.render import optimize_summary
    from reflexopt.report import write_report

    r = _optimize_a_copier(fakes, tmp_path, _copies_judged(tmp_path))
    assert r.best_candidate != "baseline" and r.best_test == 1.0 and r.baseline_test == 0.0
    n = r.test_cases["n"] if r.test_cases else -1
    assert r.test_echo == {"baseline": None, "best": {"echoes": n, "of": n, "passed": n}}
    shown = " ".join(str(c) for row in optimize_summary(r.to_json()).columns for c in row._cells)
    assert "warning" in shown and "scorer passes a copy of the input" in shown
    html = write_report(Path(r.run_dir), tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"copies of the input (test)<b>{n} of {n}</b>" in html


def test_optimize_accepts_no_prompt_whose_gain_is_copies_of_the_input(fakes: Any, tmp_path: Path) -> None:
    """The same run with the shipped rubric as it is: copies fail unjudged, so no rewrite that makes the model
    repeat the sentence is accepted, and the report counts the copies the judge was not asked about."""
    from reflexopt.report import write_report

    r = _optimize_a_copier(fakes, tmp_path, "correctness")
    assert r.best_candidate == "baseline" and r.best_test == 0.0
    assert r.judge is not None and r.judge["copies"] > 0
    html = write_report(Path(r.run_dir), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "copies of the input failed without a verdict" in html


def test_optimize_warns_when_the_references_move_against_the_judge(fakes: Any, tmp_path: Path) -> None:
    """The starting prompt's answers are nearly the references; under any rewrite the model says something
    unrelated, which this judge prefers. The judge's gain is real to the search, so the rewrite is returned; the
    same test answers scored against the references (token F1, no calls) fall, and the summary and the report
    say that the judge and the references disagree."""
    from reflexopt.cli.render import optimize_summary
    from reflexopt.report import write_report

    data = write_jsonl(tmp_path / "d.jsonl", _negation_rows(40))
    (tmp_path / "p.md").write_text("Here is a sentence.\n")

    def task(messages: list[dict[str, str]]) -> str:
        if messages[0]["content"].strip() == "Here is a sentence.":
            return messages[-1]["content"].replace(" is ", " is not ").replace(".", " at all.")
        return "I like turtles."

    fakes("fake/near-then-off", task)
    fakes("fake/turtle-judge", lambda m: verdict(5) if "turtles" in m[-1]["content"].split("<response>")[-1]
          else verdict(1, "not about turtles", "off topic"))
    r = optimize(OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                                model=ModelSpec(id="fake/near-then-off"),
                                scorer=ScorerSpec(judge=ModelSpec(id="fake/turtle-judge"), rubric="correctness"),
                                budget=Budget(max_trials=3, patience=3)))
    assert r.best_candidate != "baseline" and (r.baseline_test, r.best_test) == (0.0, 1.0)
    ref = r.test_reference
    assert ref is not None and ref["metric"] == "f1" and ref["baseline"] > 0.8 and ref["best"] == 0.0
    assert ref["disagrees"] and ref["n"] == (r.test_cases or {}).get("n")
    shown = " ".join(str(c) for row in optimize_summary(r.to_json()).columns for c in row._cells)
    assert "the judge and the references disagree" in shown and "test by f1" in shown
    html = write_report(Path(r.run_dir), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "test by f1<b>0.000</b>" in html and "the judge and the references disagree" in html


def test_eval_against_says_when_the_references_disagree_with_the_judge(fakes: Any, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _negation_rows(12))
    (tmp_path / "old.md").write_text("Negate the sentence.\n")
    (tmp_path / "new.md").write_text("Say anything.\n")
    fakes("fake/told", lambda m: "I like turtles." if "anything" in m[0]["content"]
          else m[-1]["content"].replace(" is ", " is not ").replace(".", " at all."))
    fakes("fake/turtle-judge2", lambda m: verdict(5) if "turtles" in m[-1]["content"].split("<response>")[-1]
          else verdict(1, "not about turtles", "off topic"))
    s = eval_prompt(eval_config(data, tmp_path / "new.md", model="fake/told", judge="fake/turtle-judge2",
                                rubric="correctness", against=tmp_path / "old.md", self_agreement=0)).summary()
    a = s["against"]
    assert a["verdict"] == "better" and a["reference"]["metric"] == "f1" and a["reference"]["disagrees"]
    assert a["reference"]["best"] == 0.0 and a["reference"]["baseline"] > 0.8


def test_the_reference_check_agrees_or_stays_out() -> None:
    from reflexopt.evaluate import CaseResult
    from reflexopt.verdict import test_reference

    cases = [Case(id=str(i), input=f"list {i}", ideal=f"cat dog {i}", line=i + 1) for i in range(10)]

    def res(out: str) -> list[CaseResult]:
        return [CaseResult(case_id=c.id, input=c.input, output=out.format(i=c.id), ideal=c.ideal, score=1.0,
                           passed=True) for c in cases]

    up = test_reference("judge", res("nothing"), res("cat dog {i}"), cases, 0.4, seed=0)
    assert up is not None and (up["baseline"], up["best"], up["disagrees"]) == (0.0, 1.0, False)
    assert test_reference("judge", res("nothing"), res("cat dog {i}"), cases, -0.1, seed=0)["disagrees"]
    assert not test_reference("judge", res("cat dog {i}"), res("cat dog {i}"), cases, 0.0, seed=0)["disagrees"]
    assert test_reference("metric", res("a"), res("b"), cases, 0.4, seed=0) is None
    from dataclasses import replace

    unjudged = [replace(r, score=None, passed=None, error="the judge's verdict did not parse")
                for r in res("cat dog {i}")]
    assert test_reference("judge", res("nothing"), unjudged, cases, 0.4, seed=0)["n"] == 10  # still answers
    no_ref = [Case(id="0", input="x", ideal=None, line=1)]
    assert test_reference("judge", res("a")[:1], res("b")[:1], no_ref, 0.4, seed=0) is None


# ------------------------------------------------------------------ matches of the reference; known answers
def _negation_rows(n: int) -> list[dict[str, str]]:
    return [{"input": f"Box {i} is red.", "ideal": f"Box {i} is not red."} for i in range(n)]


def _input_reading_judge(asked: list[str]) -> Any:
    """A judge that reads the input as the reference (as Qwen2.5-Coder-1.5B did on negated sentences): it fails
    every negated answer, the right ones included, and passes the rest."""
    def judge(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        asked.append(text)
        answer = text.split("<response>")[-1].split("</response>")[0]
        return verdict(1, "contradicts the reference") if " not " in answer else verdict(5)
    return judge


def _reference_judge(messages: list[dict[str, str]]) -> str:
    """A judge that passes exactly the answers that say what this case's reference says."""
    text = messages[-1]["content"]
    answer = text.split("<response>")[-1].split("</response>")[0].strip()
    ref = text.split("<reference>")[-1].split("</reference>")[0].strip()
    return verdict(5) if answer.lower().rstrip(".") == ref.lower().rstrip(".") else verdict(1, "wrong")


def test_an_answer_that_says_what_the_reference_says_passes_unjudged(fakes: Any) -> None:
    """Case, punctuation and articles aside, the reference's own words pass at the rubric's highest score with no
    call and are counted; other answers go to the judge, as do all with `pass_matches: false`."""
    asked: list[str] = []
    fakes("fake/input-reader", _input_reading_judge(asked))
    client = get_client(ModelSpec(id="fake/input-reader"))
    scorer = JudgeScorer(client, RUBRIC)
    case = Case(id="1", input="Box 1 is red.", ideal="Box 1 is not red.")
    s = asyncio.run(scorer.score(case, "box 1 is NOT red"))
    assert (s.value, s.passed, s.raw, s.category, s.calls) == (1.0, True, 5.0, None, 0) and asked == []
    assert scorer.stats["matches"] == 1 and scorer.report()["matches"] == 1
    assert asyncio.run(scorer.score(case, "Box 1 is not red, I think.")).passed is False and len(asked) == 1
    judged = JudgeScorer(client, Rubric("r", "Grade it.", 1, 5, 4, pass_matches=False))
    assert asyncio.run(judged.score(case, "Box 1 is not red.")).passed is False and len(asked) == 2
    # the self-agreement redraws leave matches out: they have no verdict to redraw
    sa = asyncio.run(self_agreement(scorer, [(case, "Box 1 is not red."), (case, "Box 1 is not red")]))
    assert sa.n == 0 and len(asked) == 2


def test_eval_measures_the_judge_on_known_answers_and_warns_when_it_gets_them_wrong(fakes: Any,
                                                                                     tmp_path: Path) -> None:
    """The model negates every sentence word for word as the reference does: those answers pass unjudged, so the
    eval scores 1.0 whatever the judge. Asked about known answers (past that shortcut), the input-reading judge
    fails every reference, and the eval says its scores may not track the reference; a judge that reads the
    reference right gets all ten right and draws no warning."""
    data = write_jsonl(tmp_path / "d.jsonl", _negation_rows(12))
    (tmp_path / "p.md").write_text("Negate the sentence.\n")
    fakes("fake/negator", lambda m: m[-1]["content"].split("\n")[-1].replace(" is ", " is not "))
    asked: list[str] = []
    fakes("fake/input-reader", _input_reading_judge(asked))
    fakes("fake/reference-reader", _reference_judge)
    args = ["eval", str(data), str(tmp_path / "p.md"), "-m", "fake/negator", "--judge-criteria", "correctness"]
    result = runner.invoke(app, [*args, "--judge", "fake/input-reader", "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["score"] == 1.0 and s["judge"]["matches"] == 12 and s["judge"]["verdicts"] == 0
    known = s["judge"]["known"]
    assert (known["n"], known["references_passed"], known["foils_failed"]) == (5, 0, 5) and len(asked) == 15
    assert "got 5 of 10 known answers wrong" in known["warning"]
    # it also passes the inputs given back ("The answer is \"The doctor is ...\"."), as Qwen did: said so
    assert (known["restated"], known["restated_failed"]) == (5, 0)
    assert "passed 5 of 5 answers that only give the input back" in known["warning"]
    out = runner.invoke(app, [*args, "--judge", "fake/input-reader"], terminal_width=300).output
    table = " ".join(out.replace("│", " ").split())  # the table wraps long lines
    assert "known answers: passed 0 of 5 references, failed 5 of 5 foils" in table
    assert "12 matches of the reference passed unjudged" in table and "5 of 10 known answers wrong" in table
    good = json.loads(runner.invoke(app, [*args, "--judge", "fake/reference-reader", "--json"]).stdout)
    assert good["judge"]["known"]["references_passed"] == 5 and good["judge"]["known"]["foils_failed"] == 5
    assert good["judge"]["known"]["warning"] is None and good["judge"]["known"]["restated_failed"] == 5


def test_optimize_reports_the_judge_on_known_answers(fakes: Any, tmp_path: Path) -> None:
    """optimize measures the judge on known answers after the baseline, prints the reading and its warning,
    logs it as an event, and carries it in the judge's record and the report."""
    from reflexopt.report import write_report

    data = write_jsonl(tmp_path / "d.jsonl", _negation_rows(40))
    (tmp_path / "p.md").write_text("Here is a sentence.\n")
    fakes("fake/echo", lambda m: m[-1]["content"].split("\n")[-1])
    fakes("fake/input-reader", _input_reading_judge([]))
    result = runner.invoke(app, ["optimize", str(data), str(tmp_path / "p.md"), "-m", "fake/echo", "--judge",
                                 "fake/input-reader", "--judge-criteria", "correctness", "--max-trials", "1",
                                 "-o", str(tmp_path / "best.md")], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "judge on known answers: passed 0 of 5 references, failed 5 of 5 foils" in result.output
    assert "got 5 of 10 known answers wrong" in result.output
    run = next((tmp_path / "home" / "runs").iterdir())
    record = json.loads((run / "summary.json").read_text())["judge"]
    assert record["known"]["references_passed"] == 0 and record["known"]["warning"]
    assert any(json.loads(line)["event"] == "judge_known" for line in (run / "events.jsonl").read_text().splitlines())
    html = write_report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "passed 0 of 5 references, failed 5 of 5 foils" in html and "known answers wrong" in html


def test_probes_reorder_a_list_reference_and_swap_or_add_a_part_of_another_cases() -> None:
    """A list reference is rotated by one item (bullets kept), gets a near miss with its last item swapped for one
    the other reference has and it lacks, and a padded form with that item added; prose of two sentences or more
    gets the other's first sentence in place of its last, or after it; a label, a single sentence, or a sentence
    with commas allows none."""
    from reflexopt.agreement import probes

    assert probes("bear, bird, cow.", "cat, dog, fish") == ("bird, cow, bear", "bear, bird, cat",
                                                          "bear, bird, cow, cat")
    assert probes("bear, bird, cow", "bird, dog") == ("bird, cow, bear", "bear, bird, dog", "bear, bird, cow, dog")
    assert probes("- bear\n- bird\n- cow", "- cat\n- dog") == ("- bird\n- cow\n- bear", "- bear\n- bird\n- cat",
                                                            "- bear\n- bird\n- cow\n- cat")
    assert probes("A breach happened. Data was lost.", "Phishing hit HR. Passwords were reset.") == (
        None, "A breach happened. Phishing hit HR.", "A breach happened. Data was lost. Phishing hit HR.")
    assert probes("positive", "negative") == (None, None, None)
    assert probes("Box 1 is not red.", "Box 2 is not red.") == (None, None, None)
    assert probes("The cat sat on the mat, quietly, again.", "A dog.") == (None, None, None)


def _animal_rows(n: int) -> list[dict[str, str]]:
    kinds = ["bear", "bird", "cow", "goat", "lion", "seal", "wolf", "frog", "mole", "hare", "duck", "crab"]
    return [{"input": f"Name the animals in list {i}.", "ideal": ", ".join(kinds[(3 * i + j) % 12] for j in range(3))}
            for i in range(n)]


def _items_judge(rule: str) -> Any:
    """A judge of list answers: 'order' passes only the reference's items in its order (and scores a partial
    answer by the items it has in place); 'any' passes an answer that shares any item with the reference."""
    def judge(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        answer = text.split("<response>")[-1].split("</response>")[0].strip().split(", ")
        ref = text.split("<reference>")[-1].split("</reference>")[0].strip().split(", ")
        if rule == "order":
            in_place = sum(a == r for a, r in zip(answer, ref, strict=False))
            return verdict(5) if answer == ref else verdict(1 + in_place, "wrong order or items")
        return verdict(5) if set(answer) & set(ref) else verdict(1, "wrong")
    return judge


def test_known_answers_flag_a_judge_that_grades_the_order_or_misses_a_wrong_item(fakes: Any, tmp_path: Path) -> None:
    """On a list task, a judge that fails the reference's items in another order draws the order warning (and
    scores near misses below the reference: no warning for them); one that passes any answer sharing an item
    scores the near misses as high as the references and draws that warning instead."""
    data = write_jsonl(tmp_path / "d.jsonl", _animal_rows(12))
    (tmp_path / "p.md").write_text("List the animals.\n")
    fakes("fake/lister", lambda m: "bear")
    fakes("fake/order-judge", _items_judge("order"))
    fakes("fake/any-judge", _items_judge("any"))
    args = ["eval", str(data), str(tmp_path / "p.md"), "-m", "fake/lister", "--judge-criteria", "correctness",
            "--json"]
    s = json.loads(runner.invoke(app, [*args, "--judge", "fake/order-judge"]).stdout)
    known = s["judge"]["known"]
    assert (known["n"], known["references_passed"], known["foils_failed"]) == (5, 5, 5)
    assert (known["reordered"], known["reordered_passed"]) == (5, 0)
    assert (known["near_misses"], known["near_misses_lower"], known["padded"], known["padded_lower"]) == (5, 5, 5, 5)
    assert "failed 5 of 5 references with their items in another order" in known["warning"]
    assert "as high as the reference" not in known["warning"]
    assert ("passed 0 of 5 reordered lists, scored 5 of 5 near misses below the reference and 5 of 5 with a wrong "
            "part added") in known["summary"]
    from reflexopt.trackers import judge_metrics

    metrics = judge_metrics(s["judge"])
    assert metrics["judge_reordered_passed"] == 0.0 and metrics["judge_near_misses_lower"] == 1.0
    assert metrics["judge_padded_lower"] == 1.0
    s = json.loads(runner.invoke(app, [*args, "--judge", "fake/any-judge"]).stdout)
    known = s["judge"]["known"]
    assert (known["reordered_passed"], known["near_misses_lower"], known["padded_lower"]) == (5, 0, 0)
    assert "scored 5 of 5 references with one item or sentence swapped" in known["warning"]
    assert "scored 5 of 5 references with another case's item or sentence added" in known["warning"]
    assert "another order" not in known["warning"]


def test_the_estimate_counts_the_known_answers_calls_each_reference_allows() -> None:
    """Two calls for a label (its reference and a foil), five for a list (and its three probes), four for prose
    (two probes), and one more for each whose short input the reference changes (the input given back): what the
    run's estimate adds, counted without a call."""
    from reflexopt.agreement import known_calls

    labels = [Case(id=str(i), input="x", ideal=lab) for i, lab in enumerate(["yes", "no", "yes"])]
    lists = [Case(id=str(i), input="x", ideal=r["ideal"]) for i, r in enumerate(_animal_rows(3))]
    prose = [Case(id=str(i), input="x", ideal=f"Event {i} happened. It was bad.") for i in range(2)]
    assert known_calls(labels) == 9 and known_calls(lists) == 18 and known_calls(prose) == 10
    assert known_calls(lists, limit=1) == 6
    same = [Case(id=str(i), input=lab, ideal=lab.upper()) for i, lab in enumerate(["yes", "no", "yes"])]
    assert known_calls(same) == 6  # the reference does not change the input: nothing to give back
    from reflexopt.agreement import restated

    assert restated(Case(id="1", input="immature", ideal="mature")) == 'The answer is "immature".'
    assert restated(Case(id="1", input="long input " * 7, ideal="x")) is None  # not short (14 words)
    # words are counted as the restatement rule counts them, articles aside: 15 words, 10 of them counted
    said = ("a long input " * 5).strip()
    assert restated(Case(id="1", input=said, ideal="x")) == f'The answer is "{said}".'
    assert restated(Case(id="1", input="the", ideal="x")) is None  # nothing left to give back


def test_a_run_names_the_candidates_a_noisy_judges_gain_bar_held_back(tmp_path: Path) -> None:
    """Real verdicts: judge_third's reflex run on the plurals, seed 902 (archived with its per-case val scores;
    Qwen2.5-Coder-1.5B judging, self-agreement SD 0.47). The induced instruction and the fix built on it scored
    0.786 on val against the returned demos' 0.655, a paired t of 1.6 where the bar is 2: the search rightly
    returns the demos, and the summary names the two it held back, with the score each needed, for the user to
    check on more cases. Exact scores (no noise bar) hold nothing back."""
    import tarfile

    from conftest import ROOT

    from reflexopt.cli.render import optimize_summary
    from reflexopt.pool import Candidate, State, held_back, select
    from reflexopt.prompt import Prompt
    from reflexopt.report import write_report
    from reflexopt.store import RunStore

    with tarfile.open(ROOT / "docs" / "benchmarks" / "runs" / "judge_third"
                      / "home-singular_to_plural-reflex-400-902.tar.gz") as t:
        t.extractall(tmp_path, filter="data")
    run = next(tmp_path.glob("*/runs/*"))
    latest = {r["id"]: r for r in map(json.loads, (run / "candidates.jsonl").read_text().splitlines())}
    val: dict[str, dict[str, float]] = {}
    for (key, split, case), (res, _) in RunStore(run).evals().items():
        if split == "val" and res.score is not None:
            val.setdefault(key, {})[case] = res.score
    pool = [Candidate(r["id"], Prompt(text=r["id"]), r["operator"], r["parent"]).scored(val.get(r["key"], {}),
                                                                                       State(r["state"]))
            for r in latest.values()]
    min_gain = next(e["min_gain"] for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
                    if e.get("event") == "baseline")
    best = select(pool, 21, min_gain).best
    assert best.id == "t1" and min_gain > 0
    kept = held_back(pool, best, 21, min_gain)
    assert [(k["id"], k["operator"], k["val"]) for k in kept] == [("t4", "induce", 0.7857), ("t5", "fix", 0.7857)]
    assert all(k["val"] < k["needed"] for k in kept)
    assert held_back(pool, best, 21, 0.0) == []
    summary = {**json.loads((run / "summary.json").read_text()), "held_back": kept}  # the run predates the row
    shown = " ".join(str(c) for row in optimize_summary(summary).columns for c in row._cells)
    assert "t4 (induce) 0.786, needed" in shown and "above the best's 0.655 on val" in shown
    (run / "summary.json").write_text(json.dumps(summary))
    html = write_report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Held back: t4 (induce) 0.786, needed" in html
