"""Baseline: the whole schema of mailserver.store.schema plus the full-text index.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

The tables are explicit ``op.create_table`` operations (generated once from the metadata with
Alembic's autogenerate, then frozen here), so later changes to ``schema.py`` need a new revision
— ``tests/store/test_migrations.py`` compares an upgraded database with ``metadata.create_all``.
The engine-specific full-text objects (SQLite FTS5 table, PostgreSQL tsvector table + GIN index)
come from ``mailserver.store.search.search_ddl``, which is idempotent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('refcount', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blobs'))
    )
    op.create_index('ix_blobs_refcount_updated_at', 'blobs', ['refcount', 'updated_at'], unique=False)
    op.create_table('domains',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=253), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_domains')),
    sa.UniqueConstraint('name', name=op.f('uq_domains_name'))
    )
    op.create_table('settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_settings'))
    )
    op.create_table('accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('domain_id', sa.BigInteger(), nullable=False),
    sa.Column('login', sa.String(length=320), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('display_name', sa.Text(), server_default='', nullable=False),
    sa.Column('disabled', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('quota_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('used_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('pop3_keep', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('modseq', sa.BigInteger(), server_default='1', nullable=False),
    sa.Column('changes_floor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('next_mailbox_id', sa.BigInteger(), server_default='1', nullable=False),
    sa.Column('next_email_id', sa.BigInteger(), server_default='1', nullable=False),
    sa.Column('next_thread_id', sa.BigInteger(), server_default='1', nullable=False),
    sa.Column('last_uidvalidity', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['domain_id'], ['domains.id'], name=op.f('fk_accounts_domain_id_domains'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('login', name=op.f('uq_accounts_login'))
    )
    op.create_index('ix_accounts_domain_id', 'accounts', ['domain_id'], unique=False)
    op.create_table('addresses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('domain_id', sa.BigInteger(), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('target', sa.String(length=320), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['domain_id'], ['domains.id'], name=op.f('fk_addresses_domain_id_domains'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_addresses')),
    sa.UniqueConstraint('address', 'target', name=op.f('uq_addresses_address_target'))
    )
    op.create_index('ix_addresses_domain_id', 'addresses', ['domain_id'], unique=False)
    op.create_table('dkim_keys',
    sa.Column('domain_id', sa.BigInteger(), nullable=False),
    sa.Column('selector', sa.String(length=63), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('private_key', sa.Text(), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default='1', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['domain_id'], ['domains.id'], name=op.f('fk_dkim_keys_domain_id_domains'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('domain_id', 'selector', name=op.f('pk_dkim_keys'))
    )
    op.create_table('changes',
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('modseq', sa.BigInteger(), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('object_type', sa.String(length=16), nullable=False),
    sa.Column('object_id', sa.BigInteger(), nullable=False),
    sa.Column('change', sa.String(length=1), nullable=False),
    sa.Column('mailbox_id', sa.BigInteger(), nullable=True),
    sa.Column('uid', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("change IN ('c', 'u', 'd')", name=op.f('ck_changes_change_kind')),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_changes_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'modseq', 'idx', name=op.f('pk_changes'))
    )
    op.create_index('ix_changes_account_id_mailbox_id_modseq', 'changes', ['account_id', 'mailbox_id', 'modseq'], unique=False)
    op.create_table('credentials',
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('secret_hash', sa.Text(), nullable=False),
    sa.Column('lookup', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=True),
    sa.Column('last_used_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_credentials_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'id', name=op.f('pk_credentials')),
    sa.UniqueConstraint('lookup', name=op.f('uq_credentials_lookup'))
    )
    op.create_table('emails',
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('blob_id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.BigInteger(), nullable=False),
    sa.Column('received_tz', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('sent_at', sa.BigInteger(), nullable=True),
    sa.Column('thread_id', sa.BigInteger(), nullable=False),
    sa.Column('keywords', sa.Text(), server_default='', nullable=False),
    sa.Column('subject', sa.Text(), server_default='', nullable=False),
    sa.Column('sort_subject', sa.Text(), server_default='', nullable=False),
    sa.Column('from_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('sender_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('reply_to_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('to_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('cc_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('bcc_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('sort_from', sa.Text(), server_default='', nullable=False),
    sa.Column('sort_to', sa.Text(), server_default='', nullable=False),
    sa.Column('message_id', sa.Text(), server_default='', nullable=False),
    sa.Column('in_reply_to', sa.Text(), server_default='', nullable=False),
    sa.Column('references', sa.Text(), server_default='', nullable=False),
    sa.Column('preview', sa.Text(), server_default='', nullable=False),
    sa.Column('has_attachment', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('structure_json', sa.Text(), server_default='{}', nullable=False),
    sa.Column('created_modseq', sa.BigInteger(), nullable=False),
    sa.Column('updated_modseq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_emails_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'id', name=op.f('pk_emails'))
    )
    op.create_index('ix_emails_account_id_blob_id', 'emails', ['account_id', 'blob_id'], unique=False)
    op.create_index('ix_emails_account_id_message_id', 'emails', ['account_id', 'message_id'], unique=False)
    op.create_index('ix_emails_account_id_received_at', 'emails', ['account_id', 'received_at'], unique=False)
    op.create_index('ix_emails_account_id_thread_id', 'emails', ['account_id', 'thread_id'], unique=False)
    op.create_table('mailboxes',
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('parent_id', sa.BigInteger(), nullable=True),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=True),
    sa.Column('sort_order', sa.Integer(), server_default='0', nullable=False),
    sa.Column('subscribed', sa.Boolean(), server_default='1', nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('uid_next', sa.BigInteger(), server_default='1', nullable=False),
    sa.Column('highest_modseq', sa.BigInteger(), server_default='1', nullable=False),
    sa.Column('total_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unseen_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('total_size', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_modseq', sa.BigInteger(), server_default='1', nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_mailboxes_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'id', name=op.f('pk_mailboxes')),
    sa.UniqueConstraint('account_id', 'path', name=op.f('uq_mailboxes_account_id_path'))
    )
    op.create_index('ix_mailboxes_account_id_parent_id', 'mailboxes', ['account_id', 'parent_id'], unique=False)
    op.create_index('ix_mailboxes_account_id_role', 'mailboxes', ['account_id', 'role'], unique=False)
    op.create_table('thread_refs',
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('message_id', sa.Text(), nullable=False),
    sa.Column('thread_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_thread_refs_account_id_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'message_id', name=op.f('pk_thread_refs'))
    )
    op.create_table('mailbox_messages',
    sa.Column('account_id', sa.BigInteger(), nullable=False),
    sa.Column('mailbox_id', sa.BigInteger(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('email_id', sa.BigInteger(), nullable=False),
    sa.Column('modseq', sa.BigInteger(), nullable=False),
    sa.Column('saved_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['account_id', 'email_id'], ['emails.account_id', 'emails.id'], name=op.f('fk_mailbox_messages_account_id_emails'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['account_id', 'mailbox_id'], ['mailboxes.account_id', 'mailboxes.id'], name=op.f('fk_mailbox_messages_account_id_mailboxes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'mailbox_id', 'uid', name=op.f('pk_mailbox_messages')),
    sa.UniqueConstraint('account_id', 'mailbox_id', 'email_id', name=op.f('uq_mailbox_messages_account_id_mailbox_id_email_id'))
    )
    op.create_index('ix_mailbox_messages_account_id_email_id', 'mailbox_messages', ['account_id', 'email_id'], unique=False)
    op.create_index('ix_mailbox_messages_account_id_mailbox_id_modseq', 'mailbox_messages', ['account_id', 'mailbox_id', 'modseq'], unique=False)
    from mailserver.store.search import search_ddl

    for statement in search_ddl(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP TABLE IF EXISTS email_fts" if dialect == "sqlite"
               else "DROP TABLE IF EXISTS email_search")
    op.drop_table('mailbox_messages')
    op.drop_table('thread_refs')
    op.drop_table('mailboxes')
    op.drop_table('emails')
    op.drop_table('credentials')
    op.drop_table('changes')
    op.drop_table('dkim_keys')
    op.drop_table('addresses')
    op.drop_table('accounts')
    op.drop_table('settings')
    op.drop_table('domains')
    op.drop_table('blobs')
