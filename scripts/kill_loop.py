"""kill -9 loop: start `reflexopt optimize` against a loopback OpenAI-compatible server, kill it with SIGKILL at
random moments (some within its first second), resume, and repeat until the run finishes.

The server sees every request. A request is *re-paid* when the same messages were already answered, and the
answer was sent more than `--settle` seconds before the kill that followed it (so the client had time to record
it). The script checks that no call is re-paid that way, that the run finishes with a summary, and that resume
needs no manual repair.

    python scripts/kill_loop.py --kills 25            # the campaign (results in docs/reliability.md)
    python scripts/kill_loop.py --kills 3 --quiet     # what CI runs (tests/test_kill_loop.py)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Server:
    """Answers like a sentiment model that does well once the prompt names the labels; logs every request."""

    def __init__(self, latency_s: float) -> None:
        self.seen: list[tuple[str, float, float]] = []  # (request key, received, answered)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                got = time.monotonic()
                req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                msgs = req.get("messages", [])
                key = hashlib.sha256(json.dumps([msgs, req.get("max_tokens")], sort_keys=True).encode()).hexdigest()
                text = " ".join(str(m.get("content", "")) for m in msgs)
                item = str(msgs[-1].get("content", "")) if msgs else ""
                if "<prompt>" in text or "failing" in text.lower():
                    answer = "no idea"
                elif "positive" in text and "negative" in text:
                    answer = "positive" if "good" in item else "negative"
                else:
                    answer = "a product"
                time.sleep(latency_s)
                body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                except OSError:
                    return
                with outer.lock:
                    outer.seen.append((key, got, time.monotonic()))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    srv = Server(args.latency)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "d.jsonl"
        data.write_text("".join(json.dumps({"input": f"{'good' if i % 2 else 'bad'} item {i}",
                                            "ideal": "positive" if i % 2 else "negative"}) + "\n"
                                for i in range(args.rows)))
        (work / "p.md").write_text("Look at this.\n")
        run_dir = work / "run"
        env = {**os.environ, "REFLEXOPT_HOME": str(work / "home"), "OPENAI_API_KEY": "sk-kill-loop-00000000"}
        base = [sys.executable, "-m", "reflexopt", "optimize"]
        fresh = [str(data), str(work / "p.md"), "-m", "openai/m", "--api-base", srv.url, "--metric", "contains",
                 "--max-trials", "40", "--patience", "40", "--run-dir", str(run_dir), "--json"]
        kills: list[float] = []
        outcome = ""
        for attempt in range(args.kills + 50):
            cmd = base + (["--resume", "--run-dir", str(run_dir), "--json"] if (run_dir / "config.json").exists()
                          else fresh)
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if len(kills) < args.kills:
                # a third of the kills land in the first second (start-up, run folder creation)
                wait = rng.uniform(0.0, 1.0) if len(kills) % 3 == 0 else rng.uniform(1.0, 9.0)
                try:
                    p.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    p.send_signal(signal.SIGKILL)
                    p.wait()
                    kills.append(time.monotonic())
                    continue
            out, err = p.communicate(timeout=600)
            if p.returncode != 0:
                outcome = f"attempt {attempt} exited {p.returncode}: {err.strip()[-800:]}"
                break
            summary = json.loads(out)
            outcome = f"finished: best test {summary['best_test']}, {summary['trials']} trials"
            break
        first: dict[str, float] = {}
        repaid = 0
        in_flight_repeats = 0
        for key, _got, answered in sorted(srv.seen, key=lambda x: x[1]):
            if key not in first:
                first[key] = answered
                continue
            next_kill = min((k for k in kills if k >= first[key]), default=None)
            if next_kill is not None and next_kill - first[key] < args.settle:
                in_flight_repeats += 1  # answered just before a kill: it may not have been recorded yet
            else:
                repaid += 1
        report = {"kills": len(kills), "requests": len(srv.seen), "unique": len(first), "repaid": repaid,
                  "repeated_in_flight": in_flight_repeats, "outcome": outcome,
                  "summary_written": (run_dir / "summary.json").exists()}
        print(json.dumps(report))
        if not args.quiet:
            print(f"{len(kills)} kills, {len(srv.seen)} requests ({len(first)} unique), {repaid} re-paid, "
                  f"{in_flight_repeats} repeated after being in flight at a kill; {outcome}", file=sys.stderr)
        ok = repaid == 0 and report["summary_written"] and outcome.startswith("finished")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
