"""JMAP push subscriptions (RFC 8620 §7.2), EmailSubmission records (RFC 8621 §7) and the REST
facade's idempotency keys; see mailserver.servers.jmap.pushsub, .submission and .rest.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_subscriptions",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("device_client_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("verification_code", sa.String(length=64), nullable=False),
        sa.Column("verified", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("types", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_push_subscriptions_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "id", name=op.f("pk_push_subscriptions")),
    )
    op.create_table(
        "email_submissions",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("identity_id", sa.String(length=64), nullable=False),
        sa.Column("email_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("send_at", sa.BigInteger(), nullable=False),
        sa.Column("undo_status", sa.String(length=16), nullable=False),
        sa.Column("delivery_status", sa.Text(), nullable=False),
        sa.Column("queue_message_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_email_submissions_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "id", name=op.f("pk_email_submissions")),
    )
    op.create_table(
        "rest_mutations",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("client_mutation_id", sa.String(length=128), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_rest_mutations_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "client_mutation_id",
                                name=op.f("pk_rest_mutations")),
    )


def downgrade() -> None:
    op.drop_table("rest_mutations")
    op.drop_table("email_submissions")
    op.drop_table("push_subscriptions")
