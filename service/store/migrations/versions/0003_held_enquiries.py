"""Keep trapped submissions as held enquiries, with the trap that caught them, and a record of
the daily digest of them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from service.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column that names the trap."""
    with op.batch_alter_table("enquiries") as batch:
        batch.add_column(sa.Column("held_reason", sa.String(50)))
    op.create_index("ix_enquiries_status_created", "enquiries", ["status", "created_at"])
    op.create_table(
        "held_digests",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("covered_until", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
    )


def downgrade() -> None:
    """Drop it again, and every held enquiry with it (the first versions knew no such state)."""
    op.drop_table("held_digests")
    op.execute("DELETE FROM enquiries WHERE status = 'held'")
    op.drop_index("ix_enquiries_status_created", "enquiries")
    with op.batch_alter_table("enquiries") as batch:
        batch.drop_column("held_reason")
