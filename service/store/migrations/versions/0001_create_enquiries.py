"""Create the enquiries outbox and the used-captcha table.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from service.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "enquiries",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(32)),
        sa.Column("message", sa.Text()),
        sa.Column("page_url", sa.String(2000)),
        sa.Column("idempotency_key", sa.String(64), unique=True),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime()),
        sa.Column("claimed_by", sa.String(100)),
        sa.Column("last_error", sa.String(500)),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("failed_at", UTCDateTime()),
        sa.Column("purged_at", UTCDateTime()),
    )
    op.create_index("ix_enquiries_status_next_attempt", "enquiries", ["status", "next_attempt_at"])
    op.create_table(
        "used_captchas",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_used_captchas_expires_at", "used_captchas", ["expires_at"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("used_captchas")
    op.drop_table("enquiries")
