"""Hotkey signatures already used, shared by every identity replica: an exact replay is refused
whichever replica sees it (issue 17).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signature_uses",
        sa.Column("digest", sa.LargeBinary(), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Expired rows are deleted by range, now and then (services/identity/store.py).
    op.create_index("signature_uses_expires_at", "signature_uses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("signature_uses_expires_at", table_name="signature_uses")
    op.drop_table("signature_uses")
