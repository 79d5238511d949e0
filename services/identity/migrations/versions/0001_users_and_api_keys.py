"""Users, API keys and their scopes, registration tokens.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("hotkey", sa.Text, unique=True),
        sa.Column("coldkey", sa.Text),
        sa.Column("payment_address", sa.Text, nullable=False, server_default=""),
        sa.Column("fingerprint_hash", sa.Text, unique=True),
        sa.Column("permissions_bitmask", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("netuids", postgresql.ARRAY(sa.Integer), nullable=False, server_default="{}"),
        sa.Column("balance", sa.Float, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Usernames are unique case-insensitively, as the real API treats them.
    op.create_index("users_username_lower", "users", [sa.text("lower(username)")], unique=True)

    op.create_table(
        "api_keys",
        sa.Column("api_key_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, sa.ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.true()),
        # argon2 hash of the whole key; the plaintext is shown once, at creation.
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("user_id", "name", name="api_keys_user_name"),
    )
    op.create_table(
        "api_key_scopes",
        sa.Column("scope_id", sa.Text, primary_key=True, server_default=sa.text("gen_random_uuid()::text")),
        sa.Column(
            "api_key_id", sa.Text, sa.ForeignKey("api_keys.api_key_id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("object_type", sa.Text, nullable=False),
        sa.Column("object_id", sa.Text),
        sa.Column("action", sa.Text),
    )
    op.create_index("api_key_scopes_key", "api_key_scopes", ["api_key_id"])

    op.create_table(
        "registration_tokens",
        sa.Column("token", sa.Text, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("used_by", sa.Text, sa.ForeignKey("users.user_id", ondelete="SET NULL")),
    )


def downgrade() -> None:
    op.drop_table("registration_tokens")
    op.drop_table("api_key_scopes")
    op.drop_table("api_keys")
    op.drop_index("users_username_lower", "users")
    op.drop_table("users")
