"""Several worker processes on one study in a real PostgreSQL: every trial evaluated once, none lost."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, require, write_jsonl
from test_resume import _reply

pytestmark = pytest.mark.postgres


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """REFLEXOPT_TEST_PG if set (CI starts a server), else a throwaway cluster on a free loopback port."""
    require("psycopg", "the distributed test uses a real PostgreSQL")
    if os.environ.get("REFLEXOPT_TEST_PG"):
        yield os.environ["REFLEXOPT_TEST_PG"]
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    if not initdb:
        _unavailable("no PostgreSQL server installed (apt-get install postgresql)")
    bindir = Path(initdb).parent  # type: ignore[arg-type]
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="reflexopt-pg-"))
    os.chmod(data, 0o755)
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"),
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "REFLEXOPT_HOME": str(home), "OPENAI_API_KEY": "sk-test-0000000000000000"}


def test_workers_share_one_study(pg_url: str, openai_server: FakeOpenAI, tmp_path: Path) -> None:
    import optuna

    rows = [{"input": f"{'good' if i % 2 else 'bad'} widget {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(60)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Look at this.\n")

    def slow_reply(req: dict[str, object]) -> str:
        time.sleep(0.03)  # let the processes interleave
        return _reply(req)  # type: ignore[arg-type]

    openai_server.responder = slow_reply
    max_trials = 12
    run_dir = tmp_path / "run"
    coord = subprocess.Popen(
        [sys.executable, "-m", "reflexopt", "optimize", str(data), str(prompt), "-m", "openai/test", "--api-base",
         openai_server.url, "--metric", "contains", "--storage", pg_url, "--max-trials", str(max_trials),
         "--patience", "50", "--run-dir", str(run_dir), "--json", "--seed", "3"],
        env=_env(tmp_path / "h0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen([sys.executable, "-m", "reflexopt", "worker", "--storage", pg_url, "--wait", "90",
                                 "--json"], env=_env(tmp_path / f"h{i}"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    out, errs = coord.communicate(timeout=600)
    assert coord.returncode == 0, errs
    result = json.loads(out)
    worker_reports = []
    for w in workers:
        wout, werr = w.communicate(timeout=300)
        assert w.returncode == 0, werr
        worker_reports += json.loads(wout)

    storage = optuna.storages.RDBStorage(pg_url)
    trials = optuna.load_study(study_name=result["study"], storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    assert not [t for t in trials if t.state.name == "RUNNING"]

    def attrs(t: Any) -> dict[str, Any]:  # a finished trial's candidate is packed in one attribute
        return {**t.user_attrs, **t.user_attrs.get("reflexopt", {})}

    evaluated = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and attrs(t).get("candidate")
                 != "baseline"]
    skipped = [t for t in trials if "skipped" in t.user_attrs]
    lost = [t for t in trials if t.state.name == "FAIL" and "skipped" not in t.user_attrs]
    assert len(evaluated) == max_trials and not lost
    cands = [attrs(t)["candidate"] for t in evaluated]
    assert len(set(cands)) == len(cands) == max_trials  # none duplicated
    assert all(t.state.name == "FAIL" for t in skipped)
    by = {attrs(t)["worker"] for t in evaluated}
    assert len(by) >= 2, f"only {by} evaluated trials"
    assert sum(r["trials"] for r in worker_reports) >= 1  # the workers did part of the search
    assert result["trials"] == max_trials

    # the best prompt agrees with the store
    from reflexopt.pool import from_study, select
    from reflexopt.search import Search
    from reflexopt.worker import run_worker  # noqa: F401  (import check: the worker's code path)

    with Search(pg_url, result["study"]) as search:
        records, min_gain = search.records(), float(search.attrs()["min_gain"])
    summary = json.loads((run_dir / "summary.json").read_text())
    from reflexopt.config import OptimizeConfig
    from reflexopt.data import load_dataset, split

    cfg = OptimizeConfig.model_validate(json.loads((run_dir / "config.json").read_text()))
    val = list(split(load_dataset(cfg.data.path), cfg.split, seed=cfg.seed).val)
    sel = select(from_study(records, val), len(val), min_gain)
    assert summary["best_candidate"] == sel.best.id
    assert (run_dir / "best.md").read_text() == sel.best.prompt.to_markdown() == summary["best_prompt"]
    exported = {json.loads(x)["id"] for x in (run_dir / "candidates.jsonl").read_text().splitlines()}
    assert set(cands) <= exported
