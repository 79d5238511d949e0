"""Alembic environment of the registry service: its own schema, its own version table."""

from services.kit.migrations import run_env

run_env()
