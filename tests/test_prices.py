"""Prices for models litellm does not know (a prices file, a GPU-hour rate converted through the measured
throughput) and cost per successful task as the headline money figure."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import label_model, label_rows, write_jsonl
from typer.testing import CliRunner

from reflexopt.cli import app
from reflexopt.compare import compare
from reflexopt.config import ModelSpec, compare_config, eval_config, load_prices, optimize_config
from reflexopt.errors import ConfigError
from reflexopt.evaluate import CaseResult, money
from reflexopt.models import spec_price
from reflexopt.recommend import gpu_hour_cost

runner = CliRunner()


def _case(i: int, *, passed: bool, latency: float = 0.5, cached: bool = False) -> CaseResult:
    return CaseResult(case_id=str(i), input="q", output="a", ideal="a", score=float(passed), passed=passed,
                      prompt_tokens=100, completion_tokens=10, latency_s=latency, cached=cached)


def test_a_prices_file_prices_every_role_that_has_no_price_of_its_own(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("openai/qwen: {price_in: 0.2, price_out: 0.6}\nopenai/judge: {gpu_hour: 1.5}\n")
    cfg = optimize_config("d.jsonl", "p.md", model="openai/qwen", judge="openai/judge", prices=prices)
    price, source = spec_price(cfg.model)
    assert price == pytest.approx((0.2e-6, 0.6e-6)) and source == "prices file prices.yaml"
    assert cfg.scorer.judge is not None and cfg.scorer.judge.gpu_hour == 1.5
    assert spec_price(cfg.scorer.judge) == (None, "$1.5 per GPU-hour (prices file prices.yaml)")
    # the model's own setting wins over the file
    own = eval_config("d.jsonl", "p.md", model="openai/qwen@price_in=9", prices=prices)
    assert spec_price(own.model)[1] == "model setting" and own.model.price_in == 9
    both = compare_config("d.jsonl", "p.md", ["openai/qwen", "openai/other"], prices=prices)
    assert [m.price_in for m in both.models] == [0.2, None]


@pytest.mark.parametrize(("text", "message"), [
    ("openai/qwen: {price_in: 0.2, price_oot: 0.6}\n", "the entry for 'openai/qwen'"),
    ("openai/qwen: {gpu_hour: -1}\n", "the entry for 'openai/qwen'"),
    ("openai/qwen: {price_in: [0.2\n", "prices.yaml:"),
    ("- openai/qwen\n", "maps model ids to prices"),
])
def test_a_bad_prices_file_names_the_file_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(text)
    with pytest.raises(ConfigError, match="prices.yaml") as e:
        load_prices(prices)
    assert message in str(e.value) and e.value.fix


def test_a_gpu_hour_price_is_converted_through_the_measured_throughput() -> None:
    spec = ModelSpec(id="openai/selfhosted", gpu_hour=3.6)  # $0.001 per second of the machine
    tuned = [_case(i, passed=True, latency=0.5) for i in range(4)] + [_case(9, passed=True, cached=True)]
    per_request, source = gpu_hour_cost(spec, tuned, None)  # one at a time: 2 requests/s from 0.5 s each
    assert per_request == pytest.approx(0.001 / 2) and "2.00 requests/s" in source and "one request at a time" in source
    per_request, source = gpu_hour_cost(spec, tuned, 8.0)  # the load test's best level
    assert per_request == pytest.approx(0.001 / 8) and "load test" in source
    cached_only = [_case(1, passed=True, cached=True)]
    assert gpu_hour_cost(spec, cached_only, None)[0] is None


def test_compare_costs_a_gpu_hour_model_from_its_load_test(tmp_path: Path, openai_server: Any) -> None:
    def slow(req: dict[str, Any]) -> str:
        time.sleep(0.05)
        return label_model(req["messages"])

    openai_server.responder = slow
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Label: {input}\n")
    cfg = compare_config(data, tmp_path / "p.md", ["openai/selfhosted@gpu_hour=3.6"], api_base=openai_server.url,
                         metric="contains", tune=False, load=(1, 4), load_calls=8)
    row = compare(cfg).rows[0]
    best = max(x["throughput_rps"] for x in row.load or [])
    assert "load test, best level" in row.price_source
    assert row.cost_per_1k == pytest.approx(1000 * 3.6 / 3600 / best, rel=1e-3)


def test_cost_per_success_counts_every_request_over_the_passing_ones() -> None:
    results = [_case(0, passed=True), _case(1, passed=False), _case(2, passed=True), _case(3, passed=False)]
    m = money(results, (1e-6, 2e-6))  # 100 * 1e-6 + 10 * 2e-6 = 1.2e-4 per request
    assert m is not None and m["cost_per_1k"] == pytest.approx(0.12)
    assert m["cost_per_success"] == pytest.approx(1.2e-4 * 4 / 2) and m["passing"] == 2
    assert money(results, None) is None
    assert money([_case(0, passed=False)], (1e-6, 1e-6))["cost_per_success"] is None  # type: ignore[index]


def test_eval_shows_cost_per_success_with_the_price_source(tmp_path: Path, openai_server: Any) -> None:
    openai_server.responder = lambda req: label_model(req["messages"])
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(10))
    (tmp_path / "p.md").write_text("Label it positive or negative: {input}\n")  # the fake then answers right
    prices = tmp_path / "prices.yaml"
    prices.write_text("openai/selfhosted: {price_in: 200, price_out: 600}\n")
    result = runner.invoke(app, ["eval", str(data), str(tmp_path / "p.md"), "-m", "openai/selfhosted", "--api-base",
                                 openai_server.url, "--metric", "contains", "--prices", str(prices), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    per_request = (10 * 200 + 5 * 600) / 1e6  # the fake server's usage: 10 prompt + 5 completion tokens
    passing = s["money"]["passing"]
    assert passing > 0 and s["money"]["price_source"] == "prices file prices.yaml"
    assert s["money"]["cost_per_success"] == pytest.approx(per_request * 10 / passing, rel=1e-6)
    assert s["cost_usd"] == pytest.approx(per_request * 10, rel=1e-6)  # the calls were costed at that price


def test_optimize_reports_cost_per_success_on_test(tmp_path: Path, fakes: Any) -> None:
    from rich.console import Console

    from reflexopt.cli.render import optimize_summary
    from reflexopt.config import Budget
    from reflexopt.optimizer import optimize

    data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
    (tmp_path / "p.md").write_text("Label it positive or negative.\n")
    fakes("fake/paid", label_model, cost_per_token=1e-6)
    r = optimize(optimize_config(data, tmp_path / "p.md", model="fake/paid", reasoning_model="fake/paid",
                                 budget=Budget(max_trials=1)))
    assert r.money is not None and r.money["price_source"] == "the fake model's own price"
    best = r.money["best"]
    assert best["cost_per_success"] == pytest.approx(best["cost_per_1k"] / 1000 * best["requests"] / best["passing"])
    console = Console(width=200, record=True)
    console.print(optimize_summary(r.to_json()))
    assert "cost per success (test)" in console.export_text()


def test_a_model_answered_wholly_from_the_cache_keeps_the_latency_its_answers_had_and_max_p95_checks_it() -> None:
    """compare run again with other limits: every tuned answer comes from the cache, and the p95 its answers had
    when they were paid for still decides --max-p95 (marked as read from the cache); answers from a cache that
    kept no latency leave it unchecked, as before."""
    from reflexopt.recommend import Constraints, row_from_results

    spec = ModelSpec(id="openai/m")
    base = [_case(i, passed=False, cached=True) for i in range(5)]
    slow = [_case(i, passed=True, latency=3.0, cached=True) for i in range(5)]
    row = row_from_results(spec, base, slow, None, None)
    assert row.latency_p95_s == 3.0 and row.latency_from_cache
    assert "latency p95 3.00 s > --max-p95 2 s" in (Constraints(max_p95_s=2.0).violation(row) or "")
    live = row_from_results(spec, base, [*slow[:4], _case(9, passed=True, latency=0.5)], None, None)
    assert live.latency_p95_s == 0.5 and not live.latency_from_cache  # a call made now: only what was measured now
    unknown = row_from_results(spec, base, [_case(i, passed=True, latency=0.0, cached=True) for i in range(5)],
                               None, None)
    assert unknown.latency_p95_s is None
    assert "cannot be checked" in (Constraints(max_p95_s=2.0).violation(unknown) or "")
