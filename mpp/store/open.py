"""`open_store(dsn)`: pick a Store adapter from a DSN.

- ``memory:``                             → MemoryStore (tests only, not durable)
- ``sqlite:///abs/path.db`` (file-URI style: the path after ``sqlite://`` is absolute, so
  ``sqlite:////abs/path.db`` means the same), ``sqlite:rel/path.db`` or a plain path → SqliteStore
- ``postgresql://…`` / ``postgres://…``    → PostgresStore (any libpq URL)
"""

from __future__ import annotations

from mpp.session.ports import Store


def open_store(dsn: str) -> Store:
    if dsn in ("memory:", "memory://"):
        from mpp.store.memory import MemoryStore

        return MemoryStore()
    if dsn.startswith(("postgresql://", "postgres://")):
        # Imported lazily so SQLite-only deployments never load psycopg.
        from mpp.store.postgres import PostgresStore

        return PostgresStore(dsn)
    from mpp.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(dsn))


def sqlite_path(dsn: str) -> str:
    """The file path a SQLite DSN names (see the module docstring)."""
    if dsn.startswith("sqlite://"):
        rest = dsn[len("sqlite://") :]
        if not rest.startswith("/"):
            # sqlite://host/... has no meaning for a local file; refuse rather than guess.
            raise ValueError("sqlite:// DSNs take an absolute path: sqlite:///abs/path.db")
        return "/" + rest.lstrip("/")
    if dsn.startswith("sqlite:"):
        return dsn[len("sqlite:") :]
    if "://" in dsn:
        raise ValueError(f"unsupported store DSN scheme: {dsn.split('://', 1)[0]}://")
    if not dsn:
        raise ValueError("empty store DSN")
    return dsn
