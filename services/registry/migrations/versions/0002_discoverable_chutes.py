"""What anonymous callers may list, as an indexed column.

`GET /chutes/` shows anonymous callers public chutes and affine ones (by name). Filtering on
`public OR lower(name) LIKE '%affine%'` scanned every chute row (code and all) to count them; a
stored generated column with a partial index makes the count an index-only scan and the page an
ordered index scan.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE chutes ADD COLUMN discoverable boolean NOT NULL "
        "GENERATED ALWAYS AS (public OR lower(name) LIKE '%affine%') STORED"
    )
    op.execute(
        "CREATE INDEX chutes_discoverable ON chutes (invocation_count DESC, chute_id) WHERE discoverable"
    )
    op.execute("CREATE INDEX chutes_owner_invocations ON chutes (user_id, invocation_count DESC, chute_id)")


def downgrade() -> None:
    op.execute("DROP INDEX chutes_owner_invocations")
    op.execute("DROP INDEX chutes_discoverable")
    op.execute("ALTER TABLE chutes DROP COLUMN discoverable")
