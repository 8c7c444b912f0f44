"""Pipeline mode: the Task that runs the user's own program.

`PipelineTask.run(prompts, case)` hands the case's input and the candidate's prompt texts to the user's function
(`function(input, prompts) -> output`, or `(output, trace)`) in a worker process of its own, so a per-case time
limit can really stop it and a crash is that case's error. The function's model calls go to a loopback
OpenAI-compatible endpoint that reflexopt serves for the run (each worker gets its own base URL through
`OPENAI_BASE_URL`, which the openai SDK, litellm and most frameworks read). The endpoint forwards every call
through the run's task-model client, so the calls are cached (a re-run pays nothing), counted against
`--max-calls` and `--max-cost`, and costed, and it serves the model under test whatever model name the program
asks for (so `compare -m A -m B --pipeline ...` runs the whole application on each model). A connection the
program makes to anything else is seen by an audit hook in the worker and reported as the case's error: calls
that bypass the endpoint are never silently uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import PipelineSpec
from .data import Case
from .errors import ConfigError
from .models import ChatResult, ModelClient
from .promptset import PromptSet

WORKER = [sys.executable, "-m", "reflexopt.pipeline_worker"]


@dataclass
class _Slot:
    """One worker process and what the case it runs has spent on the endpoint."""

    n: int
    proc: asyncio.subprocess.Process | None = None
    calls: list[ChatResult] = field(default_factory=list)


class PipelineTask:
    """The user's program as the Task (see the module docstring)."""

    @property
    def renders(self) -> bool:
        """Whether the program builds its messages with reflexopt's rendering (`prompts[NAME].messages(text)`);
        only then do the structure operators (roles, demo turns) change what it sends."""
        return bool(self.rendered)

    def __init__(self, spec: PipelineSpec, client: ModelClient | None, *, concurrency: int | None = None) -> None:
        self.spec = spec
        self.client: ModelClient = client  # type: ignore[assignment]  # None only for check()
        self.names = tuple(n for n, _ in spec.prompts)
        self._concurrency = max(1, concurrency or min(4, client.concurrency if client else 1))
        self._slots: asyncio.Queue[_Slot] | None = None
        self._all: list[_Slot] = []
        self._runner: Any = None
        self._port = 0
        self._lock = asyncio.Lock()
        self.read: set[str] = set()  # prompt names the program read, over every case so far
        self.rendered: set[str] = set()  # ... and rendered into messages with reflexopt's structure
        self.cases_run = 0
        self.most_calls = 1  # the most endpoint calls one case has made (sizes the budget's reserve for test)

    @property
    def clients(self) -> Sequence[ModelClient]:
        return (self.client,)

    def check(self) -> None:
        """Import the user's module in a throwaway worker and check the function's signature, before any call."""
        import subprocess

        proc = subprocess.run([*WORKER, self.spec.target, "0"], input="", capture_output=True, text=True,
                              timeout=120, env=_env(1, 0))
        first = (proc.stdout.splitlines() or ['{"fatal": "the pipeline worker did not start"}'])[0]
        reply = json.loads(first)
        if "fatal" in reply:
            _fatal(str(reply["fatal"]))

    @property
    def concurrency(self) -> int:
        return self._concurrency

    # ------------------------------------------------------------ the endpoint
    async def _serve(self) -> None:
        from aiohttp import web

        async def chat(request: web.Request) -> web.Response:
            slot = self._all[int(request.match_info["slot"])]
            try:
                body = await request.json()
                messages = [{"role": str(m.get("role", "user")), "content": _text(m.get("content"))}
                            for m in body.get("messages", [])]
            except (ValueError, AttributeError, TypeError):
                return web.json_response({"error": {"message": "malformed request", "type": "invalid_request"}},
                                         status=400)
            res = await self.client.complete(messages, temperature=body.get("temperature"),
                                             max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"))
            slot.calls.append(res)
            if not res.ok:
                status = 429 if res.budget_exhausted else 502
                # reflexopt's client has retried already; tell the SDK not to (openai reads x-should-retry)
                return web.json_response({"error": {"message": res.error or "failed", "type": "reflexopt"}},
                                         status=status, headers={"x-should-retry": "false"})
            return web.json_response({
                "id": f"reflexopt-{len(slot.calls)}", "object": "chat.completion", "created": int(time.time()),
                "model": self.client.spec.id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": res.text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                          "total_tokens": res.prompt_tokens + res.completion_tokens}})

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": [{"id": self.client.spec.id, "object": "model"}]})

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/slot/{slot}/v1/chat/completions", chat)
        app.router.add_get("/slot/{slot}/v1/models", models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _start(self) -> None:
        async with self._lock:
            if self._slots is not None:
                return
            await self._serve()
            self._all = [_Slot(i) for i in range(self._concurrency)]
            self._slots = asyncio.Queue()
            for slot in self._all:
                self._slots.put_nowait(slot)

    async def _spawn(self, slot: _Slot) -> None:
        slot.proc = await asyncio.create_subprocess_exec(
            *WORKER, self.spec.target, str(self._port), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=_env(self._port, slot.n),
            limit=64 * 1024 * 1024)
        assert slot.proc.stdout is not None
        first = json.loads(await slot.proc.stdout.readline() or b'{"fatal": "the pipeline worker exited"}')
        if "fatal" in first:
            await self._kill(slot)
            _fatal(str(first["fatal"]))

    async def _kill(self, slot: _Slot) -> None:
        if slot.proc is not None and slot.proc.returncode is None:
            slot.proc.kill()
            with contextlib.suppress(Exception):
                await slot.proc.wait()
        slot.proc = None

    async def aclose(self) -> None:
        for slot in self._all:
            await self._kill(slot)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._slots = None

    # ------------------------------------------------------------ one case
    async def run(self, prompts: PromptSet, case: Case) -> ChatResult:
        await self._start()
        assert self._slots is not None
        slot = await self._slots.get()
        try:
            return await self._run_in(slot, prompts, case)
        finally:
            self._slots.put_nowait(slot)

    async def _run_in(self, slot: _Slot, prompts: PromptSet, case: Case) -> ChatResult:
        if slot.proc is None or slot.proc.returncode is not None:
            await self._spawn(slot)
        proc = slot.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        slot.calls = []
        start = time.perf_counter()
        request = {"input": case.input_text,
                   "prompts": {n: {"text": prompts[n].as_text(), "markdown": prompts[n].to_markdown()}
                               for n in self.names}}
        error: str | None = None
        reply: dict[str, Any] = {}
        try:
            proc.stdin.write((json.dumps(request, ensure_ascii=False) + "\n").encode())
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), self.spec.timeout_s)
            reply = json.loads(line) if line else {}
            if not line:
                error = "the pipeline's worker process died (see its stderr by running the function yourself)"
                await self._kill(slot)
        except asyncio.TimeoutError:
            error = f"the pipeline ran past its {self.spec.timeout_s:g} s limit on this case and was stopped"
            await self._kill(slot)
        except (BrokenPipeError, ConnectionResetError):
            error = "the pipeline's worker process died"
            await self._kill(slot)
        self.cases_run += 1
        self.read.update(reply.get("read") or [])
        self.rendered.update(reply.get("rendered") or [])
        calls = list(slot.calls)
        self.most_calls = max(self.most_calls, len(calls))
        if reply.get("bypass"):
            error = (f"the pipeline connected to {', '.join(reply['bypass'])} directly, not through reflexopt's "
                     "endpoint (OPENAI_BASE_URL): those calls are not counted, cached or capped; send every model "
                     "call through the client that reads OPENAI_BASE_URL")
        elif reply.get("error"):
            error = "the pipeline raised:\n" + str(reply["error"]).strip()
        exhausted = any(c.budget_exhausted for c in calls)
        paid = sum(1 for c in calls if not c.cached and not c.budget_exhausted)
        if exhausted:
            error = "budget exhausted"
        output = str(reply.get("output") or "")
        if error is None and not output.strip():
            error = "the pipeline returned an empty output"
        return ChatResult(output if error is None else "", self.client.spec.id, ok=error is None, error=error,
                          paid_calls=paid, trace=reply.get("trace"),
                          prompt_tokens=sum(c.prompt_tokens for c in calls),
                          completion_tokens=sum(c.completion_tokens for c in calls),
                          cost_usd=sum(c.cost_usd for c in calls), latency_s=time.perf_counter() - start,
                          cached=bool(calls) and all(c.cached for c in calls), budget_exhausted=exhausted)


def _env(port: int, slot: int) -> dict[str, str]:
    """A worker's environment: the endpoint as the OpenAI base URL (the openai SDK, litellm and most frameworks
    read these), and a placeholder key (the endpoint needs none; the real keys stay with reflexopt)."""
    url = f"http://127.0.0.1:{port}/slot/{slot}/v1"
    return {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_BASE": url, "OPENAI_API_KEY": "reflexopt-endpoint",
            "PYTHONUNBUFFERED": "1"}


def _fatal(text: str) -> None:
    """The worker's one-line refusal (`error: WHAT (fix: FIX)`) as reflexopt's error."""
    what, _, fix = text.removeprefix("error: ").rpartition(" (fix: ")
    raise ConfigError(what or text, fix=fix.rstrip(")") or "check --pipeline")


def _text(content: Any) -> str:
    """A message's content as text (OpenAI's list-of-parts form is joined)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)
