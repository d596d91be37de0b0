"""Room for an enquiry's personal fields sealed to a public key, and that key's id; and the
audit log of what people did to enquiries, when each alert to the operator last went, and the
confirmations to patients (one per address a day).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from service.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the sealed box and its key id."""
    with op.batch_alter_table("enquiries") as batch:
        batch.add_column(sa.Column("sealed", sa.Text()))
        batch.add_column(sa.Column("sealed_to", sa.String(16)))
        batch.add_column(sa.Column("autoreply", sa.String(16)))
    op.create_table(
        "autoreplies",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False, index=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("enquiry_id", sa.String(32)),
        sa.Column("detail", sa.String(200)),
    )
    alerts = op.create_table(
        "alerts",
        sa.Column("cause", sa.String(20), primary_key=True),
        sa.Column("last_sent_at", UTCDateTime()),
    )
    op.bulk_insert(alerts, [{"cause": c} for c in ("dead_letter", "stuck", "recovered")])


def downgrade() -> None:
    """Drop them (sealed enquiries lose their fields: reseal them in plain text first)."""
    op.drop_table("autoreplies")
    op.drop_table("alerts")
    op.drop_table("audit_log")
    with op.batch_alter_table("enquiries") as batch:
        batch.drop_column("autoreply")
        batch.drop_column("sealed_to")
        batch.drop_column("sealed")
