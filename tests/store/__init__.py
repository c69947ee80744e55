"""Store port contract tests (memory, SQLite, PostgreSQL)."""
