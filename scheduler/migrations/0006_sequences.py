"""sequence enrolments: each reader's place in each sequence

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sequence_enrolments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(), nullable=False),
        sa.Column("anchor_at", sa.DateTime(), nullable=False),
        sa.Column("next_step", sa.String(length=64), nullable=True),
        sa.Column("next_due_at", sa.DateTime(), nullable=True),
        sa.Column("waiting_message", sa.String(length=200), nullable=True),
        sa.Column("left_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sequence", "subscriber_id", name="uq_sequence_enrolments_reader"),
    )
    with op.batch_alter_table("sequence_enrolments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sequence_enrolments_due", ["sequence", "state", "next_due_at", "id"]
        )
        batch_op.create_index("ix_sequence_enrolments_subscriber_id", ["subscriber_id"])


def downgrade() -> None:
    with op.batch_alter_table("sequence_enrolments", schema=None) as batch_op:
        batch_op.drop_index("ix_sequence_enrolments_subscriber_id")
        batch_op.drop_index("ix_sequence_enrolments_due")
    op.drop_table("sequence_enrolments")
