"""Alembic environment of the attestation service: its own schema, its own version table."""

from services.kit.migrations import run_env

run_env()
