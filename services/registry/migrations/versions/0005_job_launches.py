"""Job launches: the jobs the jobs service asked to run, and the instance that runs each; an
instance's removal ends its job's launch.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_launches",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("chute_id", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("status_url", sa.Text(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), server_default="10", nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("instance_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("succeeded", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["chute_id"], ["chutes.chute_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index(
        "job_launches_pending",
        "job_launches",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.add_column("instances", sa.Column("job_id", sa.Text(), nullable=True))
    op.create_unique_constraint("instances_job_id_key", "instances", ["job_id"])
    # However a job's instance goes (its process exited, it failed, its node was lost, the job was
    # cancelled), its launch ends with it; a reason already recorded (a failure report) is kept.
    op.execute(
        """
        CREATE FUNCTION end_job_launch() RETURNS trigger AS $$
        BEGIN
          IF OLD.job_id IS NOT NULL THEN
            UPDATE job_launches
               SET state = 'ended', ended_at = now(),
                   reason = CASE WHEN succeeded OR reason <> '' THEN reason
                                 ELSE 'the instance was removed (its node was lost or it was stopped)' END
             WHERE job_id = OLD.job_id AND state <> 'ended';
          END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER end_job_launch AFTER DELETE ON instances"
        " FOR EACH ROW EXECUTE FUNCTION end_job_launch()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER end_job_launch ON instances")
    op.execute("DROP FUNCTION end_job_launch()")
    op.drop_constraint("instances_job_id_key", "instances", type_="unique")
    op.drop_column("instances", "job_id")
    op.drop_index(
        "job_launches_pending", table_name="job_launches", postgresql_where=sa.text("state = 'pending'")
    )
    op.drop_table("job_launches")
