"""A full disk, made real: a small tmpfs mounted for the test (the test fails, never skips, when it cannot
mount one). Every command stops in one line with exit 2, no file the user had is damaged, and the run resumes
once there is space again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeOpenAI, label_model, label_rows, write_jsonl


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    assert r.returncode == 0, f"cannot mount a small tmpfs (needs root): {r.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> None:
    """Use every free byte of the disk."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFLEXOPT_HOME": str(home), "OPENAI_API_KEY": "sk-test-000000000000",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "reflexopt", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Exception in thread" not in r.stderr, r.stderr[-3000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


@pytest.fixture
def task(openai_server: FakeOpenAI, tmp_path: Path) -> list[str]:
    openai_server.responder = lambda req: label_model(req["messages"])
    write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Look at this: {input}\n")
    return [str(tmp_path / "d.jsonl"), str(tmp_path / "p.md"), "-m", "openai/t", "--api-base", openai_server.url,
            "--metric", "contains"]


def test_a_run_that_fills_the_disk_stops_in_one_line_and_resumes(small_disk: Path, task: list[str]) -> None:
    """optimize exited 1 with a 96-404-line traceback (the study's commit, the cache's writer thread)."""
    home = small_disk / "home"
    r = _cli(home, "optimize", *task, "--max-trials", "30", "--patience", "30", "--json")
    line = _one_error_line(r)
    assert "the disk is full" in line and str(home) in line and "--resume" in line
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    r = _cli(home, "optimize", "--resume", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["trials"] == 30


def test_a_prompt_tuned_in_place_on_a_full_disk_is_kept_whole(small_disk: Path, task: list[str],
                                                               tmp_path: Path) -> None:
    """`optimize ... -o PROMPT` on a full disk replaced the user's prompt by the first 4,096 bytes of the new
    one, exited 1 with a traceback and wrote no summary.json."""
    prompt = small_disk / "prompt.md"
    original = "Look at this: {input}\n" + "# notes the user keeps\n" * 170  # about 4 KB
    prompt.write_text(original)
    _fill(small_disk)
    r = _cli(tmp_path / "home", "optimize", task[0], str(prompt), *task[2:], "--max-trials", "2", "-o",
             str(prompt), "--json")
    line = _one_error_line(r)
    assert f"could not write -o {prompt}" in line and "best.md" in line
    assert prompt.read_text() == original
    (run,) = (tmp_path / "home" / "runs").iterdir()
    assert (run / "summary.json").exists() and (run / "best.md").exists()


def test_eval_output_on_a_full_disk_keeps_the_old_file(small_disk: Path, task: list[str], tmp_path: Path) -> None:
    out = small_disk / "cases.jsonl"
    r = _cli(tmp_path / "home", "eval", *task, "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    before = out.read_text()
    _fill(small_disk)
    r = _cli(tmp_path / "home", "eval", *task[:2], "-m", "openai/other", *task[4:], "-o", str(out), "--json")
    line = _one_error_line(r)
    assert "the disk is full" in line and str(small_disk) in line
    assert out.read_text() == before
