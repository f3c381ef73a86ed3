"""insight: why a delivery was deferred, the steps of each applied sequence version, and a
campaign's own cadence caps and per-reader wall-clock time

Revision ID: 0007_insight
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_insight"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deferred_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("campaign_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cadence", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reader_time", sa.String(length=32), nullable=True))
    op.create_table(
        "sequence_versions",
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sequence", "version"),
    )


def downgrade() -> None:
    op.drop_table("sequence_versions")
    with op.batch_alter_table("campaign_runs", schema=None) as batch_op:
        batch_op.drop_column("reader_time")
        batch_op.drop_column("cadence")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("deferred_reason")
