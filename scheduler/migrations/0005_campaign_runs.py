"""PLACEHOLDER for the campaign runs migration (the clock branch's 0005 replaces it at merge)

Revision ID: 0005
Revises: 0004
"""

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
