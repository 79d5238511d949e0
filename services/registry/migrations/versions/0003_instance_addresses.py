"""Instance addresses, and a notification on every change of an instance or of a chute's route.

The registry is the gateway's control plane (services/registry/routing.py): it listens on
`registry_routing` and pushes the named chute's cluster and endpoints to Envoy, so whoever
changes an instance row (a miner, a deletion cascading from its chute, an operator) changes
routing with it.

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
    op.add_column("instances", sa.Column("host", sa.Text(), nullable=True))
    op.add_column("instances", sa.Column("port", sa.Integer(), nullable=True))
    op.execute(
        """
        CREATE FUNCTION announce_routing() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('registry_routing', OLD.chute_id);
          ELSE
            PERFORM pg_notify('registry_routing', NEW.chute_id);
          END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER announce_instance_routing AFTER INSERT OR UPDATE OR DELETE ON instances "
        "FOR EACH ROW EXECUTE FUNCTION announce_routing()"
    )
    # A chute's cluster carries its slug (the host it answers on) and its concurrency.
    op.execute(
        "CREATE TRIGGER announce_chute_routing"
        " AFTER INSERT OR DELETE OR UPDATE OF slug, concurrency, disabled ON chutes"
        " FOR EACH ROW EXECUTE FUNCTION announce_routing()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER announce_chute_routing ON chutes")
    op.execute("DROP TRIGGER announce_instance_routing ON instances")
    op.execute("DROP FUNCTION announce_routing()")
    op.drop_column("instances", "port")
    op.drop_column("instances", "host")
