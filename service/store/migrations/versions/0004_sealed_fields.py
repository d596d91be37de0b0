"""Room for an enquiry's personal fields sealed to a public key, and that key's id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the sealed box and its key id."""
    with op.batch_alter_table("enquiries") as batch:
        batch.add_column(sa.Column("sealed", sa.Text()))
        batch.add_column(sa.Column("sealed_to", sa.String(16)))


def downgrade() -> None:
    """Drop them (sealed enquiries lose their fields: reseal them in plain text first)."""
    with op.batch_alter_table("enquiries") as batch:
        batch.drop_column("sealed_to")
        batch.drop_column("sealed")
