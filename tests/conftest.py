from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "tests" / "data"  # copies of the public sets the tests read (sources in tests/data/README.md)
EXAMPLES = ROOT / "examples"


def names_labels(text: str, labels: tuple[str, ...] = ("positive", "negative")) -> bool:
    """What the fake task models react to: a prompt that states the label set (a format spec, a task
    instruction, demos or an options cue all do)."""
    return all(lab in text for lab in labels)


def label_rows(n: int) -> list[dict[str, Any]]:
    """A two-label task: items say good or bad; the reference is positive or negative."""
    return [{"input": f"{'good' if i % 2 else 'bad'} item {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(n)]


def label_model(messages: list[dict[str, str]]) -> str:
    """A fake task model that answers right exactly when the prompt states the label set."""
    text = " ".join(m["content"] for m in messages)
    return ("positive" if "good" in messages[-1]["content"] else "negative") if names_labels(text) else "?"


_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6):
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise OSError(f"tests must not reach the network (tried {host})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own REFLEXOPT_HOME, and no connection leaves the loopback interface."""
    monkeypatch.setenv("REFLEXOPT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    from reflexopt.models import cache

    cache._shared.clear()


@dataclass
class Scripted:
    """One scripted HTTP reply: status, headers, body (dict -> JSON), delay before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def completion(text: str, prompt_tokens: int = 10, completion_tokens: int = 5) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class FakeOpenAI:
    """A real OpenAI-compatible HTTP server on loopback, answering from a script or a function."""

    def __init__(self) -> None:
        self.script: list[Scripted] = []
        self.responder: Callable[[dict[str, Any]], str] = lambda req: "ok"
        # an error reply for a request: a status, or a whole Scripted reply
        self.refuse: Callable[[dict[str, Any]], int | Scripted | None] = lambda req: None
        self.requests: list[tuple[float, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers (names in lower case)
        self.max_in_flight: int | None = None  # a rate limit: requests beyond it are answered 429
        self.in_flight = 0
        self.rejected = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length", 0))
                req = json.loads(self.rfile.read(n) or b"{}")
                with outer.lock:
                    outer.requests.append((time.monotonic(), req))
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    limited = outer.max_in_flight is not None and outer.in_flight >= outer.max_in_flight
                    if limited:
                        outer.rejected += 1
                    else:
                        outer.in_flight += 1
                    step = outer.script.pop(0) if outer.script and not limited else None
                if limited:
                    self._send(Scripted(status=429, headers={"retry-after": "0"}))
                    return
                try:
                    self._answer(req, step)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def _answer(self, req: dict[str, Any], step: Scripted | None) -> None:
                refusal = outer.refuse(req)
                if step is None and refusal is not None:
                    step = refusal if isinstance(refusal, Scripted) else Scripted(status=refusal)
                if step is None:
                    step = Scripted(body=completion(outer.responder(req)))
                if step.delay_s:
                    time.sleep(step.delay_s)
                self._send(step)

            def _send(self, step: Scripted) -> None:
                payload = json.dumps(step.body if step.body is not None else
                                     {"error": {"message": f"status {step.status}", "type": "x"}}).encode()
                try:
                    self.send_response(step.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in step.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fakes() -> Any:
    """Register fake models by name for one test: `fakes(name, fn, **kw)` returns the backend."""
    from reflexopt.models import FunctionModel, register_fake, unregister_fake

    made: list[str] = []

    def add(name: str, fn: Any, **kw: Any) -> Any:
        backend = FunctionModel(fn, **kw)
        register_fake(name, backend)
        made.append(name)
        return backend

    yield add
    for n in made:
        unregister_fake(n)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    srv = FakeOpenAI()
    yield srv
    srv.close()


def require(module: str, why: str, *, load: bool = True) -> Any:
    """Import an optional dependency of a test: a skip on a developer's machine without it, a failure in CI
    (`.ci/run` sets CI=1 and installs everything), where a silent skip would hide a test that never ran.
    `load=False`: only check that it is installed (for a package the tests run in a server process: llama_cpp
    opens two files at import that it never closes, which pytest reports at exit)."""
    import importlib
    import importlib.util

    try:
        if not load:
            if importlib.util.find_spec(module) is None:
                raise ImportError(module)
            return None
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} must be installed in CI ({why})", pytrace=False)
        pytest.skip(f"{module} is not installed ({why})")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def ctrl_c_reaches() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT, as Ctrl-C in a terminal would. A shell without job
    control starts background commands with SIGINT ignored, and the child inherits that (Python then installs no
    KeyboardInterrupt handler), so the test would measure the shell that started pytest, not reflexopt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def browse_offline(page_path: Path) -> dict[str, Any]:
    """Open a local HTML file in headless Chromium; record every request, console problem and what is shown.

    Skips where Chromium is not installed (fails in CI, which installs it)."""
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium must be installed in CI (apt-get install chromium)")
        pytest.skip("Chromium is not installed")
    playwright = require("playwright.sync_api", "the report test opens the page in Chromium")
    seen: dict[str, Any] = {"requests": [], "problems": []}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("request", lambda req: seen["requests"].append(req.url))
        page.on("console", lambda msg: seen["problems"].append(msg.text) if msg.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda exc: seen["problems"].append(str(exc)))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("networkidle")
        seen["text"] = page.inner_text("body")
        seen["title"] = page.title()
        seen["nested"] = page.evaluate("document.querySelectorAll('svg circle *, svg line *, svg polyline *').length")
        seen["points"] = page.evaluate(  # the trajectory's points (the report has other charts)
            "document.querySelectorAll(\"svg[aria-label='val score of every trial'] > g > circle\").length")
        browser.close()
    return seen
