"""A notification on every change that a chute's read answer shows (issue 14).

The registry answers GET and list reads from built responses in memory and asks the database
nothing when it has one (services/registry/freshness.py). That is only right if every change a
response shows is announced: on `registry_reads`, the chute's id for a change of the chute itself
(any column: an edit, its invocation count, its deletion), of its instances, shares, bounty or
manual boost; `+<chute id>` when a chute is created or renamed (a name, or even another chute's
id, may now resolve to it); `*` when an image changes (every chute on it shows it). Each replica
listens and drops what the change names.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: (trigger, table) of the tables whose rows name the chute they belong to.
_CHUTE_TABLES = (
    ("announce_chute_read", "chutes"),
    ("announce_instance_read", "instances"),
    ("announce_share_read", "chute_shares"),
    ("announce_bounty_read", "bounties"),
    ("announce_boost_read", "chute_manual_boosts"),
)


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION announce_read() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('registry_reads', OLD.chute_id);
          ELSE
            PERFORM pg_notify('registry_reads', NEW.chute_id);
            IF TG_OP = 'UPDATE' AND OLD.chute_id IS DISTINCT FROM NEW.chute_id THEN
              PERFORM pg_notify('registry_reads', OLD.chute_id);
            END IF;
          END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql
        """
    )
    # A function of its own: only chutes have a name (which a new or renamed chute may now own).
    op.execute(
        """
        CREATE FUNCTION announce_chute_read() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('registry_reads', OLD.chute_id);
          ELSIF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('registry_reads', '+' || NEW.chute_id);
          ELSIF OLD.name IS DISTINCT FROM NEW.name OR OLD.chute_id IS DISTINCT FROM NEW.chute_id THEN
            PERFORM pg_notify('registry_reads', '+' || NEW.chute_id);
          ELSE
            PERFORM pg_notify('registry_reads', NEW.chute_id);
          END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        """
        CREATE FUNCTION announce_image_read() RETURNS trigger AS $$
        BEGIN
          PERFORM pg_notify('registry_reads', '*');
          RETURN NULL;
        END $$ LANGUAGE plpgsql
        """
    )
    for trigger, table in _CHUTE_TABLES:
        function = "announce_chute_read" if table == "chutes" else "announce_read"
        op.execute(
            f"CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
    # One notification per statement: an image's change reaches every chute on it anyway.
    op.execute(
        "CREATE TRIGGER announce_image_read AFTER UPDATE OR DELETE ON images"
        " FOR EACH STATEMENT EXECUTE FUNCTION announce_image_read()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER announce_image_read ON images")
    for trigger, table in _CHUTE_TABLES:
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    op.execute("DROP FUNCTION announce_image_read()")
    op.execute("DROP FUNCTION announce_chute_read()")
    op.execute("DROP FUNCTION announce_read()")
