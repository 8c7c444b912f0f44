"""The model layer against a real loopback HTTP server (litellm -> OpenAI-compatible endpoint)."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import pytest
from conftest import FakeOpenAI, Scripted, completion

from reflexopt.config import ModelSpec
from reflexopt.errors import ModelError
from reflexopt.models import (
    FakeModel,
    FunctionModel,
    TransientError,
    get_client,
    redact,
    register_fake,
    unregister_fake,
)

MSG = [{"role": "user", "content": "hi"}]


def client(srv: FakeOpenAI, **kw: object):  # type: ignore[no-untyped-def]
    spec = ModelSpec(id="openai/test-model", api_base=srv.url, **kw)  # type: ignore[arg-type]
    c = get_client(spec)
    c.base_delay_s = 0.05
    return c


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-123456")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_success_tokens_and_cache(openai_server: FakeOpenAI) -> None:
    openai_server.responder = lambda req: "hello"
    c = client(openai_server)
    r = run(c.complete(MSG))
    assert r.ok and r.text == "hello" and r.prompt_tokens == 10 and r.completion_tokens == 5 and not r.cached
    again = run(c.complete(MSG))
    assert again.cached and again.text == "hello"
    other_sample = run(c.complete(MSG, sample=1))
    assert not other_sample.cached
    assert len(openai_server.requests) == 2
    snap = c.meter.snapshot()
    assert snap["model_calls"] == 2 and snap["cached_calls"] == 1 and snap["prompt_tokens"] == 20


def test_cache_survives_a_new_client(openai_server: FakeOpenAI) -> None:
    run(client(openai_server).complete(MSG))
    fresh = client(openai_server)
    assert run(fresh.complete(MSG)).cached
    assert len(openai_server.requests) == 1
    assert not run(client(openai_server, temperature=0.7).complete(MSG)).cached


def test_429_honours_retry_after(openai_server: FakeOpenAI) -> None:
    openai_server.script = [Scripted(status=429, headers={"Retry-After": "1"})]
    c = client(openai_server)
    r = run(c.complete(MSG))
    assert r.ok and r.attempts == 2
    (t0, _), (t1, _) = openai_server.requests
    assert t1 - t0 >= 0.95
    assert c.meter.retries == 1


def test_5xx_retried_with_backoff(openai_server: FakeOpenAI) -> None:
    openai_server.script = [Scripted(status=503), Scripted(status=500)]
    r = run(client(openai_server).complete(MSG))
    assert r.ok and r.attempts == 3


def test_timeout_retried_then_recorded_as_failure(openai_server: FakeOpenAI) -> None:
    openai_server.script = [Scripted(body=completion("slow"), delay_s=2.0)] * 3
    c = client(openai_server, timeout_s=0.5, max_retries=1)
    start = time.monotonic()
    r = run(c.complete(MSG))
    assert not r.ok and r.attempts == 2 and "imeout" in (r.error or "")
    assert time.monotonic() - start < 5
    assert c.meter.failed_calls == 1


def test_timeout_then_success(openai_server: FakeOpenAI) -> None:
    openai_server.script = [Scripted(body=completion("slow"), delay_s=2.0)]
    openai_server.responder = lambda req: "fast"
    r = run(client(openai_server, timeout_s=0.5).complete(MSG))
    assert r.ok and r.text == "fast" and r.attempts == 2


def test_client_errors_are_not_retried_and_not_raised(openai_server: FakeOpenAI) -> None:
    openai_server.script = [Scripted(status=400)]
    r = run(client(openai_server).complete(MSG))
    assert not r.ok and r.attempts == 1 and len(openai_server.requests) == 1
    assert "sk-test" not in (r.error or "")


def test_concurrency_limit(openai_server: FakeOpenAI) -> None:
    openai_server.script = [Scripted(body=completion(str(i)), delay_s=0.3) for i in range(6)]
    c = client(openai_server, concurrency=2)

    async def many() -> list[object]:
        return await asyncio.gather(*(c.complete([{"role": "user", "content": str(i)}]) for i in range(6)))

    start = time.monotonic()
    results = run(many())
    elapsed = time.monotonic() - start
    assert all(r.ok for r in results)  # type: ignore[attr-defined]
    assert elapsed >= 0.85  # 6 calls of 0.3 s, two at a time


def test_connection_refused_is_a_failed_result() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = get_client(ModelSpec(id="openai/x", api_base=f"http://127.0.0.1:{port}/v1", max_retries=1))
    c.base_delay_s = 0.01
    r = run(c.complete(MSG))
    assert not r.ok and r.attempts == 2


def test_unknown_model_id() -> None:
    with pytest.raises(ModelError, match="unknown model 'nosuchprovider/foo'"):
        get_client(ModelSpec(id="nosuchprovider/foo"))
    with pytest.raises(ModelError, match="no fake model"):
        get_client(ModelSpec(id="fake/unregistered"))


def test_fakes_register_like_models() -> None:
    register_fake("fake/script", FakeModel(["a", TransientError("busy", retry_after=0.01), "b"]))
    register_fake("fake/fn", FunctionModel(lambda m: m[-1]["content"].upper(), cost_per_token=0.001))
    try:
        s = get_client(ModelSpec(id="fake/script"), cache=False)
        s.base_delay_s = 0.01
        assert run(s.complete(MSG)).text == "a"
        second = run(s.complete(MSG))
        assert second.text == "b" and second.attempts == 2
        f = get_client(ModelSpec(id="fake/fn"))
        r = run(f.complete(MSG))
        assert r.text == "HI" and r.cost_usd == pytest.approx(0.002)
    finally:
        unregister_fake("fake/script")
        unregister_fake("fake/fn")


def test_budget_gate_refuses_without_calling() -> None:
    backend = FunctionModel(lambda m: "x")
    register_fake("fake/gated", backend)

    class MaxTwo:
        def allow(self, meter: object) -> bool:
            return meter.calls < 2  # type: ignore[attr-defined]

    try:
        c = get_client(ModelSpec(id="fake/gated"), cache=False)
        c.gate = MaxTwo()
        results = [run(c.complete([{"role": "user", "content": str(i)}])) for i in range(4)]
        assert [r.ok for r in results] == [True, True, False, False]
        assert results[-1].budget_exhausted and len(backend.calls) == 2
    finally:
        unregister_fake("fake/gated")


def test_redact() -> None:
    assert "sk-" not in redact("bad key sk-abcdefghijklmnop given")
    assert "secret" not in redact("Authorization: Bearer secrettokenvalue")


def test_cache_file_created_by_many_at_once(tmp_path: object) -> None:
    """Parallel compare threads (and several processes) may open a fresh cache file at the same moment."""
    import threading
    from pathlib import Path

    from reflexopt.models import ResponseCache

    errors: list[str] = []

    def open_cache(path: Path) -> None:
        try:
            ResponseCache(path)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    for i in range(15):
        path = Path(str(tmp_path)) / f"c{i}.sqlite"
        threads = [threading.Thread(target=open_cache, args=(path,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_the_cache_keeps_how_long_each_answer_took_and_opens_a_file_from_before_it_did(
        openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """A cached answer carries the latency its call had when it was paid for (marked cached: not this
    command's); a cache file written before the cache kept latencies gains the column and serves its answers
    with none."""
    import sqlite3

    from reflexopt.models import ResponseCache
    from reflexopt.models.base import RawReply

    def slow(req: dict[str, object]) -> str:
        time.sleep(0.2)
        return "hello"

    openai_server.responder = slow
    c = client(openai_server)
    paid = run(c.complete(MSG))
    again = run(client(openai_server).complete(MSG))  # a new client: from the file, not the queue
    assert again.cached and paid.latency_s >= 0.2 and again.latency_s == pytest.approx(paid.latency_s)
    assert c.meter.snapshot()["model_calls"] == 1

    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT, text TEXT, prompt_tokens INT, "
               "completion_tokens INT, cost REAL, created REAL DEFAULT (unixepoch()))")
    db.execute("INSERT INTO responses (key, model, text, prompt_tokens, completion_tokens, cost) VALUES "
               "('k', 'm', 'old answer', 1, 1, 0.0)")
    db.commit()
    db.close()
    cache = ResponseCache(old)
    assert cache.get("k") == RawReply("old answer", 1, 1, 0.0, None)
    cache.put("n", "m", RawReply("new answer", 1, 1, 0.0, 1.5))
    cache.close()
    assert ResponseCache(old).get("n") == RawReply("new answer", 1, 1, 0.0, 1.5)


def test_cache_writes_are_queued_served_and_survive_exit(tmp_path: object) -> None:
    """put() returns without committing (the event loop never waits on SQLite); a queued answer is served at
    once; close() and a plain interpreter exit (no close) both leave every answer in the file."""
    import subprocess
    import sys
    from pathlib import Path

    from reflexopt.models import ResponseCache
    from reflexopt.models.base import RawReply

    path = Path(str(tmp_path)) / "c.sqlite"
    cache = ResponseCache(path)
    for i in range(200):
        cache.put(f"k{i}", "m", RawReply(f"answer {i}", 3, 1, 0.0))
    hit = cache.get("k7")
    assert hit is not None and hit.text == "answer 7"
    cache.close()
    again = ResponseCache(path)
    assert all((again.get(f"k{i}") or RawReply("", 0, 0, 0.0)).text == f"answer {i}" for i in range(200))
    again.close()

    code = ("import sys; from pathlib import Path; from reflexopt.models import ResponseCache; "
            "from reflexopt.models.base import RawReply; c = ResponseCache(Path(sys.argv[1])); "
            "[c.put(f'x{i}', 'm', RawReply(str(i), 1, 1, 0.0)) for i in range(500)]")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    third = ResponseCache(path)
    assert [(third.get(f"x{i}") or RawReply("", 0, 0, 0.0)).text for i in (0, 250, 499)] == ["0", "250", "499"]
    third.close()


def test_an_openai_compatible_endpoint_is_priced_without_importing_litellm(openai_server: FakeOpenAI,
                                                                             tmp_path: object) -> None:
    """`openai/NAME --api-base` takes the direct transport; its price still comes from litellm's map (read from
    the file litellm ships), and no process pays litellm's 5 s import for it."""
    import subprocess
    import sys

    openai_server.responder = lambda req: "fine"
    code = ("import asyncio, sys; from reflexopt.config import ModelSpec; from reflexopt.models import get_client; "
            f"c = get_client(ModelSpec(id='openai/gpt-4o-mini', api_base='{openai_server.url}'), cache=False); "
            "r = asyncio.run(c.complete([{'role': 'user', 'content': 'hi'}])); "
            "print(r.ok, r.cost_usd > 0, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "REFLEXOPT_HOME": str(tmp_path), "OPENAI_API_KEY": "sk-x"})
    assert out.stdout.split() == ["True", "True", "False"], out.stderr[-2000:]


def test_the_direct_transport_honours_the_proxy_environment(openai_server: FakeOpenAI,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY is read once per backend (not per request): a call to an unreachable host goes through the
    proxy, and NO_PROXY exempts a host."""
    from reflexopt.models.openai_compat import OpenAICompatBackend

    openai_server.responder = lambda req: "via proxy"
    monkeypatch.setenv("HTTP_PROXY", openai_server.url.rsplit("/v1", 1)[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    backend = OpenAICompatBackend("openai/m", api_base="http://unreachable.invalid:9/v1")
    reply = asyncio.run(backend.call([{"role": "user", "content": "hi"}], {}, 10))
    assert reply.text == "via proxy"
    monkeypatch.setenv("NO_PROXY", "unreachable.invalid")
    direct = OpenAICompatBackend("openai/m", api_base="http://unreachable.invalid:9/v1")
    assert direct._proxy == (None, None)
    monkeypatch.delenv("NO_PROXY")
    for local in ("http://127.0.0.1:8080/v1", "http://localhost:8080/v1", "http://[::1]:8080/v1"):
        assert OpenAICompatBackend("openai/m", api_base=local)._proxy == (None, None)  # never via the proxy


def test_embedded_server_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from reflexopt.errors import ConfigError
    from reflexopt.models.local import LocalBackend, LocalServer, server_threads

    monkeypatch.delenv("REFLEXOPT_LOCAL_THREADS", raising=False)
    cores = server_threads()
    assert cores >= 1 and LocalServer(Path("m.gguf")).n_threads == cores
    monkeypatch.setenv("REFLEXOPT_LOCAL_THREADS", "1")
    assert LocalServer(Path("m.gguf")).n_threads == 1
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("REFLEXOPT_LOCAL_THREADS", bad)
        with pytest.raises(ConfigError, match="REFLEXOPT_LOCAL_THREADS") as e:
            LocalBackend("smollm2")  # before any call, not at the first one
        assert "whole number" in (e.value.fix or "")


def test_a_gguf_path_is_a_local_model_and_a_missing_one_is_named(tmp_path: Path) -> None:
    from reflexopt.models import local

    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"GGUF")
    if importlib.util.find_spec("llama_cpp") is not None:
        assert local.model_file(str(gguf)) == gguf.resolve()
    with pytest.raises(ModelError) as e:
        local.model_file(str(tmp_path / "nothing.gguf"))
    assert "nothing.gguf: no such model file" in str(e.value) and "local/~/models/qwen.gguf" in e.value.fix


def test_two_local_models_never_compute_at_once() -> None:
    """A task model and a local judge in one process take turns: on a small machine, two llama.cpp servers
    computing together slow each other down far more than they gain."""
    from reflexopt.models import local

    spans: list[tuple[str, float, float]] = []

    class Server:
        crashes, proc, broken = 0, None, False

        def running(self) -> bool:
            return True

    class Inner:
        def __init__(self, name: str) -> None:
            self.name = name

        async def call(self, messages: object, params: object, timeout_s: float) -> str:
            start = time.monotonic()
            await asyncio.sleep(0.02)
            spans.append((self.name, start, time.monotonic()))
            return "ok"

    backends = []
    for name in ("task", "judge"):
        b = local.LocalBackend("smollm2")
        b._inner, b._server = Inner(name), Server()
        backends.append(b)

    async def go() -> None:
        await asyncio.gather(*(b.call([], {}, 5.0) for b in backends for _ in range(4)))

    asyncio.run(go())
    spans.sort(key=lambda s: s[1])
    assert len(spans) == 8 and {s[0] for s in spans} == {"task", "judge"}
    assert all(later[1] >= earlier[2] for earlier, later in zip(spans, spans[1:]))  # no two overlap


def test_a_local_server_that_crashes_under_every_request_stops_the_command(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A llama.cpp build that does not run on the CPU crashes under each request: the command stops with the
    crash, the log and the rebuild (it was restarted under every call, each call recorded as a failed case)."""
    import os

    from conftest import require

    from reflexopt.models import local

    require("llama_cpp", "local/PATH.gguf needs llama-cpp-python installed", load=False)
    starts = tmp_path / "starts"
    monkeypatch.setenv("CRASHING_SERVER_STARTS", str(starts))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent / "servers"),
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(local, "SERVER_MODULE", "crashing_llama_server")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    c = get_client(ModelSpec(id=f"local/{gguf}", max_retries=5), cache=False)
    c.base_delay_s = 0.01

    async def two_calls() -> list[object]:  # the second waits behind the first, for the server that dies
        return await asyncio.gather(c.complete(MSG), c.complete([{"role": "user", "content": "ho"}]),
                                    return_exceptions=True)

    try:
        errors = asyncio.run(two_calls())
    finally:
        local.stop_all()
    assert all(isinstance(x, ModelError) for x in errors), errors
    e = errors[0]
    assert "m.gguf crashed (signal SIGSEGV) while answering, 2 times in a row" in str(e)
    assert "llama-server.log" in (e.fix or "")
    assert "pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python" in (e.fix or "")
    # restarted once, not for each of 5 retries of each call; a death seen by both requests is one crash
    assert starts.read_text().splitlines() == ["start", "start"]
    assert c.meter.failed_calls == 2


def test_a_llama_build_with_amx_loads_models_without_its_extra_buffer_types() -> None:
    """The AMX kernels of a llama.cpp build compiled on an AMX CPU crashed at the first request; the server's
    process turns them off there (and only there)."""
    import ctypes

    from reflexopt.models.llama_child import avoid_amx

    class Params(ctypes.Structure):
        _fields_ = [("n_gpu_layers", ctypes.c_int32), ("use_extra_bufts", ctypes.c_bool)]

    class Lib:
        def __init__(self, info: bytes, params: type[ctypes.Structure] = Params) -> None:
            self.info, self.llama_model_params = info, params

        def llama_print_system_info(self) -> bytes:
            return self.info

        def llama_model_default_params(self) -> ctypes.Structure:
            return self.llama_model_params(n_gpu_layers=0, use_extra_bufts=True)

    amx = Lib(b"CPU : SSE3 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |")
    assert avoid_amx(amx) and amx.llama_model_default_params().use_extra_bufts is False
    plain = Lib(b"CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | REPACK = 1 |")
    assert not avoid_amx(plain) and plain.llama_model_default_params().use_extra_bufts is True

    class Older(ctypes.Structure):
        _fields_ = [("n_gpu_layers", ctypes.c_int32)]

    older = Lib(b"CPU : AMX_INT8 = 1 |", Older)
    assert not avoid_amx(older)
