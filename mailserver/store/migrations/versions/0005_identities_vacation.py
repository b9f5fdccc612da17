"""JMAP Identity and VacationResponse tables, auto-reply records, and the EmailSubmission ↔
queue index; see mailserver.servers.jmap.identity, .vacation and mailserver.autoreply.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("reply_to", sa.Text(), nullable=True),
        sa.Column("bcc", sa.Text(), nullable=True),
        sa.Column("text_signature", sa.Text(), server_default="", nullable=False),
        sa.Column("html_signature", sa.Text(), server_default="", nullable=False),
        sa.Column("may_delete", sa.Boolean(), server_default="1", nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_identities_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "id", name=op.f("pk_identities")),
    )
    op.create_table(
        "vacation_responses",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("from_date", sa.BigInteger(), nullable=True),
        sa.Column("to_date", sa.BigInteger(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("text_body", sa.Text(), nullable=True),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_vacation_responses_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_vacation_responses")),
    )
    op.create_table(
        "vacation_replies",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("replied_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_vacation_replies_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "sender", name=op.f("pk_vacation_replies")),
    )
    op.create_index("ix_email_submissions_account_id_queue_message_id", "email_submissions",
                    ["account_id", "queue_message_id"])


def downgrade() -> None:
    op.drop_index("ix_email_submissions_account_id_queue_message_id",
                  table_name="email_submissions")
    op.drop_table("vacation_replies")
    op.drop_table("vacation_responses")
    op.drop_table("identities")
