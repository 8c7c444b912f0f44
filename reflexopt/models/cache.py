"""Persistent response cache (SQLite): the same model, messages, parameters and sample index are paid once."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..paths import home_dir
from .base import RawReply


def cache_key(model_key: str, messages: list[dict[str, str]], params: dict[str, Any], sample: int) -> str:
    blob = json.dumps({"m": model_key, "msg": messages, "p": params, "s": sample}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or home_dir() / "cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        for attempt in range(20):  # another process may be creating the same file right now
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # no fsync per answer; a killed process loses none
                break
            except sqlite3.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.1 * (attempt + 1))
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, text TEXT,"
            " prompt_tokens INT, completion_tokens INT, cost REAL, created REAL DEFAULT (unixepoch()))"
        )
        self._db.commit()

    def get(self, key: str) -> RawReply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, cost FROM responses WHERE key=?", (key,)
            ).fetchone()
        return RawReply(row[0], row[1], row[2], row[3]) if row else None

    def put(self, key: str, model: str, reply: RawReply) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, text, prompt_tokens, completion_tokens, cost)"
                " VALUES (?,?,?,?,?,?)",
                (key, model, reply.text, reply.prompt_tokens, reply.completion_tokens, reply.cost_usd),
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


_shared: dict[Path, ResponseCache] = {}
_shared_lock = threading.Lock()


def shared_cache() -> ResponseCache:
    """One cache connection per cache file per process (models tuned in parallel threads share it)."""
    path = home_dir() / "cache.sqlite"
    with _shared_lock:
        if path not in _shared:
            _shared[path] = ResponseCache(path)
        return _shared[path]
