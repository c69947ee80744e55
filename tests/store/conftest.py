"""Parametrize store tests over the three adapters (memory, SQLite file, PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mpp.session.ports import Store
from mpp.store.open import open_store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DSN for a fresh, empty store of each kind."""
    if request.param == "memory":
        return "memory:"
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    dsn: str = request.getfixturevalue("pg_fresh_dsn")
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
def durable_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Only the adapters that are durable and shareable between processes."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    dsn: str = request.getfixturevalue("pg_fresh_dsn")
    return dsn


@pytest.fixture
def store(store_dsn: str) -> Iterator[Store]:
    s = open_store(store_dsn)
    try:
        yield s
    finally:
        s.close()
