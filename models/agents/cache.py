"""Vote cache: a reasoning path already paid for is never asked for again.

Key: (agent config_key, pair content hash, path index). The config key changes with the model,
prompt and sampling settings; the content hash changes with the query, the document fields and
the retrieved knowledge. So a re-run only calls agents for paths it has not seen, and an edited
document or prompt is judged afresh.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Protocol, runtime_checkable

from .base import PARSE_ERROR, STATUS_ABSTAIN, STATUS_OK, ReasoningPath

CacheKey = tuple[str, str, int]  # (config_key, pair content hash, path index)


@runtime_checkable
class VoteCache(Protocol):
    def get_many(self, keys: list[CacheKey]) -> dict[CacheKey, ReasoningPath]: ...

    def put_many(self, items: dict[CacheKey, ReasoningPath]) -> None: ...


def should_cache(path: ReasoningPath) -> bool:
    """Only what the model itself said is kept: a vote, an abstention, or an answer in the wrong form
    (the same request gets the same answer). A transient failure (network, 5xx, timeout) and a refused
    request (a bad key, a redirect, an unknown model) are no answer: the next run asks again."""
    if path.status in (STATUS_OK, STATUS_ABSTAIN):
        return True
    return (path.error or "").startswith(PARSE_ERROR)


class InMemoryVoteCache:
    """For tests and one-off runs."""

    def __init__(self) -> None:
        self._paths: dict[CacheKey, ReasoningPath] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: list[CacheKey]) -> dict[CacheKey, ReasoningPath]:
        with self._lock:
            return {key: self._paths[key] for key in keys if key in self._paths}

    def put_many(self, items: dict[CacheKey, ReasoningPath]) -> None:
        with self._lock:
            self._paths.update(items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths)


class SqliteVoteCache:
    """File-backed cache (the pipeline passes SERM_HOME/state/agent_cache.sqlite).

    One connection guarded by a lock: agents run in threads, and SQLite writes are serialised
    anyway. WAL mode so a reader (a notebook, another run) does not block the annotator.
    """

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS reasoning_paths (
            config_key   TEXT    NOT NULL,
            content_hash TEXT    NOT NULL,
            path_index   INTEGER NOT NULL,
            path_json    TEXT    NOT NULL,
            created_at   REAL    NOT NULL,
            PRIMARY KEY (config_key, content_hash, path_index)
        ) WITHOUT ROWID
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock, self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(self._SCHEMA)

    def get_many(self, keys: list[CacheKey]) -> dict[CacheKey, ReasoningPath]:
        found: dict[CacheKey, ReasoningPath] = {}
        if not keys:
            return found
        with self._lock:
            # Chunked IN-queries per agent config: one round trip per few hundred keys.
            by_config: dict[tuple[str, int], list[str]] = {}
            for config_key, content_hash, path_index in keys:
                by_config.setdefault((config_key, path_index), []).append(content_hash)
            for (config_key, path_index), hashes in by_config.items():
                for start in range(0, len(hashes), 500):
                    chunk = hashes[start : start + 500]
                    placeholders = ",".join("?" * len(chunk))
                    rows = self._conn.execute(
                        "SELECT content_hash, path_json FROM reasoning_paths "
                        f"WHERE config_key = ? AND path_index = ? AND content_hash IN ({placeholders})",
                        [config_key, path_index, *chunk],
                    ).fetchall()
                    for content_hash, path_json in rows:
                        found[(config_key, content_hash, path_index)] = ReasoningPath(**json.loads(path_json))
        return found

    def put_many(self, items: dict[CacheKey, ReasoningPath]) -> None:
        if not items:
            return
        now = time.time()
        rows = [
            (config_key, content_hash, int(path_index), json.dumps(asdict(path)), now)
            for (config_key, content_hash, path_index), path in items.items()
        ]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO reasoning_paths VALUES (?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM reasoning_paths").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "SqliteVoteCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
