"""Record which inboxes accepted or refused each enquiry, and the SMTP server's back-off.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from service.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the recipient columns and the destinations table with its one row."""
    with op.batch_alter_table("enquiries") as batch:
        batch.add_column(sa.Column("delivered_to", sa.Text()))
        batch.add_column(sa.Column("refused_to", sa.Text()))
    destinations = op.create_table(
        "destinations",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("failing_since", UTCDateTime()),
        sa.Column("next_try_at", UTCDateTime()),
    )
    op.bulk_insert(destinations, [{"name": "smtp", "failures": 0}])


def downgrade() -> None:
    """Drop them again."""
    op.drop_table("destinations")
    with op.batch_alter_table("enquiries") as batch:
        batch.drop_column("refused_to")
        batch.drop_column("delivered_to")
