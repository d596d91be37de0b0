"""Keep trapped submissions as held enquiries, with the trap that caught them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column that names the trap."""
    with op.batch_alter_table("enquiries") as batch:
        batch.add_column(sa.Column("held_reason", sa.String(50)))
    op.create_index("ix_enquiries_status_created", "enquiries", ["status", "created_at"])


def downgrade() -> None:
    """Drop it again, and every held enquiry with it (the first versions knew no such state)."""
    op.execute("DELETE FROM enquiries WHERE status = 'held'")
    op.drop_index("ix_enquiries_status_created", "enquiries")
    with op.batch_alter_table("enquiries") as batch:
        batch.drop_column("held_reason")
