"""The process that runs the user's pipeline function, one case at a time (`python -m reflexopt.pipeline_worker
FILE.py:FUNCTION PORT`). reflexopt starts one per concurrent case, talks to it over stdin and a private pipe,
and stops it when a case runs past its time limit.

Protocol: one JSON line per case in (`{"input": ..., "prompts": {name: text}}`), one JSON line out
(`{"output", "trace", "error", "read", "bypass"}`). The function's own prints go to stderr, never into the
protocol. Every outgoing connection is watched with an audit hook: one to anything but reflexopt's endpoint
(`127.0.0.1:PORT`) is a model call (or other request) that reflexopt could not count, cache or cap, and it is
reported with the case. Kept free of reflexopt's heavy imports: it starts once per worker.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reflexopt.current import reset, set_prompts

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class PromptText(str):
    """One tuned prompt: a str (instruction, then examples, then the answer cue) for programs that build their own
    messages, and `.messages(user_text)` for the chat messages reflexopt itself would send (instruction as system
    or user message, examples as chat turns or inline, the cue): small models follow demos as turns far better,
    and the structure operators then apply."""

    markdown: str
    rendered: set[str]
    name: str

    def messages(self, user_text: str) -> list[dict[str, str]]:
        from reflexopt.data import Case
        from reflexopt.prompt import parse_prompt

        self.rendered.add(self.name)
        return parse_prompt(self.markdown, self.name).render(Case(id="pipeline", input=user_text))


class Prompts(dict[str, PromptText]):
    """The candidate's prompts by name; remembers which names the function read, and which it rendered."""

    def __init__(self, prompts: dict[str, dict[str, str]]) -> None:
        self.read: set[str] = set()
        self.rendered: set[str] = set()
        texts = {}
        for name, p in prompts.items():
            t = PromptText(p["text"])
            t.markdown, t.rendered, t.name = p["markdown"], self.rendered, name
            texts[name] = t
        super().__init__(texts)

    def __getitem__(self, name: str) -> PromptText:
        self.read.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return super().get(name, default)


def load_function(target: str) -> Callable[..., Any]:
    """`FILE.py:FUNCTION` -> the function, or SystemExit(2) with one line naming the fix."""
    file, _, name = target.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise SystemExit(f"error: --pipeline {target}: {path} is not a file "
                         "(fix: give the path of your app's .py file)")
    sys.path.insert(0, str(path.parent.resolve()))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: --pipeline {target}: {path} cannot be imported (fix: give a .py file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's module failing to import is their error to see
        raise SystemExit(f"error: --pipeline {target}: importing {path.name} failed: {type(e).__name__}: {e} "
                         "(fix: run `python FILE.py` to see the error)") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SystemExit(f"error: --pipeline {target}: {path.name} has no function {name!r} "
                         "(fix: name a function defined in the file)")
    try:
        inspect.signature(fn).bind("input", {})
    except TypeError:
        raise SystemExit(f"error: --pipeline {target}: {name}{inspect.signature(fn)} cannot be called as "
                         f"{name}(input, prompts) (fix: define def {name}(input, prompts): ...)") from None
    return fn  # type: ignore[no-any-return]


def main() -> None:
    target, port = sys.argv[1], int(sys.argv[2])
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # the function's prints go to stderr
    sys.stdout = sys.stderr
    bypass: list[str] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect" and len(args) >= 2 and isinstance(args[1], tuple) and len(args[1]) >= 2:
            host, dport = str(args[1][0]), args[1][1]
            if not (host in LOOPBACK and dport == port):
                bypass.append(f"{host}:{dport}")

    sys.addaudithook(audit)
    try:
        fn = load_function(target)
    except SystemExit as e:
        protocol.write(json.dumps({"fatal": str(e.code)}) + "\n")
        return
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        prompts = Prompts(req["prompts"])
        bypass.clear()
        out: dict[str, Any] = {"output": "", "trace": None, "error": None}
        token = set_prompts(prompts)
        try:
            res = fn(req["input"], prompts)
            if isinstance(res, tuple) and len(res) == 2:
                res, trace = res
                out["trace"] = json.loads(json.dumps(trace, default=str))
            out["output"] = "" if res is None else str(res)
        except Exception:  # noqa: BLE001 - the case's error, with its traceback
            out["error"] = traceback.format_exc(limit=8)[-4000:]
        finally:
            reset(token)
        out["read"] = sorted(prompts.read)
        out["rendered"] = sorted(prompts.rendered)
        out["bypass"] = sorted(set(bypass))
        protocol.write(json.dumps(out, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
