"""Persistent response cache (SQLite): the same model, messages, parameters and sample index are paid once.

Writes leave the caller's thread (the event loop): `put` queues the answer and a writer thread commits queued
answers in batches, one transaction each. A queued answer is already served by `get`. `flush` (called by
`close` and at interpreter exit) writes what is still queued, so only a hard kill can lose the last few."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputFileError
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
        with _damage_is_ours(self.path):
            self._connect()
        self._plock = threading.Lock()
        self._wake = threading.Condition(self._plock)
        self._pending: dict[str, tuple[Any, ...]] = {}  # queued answers, by key
        self._writing: dict[str, tuple[Any, ...]] = {}  # the batch being committed (still served by get)
        self._writer: threading.Thread | None = None
        self._closed = False
        _open.add(self)

    def _connect(self) -> None:
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
            " prompt_tokens INT, completion_tokens INT, cost REAL, created REAL DEFAULT (unixepoch()), latency REAL)"
        )
        if "latency" not in {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                self._db.execute("ALTER TABLE responses ADD COLUMN latency REAL")  # a cache file from before it
        self._db.commit()
        self._failed: Exception | None = None  # the writer thread's error, raised by the next put()
        # reads get their own connection: in WAL mode they never wait for the writer thread's commit (they did
        # on the shared connection, and that wait stalled the event loop)
        self._rlock = threading.Lock()
        self._rdb = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)

    def get(self, key: str) -> RawReply | None:
        with self._plock:
            queued = self._pending.get(key) or self._writing.get(key)
        if queued is not None:
            return RawReply(queued[2], queued[3], queued[4], queued[5], queued[6])
        with self._rlock:
            with _damage_is_ours(self.path):
                row = self._rdb.execute(
                    "SELECT text, prompt_tokens, completion_tokens, cost, latency FROM responses WHERE key=?", (key,)
                ).fetchone()
        return RawReply(row[0], row[1], row[2], row[3], row[4]) if row else None

    def put(self, key: str, model: str, reply: RawReply) -> None:
        """Queue an answer (with `reply.latency_s`, how long it took, when the caller measured it)."""
        row = (key, model, reply.text, reply.prompt_tokens, reply.completion_tokens, reply.cost_usd, reply.latency_s)
        with self._plock:
            if self._failed is not None:  # the writer could not commit (a full disk): the caller stops on it
                raise self._failed
            if self._closed:
                raise RuntimeError("the response cache is closed")
            self._pending[key] = row
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="reflexopt-cache", daemon=True)
                self._writer.start()
            self._wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self._plock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return
            try:
                self._write_batch()
            except Exception as e:  # noqa: BLE001 - kept for the next put(), which raises it in the caller's thread
                with self._plock:
                    self._failed = e
                return

    def _write_batch(self) -> None:
        """Commit everything queued now in one transaction (answers queued meanwhile wait for the next)."""
        with self._lock:
            with self._plock:
                batch, self._pending = self._pending, {}
                self._writing = batch
            try:
                if batch:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO responses (key, model, text, prompt_tokens, completion_tokens, cost,"
                        " latency) VALUES (?,?,?,?,?,?,?)", list(batch.values()))
                    self._db.commit()
            finally:
                with self._plock:
                    self._writing = {}

    def flush(self) -> None:
        """Write every queued answer now."""
        if self._pending and self._failed is None:
            self._write_batch()

    def close(self) -> None:
        with self._plock:
            self._closed = True
            self._wake.notify_all()
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()
        self.flush()
        with self._lock:
            self._db.close()
        with self._rlock:
            self._rdb.close()


@contextlib.contextmanager
def _damage_is_ours(path: Path) -> Iterator[None]:
    """A DatabaseError that is not a lock (OperationalError) means the file is damaged, or not SQLite at all."""
    try:
        yield
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as e:
        fix = (f"move it away (mv {path} {path}.damaged); the next command starts an empty cache, and a resumed run "
               "still pays nothing twice (each run keeps its own scored cases)")
        raise InputFileError(path, f"the response cache cannot be read ({e})", fix=fix) from e


_open: weakref.WeakSet[ResponseCache] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """At interpreter exit (also after Ctrl-C), no queued answer is lost."""
    for cache in list(_open):
        try:
            cache.flush()
        except Exception:  # noqa: BLE001 - a closed or broken cache has nothing left to save
            pass


_shared: dict[Path, ResponseCache] = {}
_shared_lock = threading.Lock()


def shared_cache() -> ResponseCache:
    """One cache connection per cache file per process (models tuned in parallel threads share it)."""
    path = home_dir() / "cache.sqlite"
    with _shared_lock:
        if path not in _shared:
            _shared[path] = ResponseCache(path)
        return _shared[path]
