"""`reflexopt serve`, through the real path: a real optimize run in one process, the view in another, fetched
over HTTP like a browser would. The page of a running run shows its trial count rising; no request reaches a
file outside reflexopt's folders; binding beyond loopback warns; a port in use is one line."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeOpenAI, free_port, label_model, label_rows, require, write_jsonl


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "REFLEXOPT_HOME": str(home), "OPENAI_API_KEY": "sk-test-0000000000",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def _get(port: int, path: str, host: str | None = None, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    """A raw request: the path goes out exactly as written (no client-side normalisation of `..`)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.putrequest(method, path, skip_host=True)
    c.putheader("Host", host or f"127.0.0.1:{port}")
    c.endheaders()
    r = c.getresponse()
    body = r.read().decode("utf-8", "replace")
    c.close()
    return r.status, body, {k.lower(): v for k, v in r.getheaders()}


@pytest.fixture
def view(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[str]]]:
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "reflexopt", "serve", "--port", str(port), "--refresh", "1"],
                            env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert f"127.0.0.1:{port}" in line, line
    yield port, home, proc
    assert _stop(proc) == 0  # SIGTERM stops it cleanly


def _stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, then the pipes drained and closed (killed if it has not stopped in 30 s, which fails the test)."""
    proc.terminate()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode


def _trials(page: str) -> int:
    m = re.search(r"<b id=trials>(\d+)</b>", page)
    assert m, page[:500]
    return int(m.group(1))


def test_a_running_runs_page_shows_its_trials_rising(view: tuple[int, Path, subprocess.Popen[str]],
                                                     openai_server: FakeOpenAI, tmp_path: Path) -> None:
    port, home, _ = view

    def slow(req: dict[str, object]) -> str:
        time.sleep(0.04)
        return label_model(req["messages"])  # type: ignore[arg-type]

    openai_server.responder = slow
    write_jsonl(tmp_path / "d.jsonl", label_rows(40))
    (tmp_path / "p.md").write_text("Look at this: {input}\n")
    run = subprocess.Popen([sys.executable, "-m", "reflexopt", "optimize", str(tmp_path / "d.jsonl"),
                            str(tmp_path / "p.md"), "-m", "openai/t", "--api-base", openai_server.url, "--metric",
                            "contains", "--max-trials", "8", "--patience", "8", "--no-prune", "--concurrency", "1",
                            "--json"], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[int] = []
        key = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run.poll() is None:
            status, index, headers = _get(port, "/")
            assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
            m = re.search(r"href='/run/(runs/[^']+)'", index)
            if m:
                key = m.group(1)
                status, page, _ = _get(port, f"/run/{key}")
                assert status == 200
                if "running" in page and "<b id=trials>" in page:
                    assert "http-equiv=refresh" in page  # the browser reloads a running run's page
                    seen.append(_trials(page))
                    if len(set(seen)) >= 2:
                        break
            time.sleep(0.3)
        assert len(seen) >= 2 and seen[-1] > seen[0], seen
    finally:
        out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    status, page, _ = _get(port, f"/run/{key}")
    assert status == 200 and "http-equiv=refresh" not in page and "best test" in page  # finished: the full report


def test_no_request_reads_outside_the_runs(view: tuple[int, Path, subprocess.Popen[str]], tmp_path: Path) -> None:
    port, home, _ = view
    (home / "secret.txt").write_text("TOP-SECRET-1")
    (tmp_path / "secret.txt").write_text("TOP-SECRET-2")
    run = home / "runs" / "r1"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"id": "m"}, "data": {"path": "d.jsonl"},
                                                 "prompt_path": str(tmp_path / "secret.txt")}))
    status, page, _ = _get(port, "/run/runs/r1")  # a run whose starting prompt was never saved: not read
    assert status == 200 and "TOP-SECRET" not in page
    for path in ["/run/../secret.txt", "/run/runs/../../secret.txt", "/run/runs/r1/../../../secret.txt",
                 "/run/%2e%2e/secret.txt", "/run/runs%2f..%2f..%2fsecret.txt", "/run/runs/r1/config.json",
                 "/../secret.txt", "/run//etc/passwd", "/run/" + str(tmp_path / "secret.txt"),
                 "/run/runs/r1%00", "/secret.txt"]:
        status, body, _ = _get(port, path)
        assert status in (400, 404), (path, status)
        assert "TOP-SECRET" not in body and "root:" not in body, path
    assert _get(port, "/", method="POST")[0] == 405  # read-only
    assert _get(port, "/", method="DELETE")[0] == 405
    assert _get(port, "/", host="evil.example:80")[0] == 403  # DNS rebinding: another site's name


def test_other_addresses_warn_and_a_busy_port_is_one_line(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = subprocess.run([sys.executable, "-m", "reflexopt", "serve", "--port", str(port)], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], r.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "reflexopt", "serve", "--host", "0.0.0.0", "--port", str(port)],
                            env=_env(tmp_path), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("warning:") and "anyone who can reach it can read" in first
        assert f":{port}/" in proc.stderr.readline()
    finally:
        _stop(proc)


def test_optuna_dashboard_opens_a_runs_study(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """The README's note: `optuna-dashboard sqlite:///RUN_DIR/study.db` shows the run's trials."""
    require("optuna_dashboard", "the README documents optuna-dashboard on a run's study")
    openai_server.responder = lambda req: label_model(req["messages"])
    write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Look at this: {input}\n")
    r = subprocess.run([sys.executable, "-m", "reflexopt", "optimize", str(tmp_path / "d.jsonl"),
                        str(tmp_path / "p.md"), "-m", "openai/t", "--api-base", openai_server.url, "--metric",
                        "contains", "--max-trials", "3", "--json"], env=_env(tmp_path / "home"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    port = free_port()
    dash = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"),
                             f"sqlite:///{Path(result['run_dir']) / 'study.db'}", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, body = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            try:
                status, body, _ = _get(port, "/api/studies")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        summaries = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in summaries] == [result["study"]]
        status, body, _ = _get(port, f"/api/studies/{summaries[0]['study_id']}")
        trials = json.loads(body)["trials"]
        assert status == 200 and len(trials) == result["trials"] + 1  # the baseline is trial 0
    finally:
        _stop(dash)


def test_an_eval_is_kept_in_the_history_and_shown_in_the_view(view: tuple[int, Path, subprocess.Popen[str]],
                                                              openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """An eval leaves its folder in the run history: `runs list` shows it (its score, and with --against the old
    prompt's score and whether the change is significant), `runs show` its summary and prompt, `runs diff` the
    cases two evals scored differently, `report` and the view its page. Bad input leaves no folder."""
    port, home, _ = view
    openai_server.responder = lambda req: label_model(req["messages"])  # type: ignore[arg-type]
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(20))
    (tmp_path / "old.md").write_text("Look at this: {input}\n")
    (tmp_path / "new.md").write_text("Say positive or negative: {input}\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reflexopt", *args], env=_env(home), capture_output=True,
                              text=True, timeout=240)

    base = ["-m", "openai/t", "--api-base", openai_server.url, "--metric", "contains", "--json"]
    p = cli("eval", str(data), str(tmp_path / "new.md"), "--against", str(tmp_path / "old.md"), *base)
    assert p.returncode == 0, p.stderr
    first = Path(json.loads(p.stdout)["run_dir"])
    assert first.parent == home / "runs" and first.name.startswith("eval-")
    p = cli("eval", str(data), str(tmp_path / "old.md"), *base)
    second = Path(json.loads(p.stdout)["run_dir"])
    runs = {r["id"]: r for r in json.loads(cli("runs", "list", "--json").stdout)}
    r = runs[first.name]
    assert (r["kind"], r["status"], r["model"]) == ("eval", "done", "openai/t")
    assert r["dataset"] == f"{tmp_path.name}/d.jsonl"
    assert (r["baseline"], r["best"], r["significant"]) == (0.0, 1.0, True)
    assert (runs[second.name]["best"], runs[second.name]["baseline"]) == (0.0, None)
    shown = json.loads(cli("runs", "show", first.name, "--json").stdout)
    assert shown["eval"]["summary"]["score"] == 1.0 and "Say positive or negative" in shown["best_prompt"]
    table = cli("runs", "show", first.name).stdout
    assert "new.md on d.jsonl" in table and "Say positive or negative" in table
    d = json.loads(cli("runs", "diff", first.name, second.name, "--json").stdout)
    assert (d["common_test_cases"], d["worse_in_b"], d["better_in_b"]) == (20, 20, 0)
    assert "-Say positive or negative" in d["prompt_diff"] and "+Look at this" in d["prompt_diff"]
    assert cli("report", first.name, "-o", str(tmp_path / "e.html")).returncode == 0
    html = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert "reflexopt eval: new.md on d.jsonl" in html and "0 cases worse, 20 better" in html
    status, index, _ = _get(port, "/")
    assert status == 200 and f"/run/runs/{first.name}" in index and ">eval<" in index
    status, page, _ = _get(port, f"/run/runs/{first.name}")
    assert status == 200 and "0 cases worse, 20 better" in page and "all runs" in page
    (tmp_path / "bad.md").write_text("Say it: {nowhere}\n")
    before = set((home / "runs").iterdir())
    p = cli("eval", str(data), str(tmp_path / "bad.md"), *base)
    assert p.returncode != 0 and "nowhere" in p.stderr and set((home / "runs").iterdir()) == before
