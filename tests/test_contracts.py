"""Contract suites run over every implementation: model backends (litellm and the direct OpenAI transport
against a loopback server, the in-process fakes; the embedded server, which uses the direct transport, in
tests/test_local_model.py) and scorers (metric, judge)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import FakeOpenAI, Scripted

from reflexopt.data import Case
from reflexopt.judge import JudgeScorer, Rubric
from reflexopt.metrics import MetricScorer
from reflexopt.models import FunctionModel, TransientError
from reflexopt.models.base import RawReply

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(params=["litellm", "openai-compat", "fake"])
def backend(request: pytest.FixtureRequest, openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000000")
    openai_server.responder = lambda req: "hello"
    if request.param == "litellm":
        from reflexopt.models.litellm_backend import LiteLLMBackend

        return LiteLLMBackend("openai/test", api_base=openai_server.url), openai_server
    if request.param == "openai-compat":
        from reflexopt.models.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend("openai/test", api_base=openai_server.url), openai_server
    return FunctionModel(lambda m: "hello"), None


def test_backend_returns_a_reply_with_tokens(backend: Any) -> None:
    b, _ = backend
    r = asyncio.run(b.call(MSG, {"temperature": 0.0, "max_tokens": 8}, 10.0))
    assert isinstance(r, RawReply) and r.text == "hello" and r.prompt_tokens > 0 and r.completion_tokens > 0


def test_backend_raises_and_classifies_failures(backend: Any) -> None:
    b, srv = backend
    if srv is not None:
        srv.script = [Scripted(status=429, body={"error": {"message": "slow down", "type": "rate"}},
                               headers={"retry-after": "2"})]
        with pytest.raises(Exception) as ei:
            asyncio.run(b.call(MSG, {}, 10.0))
        exc = ei.value
    else:
        exc = TransientError("busy", retry_after=2.0)
    retry, after = b.retry_after(exc)
    assert retry and after == pytest.approx(2.0, abs=0.5)
    assert b.retry_after(ValueError("bad request"))[0] is False


def _judge(reply: str) -> JudgeScorer:
    from reflexopt.config import ModelSpec
    from reflexopt.models import get_client, register_fake

    register_fake("fake/contract-judge", FunctionModel(lambda m: reply))
    return JudgeScorer(get_client(ModelSpec(id="fake/contract-judge")), Rubric("r", "grade", 1, 5, 4))


SCORERS = {
    "metric-contains": lambda: MetricScorer("contains", [Case(id="1", input="q", ideal="yes"),
                                                         Case(id="2", input="q", ideal="no")]),
    "metric-rouge": lambda: MetricScorer("rouge-l"),
    "judge": lambda: _judge('{"reasoning": "fine", "score": 5, "failure_category": "none"}'),
    "judge-garbage": lambda: _judge("I refuse to grade."),
}


@pytest.mark.parametrize("name", sorted(SCORERS))
@pytest.mark.parametrize("output", ["yes", "", "no, definitely not yes", "\x00" * 3, "x" * 10_000])
def test_scorer_contract(name: str, output: str) -> None:
    scorer = SCORERS[name]()
    case = Case(id="1", input="q", ideal="yes")
    first = asyncio.run(scorer.score(case, output))
    again = asyncio.run(scorer.score(case, output))
    assert (first.value is None) == bool(first.error)
    if first.value is not None:
        assert 0.0 <= first.value <= 1.0 and isinstance(first.passed, bool)
    assert first.value == again.value  # deterministic (metrics) or cached at temperature 0 (judges)
    assert scorer.kind in ("metric", "judge") and scorer.describe()


def test_direct_transport_through_the_client(openai_server: FakeOpenAI) -> None:
    from reflexopt.config import ModelSpec
    from reflexopt.errors import ModelError
    from reflexopt.models import ModelClient
    from reflexopt.models.openai_compat import OpenAICompatBackend

    openai_server.responder = lambda req: "fine"
    backend = OpenAICompatBackend("openai/test", api_base=openai_server.url)
    c = ModelClient(ModelSpec(id="openai/test", timeout_s=5), backend, cache=None, model_key="k", concurrency=4)
    c.base_delay_s = 0.01
    openai_server.script = [Scripted(status=503, body={"error": {"message": "busy"}}),
                            Scripted(status=200, body=None, delay_s=0)]
    openai_server.script.pop()  # second request answered by the responder
    r = asyncio.run(c.complete(MSG))
    assert r.ok and r.text == "fine" and r.attempts == 2
    openai_server.script = [Scripted(status=401, body={"error": {"message": "bad key"}})]
    with pytest.raises(ModelError, match="refused the credentials"):
        asyncio.run(c.complete([{"role": "user", "content": "other"}]))
