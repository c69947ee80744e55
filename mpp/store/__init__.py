"""The Store port adapters: in-memory (tests), SQLite (default, embedded, WAL), PostgreSQL.

`open_store(dsn)` picks one from a DSN ("memory:", "sqlite:///path" or a path, "postgresql://…").
The SQLite and PostgreSQL classes are imported from their modules (mpp.store.sqlite,
mpp.store.postgres) so that importing this package never loads psycopg.
"""

from mpp.store.memory import MemoryStore
from mpp.store.open import open_store

__all__ = ["MemoryStore", "open_store"]
