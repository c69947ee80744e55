"""Test-suite wiring: real anvil (Tempo mode) and real PostgreSQL fixtures (tests/fixtures)."""

pytest_plugins = ["tests.fixtures.devnet", "tests.fixtures.postgres"]
