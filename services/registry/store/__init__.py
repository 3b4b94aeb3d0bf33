"""PostgreSQL access for the registry's schema, one module per concept; the schema's migrations."""

from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
