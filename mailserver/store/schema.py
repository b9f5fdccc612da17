"""The metadata schema: one SQLAlchemy Core description for SQLite and PostgreSQL.

Design notes (decisions, so that every daemon reads the data the same way):

- **Account first.** Every table holding user data has ``account_id`` as the first column of its
  primary key and of every index, and ids of per-account objects (mailboxes, emails, threads) are
  allocated per account from counters on the ``accounts`` row. No user-data query crosses
  accounts, which is what lets accounts be split across database clusters later ("cells").
- **One writer per account.** Every write transaction on an account first locks its ``accounts``
  row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one writer anyway) and bumps
  ``accounts.modseq`` once; all rows the transaction changes carry that one MODSEQ. UIDs come from
  ``mailboxes.uid_next`` inside the same transaction, so they are strictly ascending and never
  reused within a UIDVALIDITY. Several accounts are always locked in ascending id order.
- **Email vs membership.** ``emails`` holds one row per stored message per account (JMAP Email);
  ``mailbox_messages`` holds (mailbox, uid) → email (IMAP message). An email may sit in several
  mailboxes with one UID in each. Keywords belong to the email (JMAP semantics), so a flag change
  shows in every mailbox holding it and bumps the MODSEQ of each of its memberships.
- **Keywords = IMAP flags.** Stored lowercased in JMAP form: ``\\Seen`` ↔ ``$seen``,
  ``\\Answered`` ↔ ``$answered``, ``\\Flagged`` ↔ ``$flagged``, ``\\Draft`` ↔ ``$draft``,
  ``\\Deleted`` ↔ ``$deleted``; other keywords as given, lowercased. ``emails.keywords`` is the
  sorted keywords joined by single spaces (empty string when none).
- **Counters, not scans.** ``mailboxes.total_count``, ``unseen_count`` and ``total_size`` are
  maintained in the transactions that change membership or ``$seen``.
- **Times** are integer seconds since the epoch (UTC); ``received_tz`` keeps the zone offset in
  minutes that IMAP INTERNALDATE shows back.
- **Change log.** ``changes`` is append-only per account: one row per object changed, all rows of
  a transaction share its MODSEQ and are numbered by ``idx``. ``object_type`` is one of
  ``Email``, ``Mailbox``, ``Thread``, ``Membership`` (an IMAP message: ``mailbox_id``/``uid``
  set; ``destroyed`` rows serve QRESYNC VANISHED). Entries at or below ``accounts.changes_floor``
  have been compacted away; a client state older than the floor gets cannotCalculateChanges.
- **Blobs** are content-addressed (sha256 hex) and reference counted in ``blobs``; the count is
  changed in the same transaction that adds or removes a reference. Small blobs keep their
  content in ``blob_data`` (``mailserver.blobs.inline``), the others in the blob store.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# Portable big integer primary key: SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# --------------------------------------------------------------------------------------------
# Directory: domains, accounts, addresses, credentials, DKIM keys
# --------------------------------------------------------------------------------------------

domains = Table(
    "domains",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(253), nullable=False, unique=True),  # lowercase, IDNA (A-label)
    Column("created_at", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("domain_id", BigInteger, nullable=False),
    Column("login", String(320), nullable=False, unique=True),  # the primary address, lowercase
    Column("password_hash", Text, nullable=False),  # argon2id, or imported {SHA512-CRYPT}/bcrypt
    Column("display_name", Text, nullable=False, server_default=""),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("quota_bytes", BigInteger, nullable=False, server_default="0"),  # 0 = unlimited
    Column("used_bytes", BigInteger, nullable=False, server_default="0"),
    Column("pop3_keep", Boolean, nullable=False, server_default="0"),  # POP3 DELE marks seen
    # per-account counters; bumped only while the row is locked (see module notes)
    Column("modseq", BigInteger, nullable=False, server_default="1"),
    Column("changes_floor", BigInteger, nullable=False, server_default="0"),
    Column("next_mailbox_id", BigInteger, nullable=False, server_default="1"),
    Column("next_email_id", BigInteger, nullable=False, server_default="1"),
    Column("next_thread_id", BigInteger, nullable=False, server_default="1"),
    Column("last_uidvalidity", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="RESTRICT"),
)
Index("ix_accounts_domain_id", accounts.c.domain_id)

# An address that is not an account's login: an alias (one row per target, fan-out by several
# rows), or a catch-all written "@domain". Targets are full addresses: local logins, other
# aliases (resolved recursively, bounded depth) or remote addresses (forwarding via the queue).
addresses = Table(
    "addresses",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("domain_id", BigInteger, nullable=False),
    Column("address", String(320), nullable=False),  # lowercase; "@example.com" = catch-all
    Column("target", String(320), nullable=False),  # lowercase
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE"),
    UniqueConstraint("address", "target"),
)
Index("ix_addresses_domain_id", addresses.c.domain_id)

# App passwords and API tokens (JMAP Bearer). Only a hash of the secret is kept.
credentials = Table(
    "credentials",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("id", BigInteger, nullable=False, primary_key=True),
    Column("kind", String(16), nullable=False),  # "token" | "app_password"
    Column("name", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("lookup", String(64), nullable=True, unique=True),  # token prefix for O(1) lookup
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

dkim_keys = Table(
    "dkim_keys",
    metadata,
    Column("domain_id", BigInteger, nullable=False, primary_key=True),
    Column("selector", String(63), nullable=False, primary_key=True),
    Column("algorithm", String(16), nullable=False),  # "ed25519-sha256" | "rsa-sha256"
    Column("private_key", Text, nullable=False),  # PEM (PKCS#8)
    Column("public_key", Text, nullable=False),  # base64 of the p= value
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE"),
)

# --------------------------------------------------------------------------------------------
# Mail: mailboxes, emails, memberships, threads, change log, search index
# --------------------------------------------------------------------------------------------

mailboxes = Table(
    "mailboxes",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("id", BigInteger, nullable=False, primary_key=True),
    Column("parent_id", BigInteger, nullable=True),
    Column("name", Text, nullable=False),  # leaf name (JMAP Mailbox.name)
    Column("path", Text, nullable=False),  # full name, "/"-separated (IMAP), unique per account
    Column("role", String(16), nullable=True),  # inbox sent drafts trash junk archive …
    Column("sort_order", Integer, nullable=False, server_default="0"),
    Column("subscribed", Boolean, nullable=False, server_default="1"),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uid_next", BigInteger, nullable=False, server_default="1"),
    Column("highest_modseq", BigInteger, nullable=False, server_default="1"),
    Column("total_count", BigInteger, nullable=False, server_default="0"),
    Column("unseen_count", BigInteger, nullable=False, server_default="0"),
    Column("total_size", BigInteger, nullable=False, server_default="0"),
    Column("created_modseq", BigInteger, nullable=False, server_default="1"),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
    UniqueConstraint("account_id", "path"),
)
Index("ix_mailboxes_account_id_parent_id", mailboxes.c.account_id, mailboxes.c.parent_id)
Index("ix_mailboxes_account_id_role", mailboxes.c.account_id, mailboxes.c.role)

emails = Table(
    "emails",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("id", BigInteger, nullable=False, primary_key=True),
    Column("blob_id", String(64), nullable=False),  # sha256 hex of the raw message
    Column("size", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),  # INTERNALDATE / receivedAt
    Column("received_tz", SmallInteger, nullable=False, server_default="0"),  # minutes east
    Column("sent_at", BigInteger, nullable=True),  # Date: header
    Column("thread_id", BigInteger, nullable=False),
    Column("keywords", Text, nullable=False, server_default=""),
    # header summary (addresses are JSON lists of {"name":…, "email":…})
    Column("subject", Text, nullable=False, server_default=""),
    Column("sort_subject", Text, nullable=False, server_default=""),  # RFC 5256 base subject
    Column("from_json", Text, nullable=False, server_default="[]"),
    Column("sender_json", Text, nullable=False, server_default="[]"),
    Column("reply_to_json", Text, nullable=False, server_default="[]"),
    Column("to_json", Text, nullable=False, server_default="[]"),
    Column("cc_json", Text, nullable=False, server_default="[]"),
    Column("bcc_json", Text, nullable=False, server_default="[]"),
    Column("sort_from", Text, nullable=False, server_default=""),  # lowercase first address
    Column("sort_to", Text, nullable=False, server_default=""),
    Column("message_id", Text, nullable=False, server_default=""),  # without <>
    Column("in_reply_to", Text, nullable=False, server_default=""),  # space separated ids
    Column("references", Text, nullable=False, server_default=""),  # space separated ids
    Column("preview", Text, nullable=False, server_default=""),
    Column("has_attachment", Boolean, nullable=False, server_default="0"),
    # the parsed MIME structure (JSON), so IMAP BODYSTRUCTURE / JMAP bodyStructure never
    # re-parse the blob; see mailserver.message for its shape
    Column("structure_json", Text, nullable=False, server_default="{}"),
    Column("created_modseq", BigInteger, nullable=False),
    Column("updated_modseq", BigInteger, nullable=False),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)
Index("ix_emails_account_id_thread_id", emails.c.account_id, emails.c.thread_id)
Index("ix_emails_account_id_message_id", emails.c.account_id, emails.c.message_id)
Index("ix_emails_account_id_received_at", emails.c.account_id, emails.c.received_at)
Index("ix_emails_account_id_blob_id", emails.c.account_id, emails.c.blob_id)

mailbox_messages = Table(
    "mailbox_messages",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("mailbox_id", BigInteger, nullable=False, primary_key=True),
    Column("uid", BigInteger, nullable=False, primary_key=True),
    Column("email_id", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),  # CONDSTORE MODSEQ of this message
    Column("saved_at", BigInteger, nullable=False),  # RFC 8514 SAVEDATE
    ForeignKeyConstraint(
        ["account_id", "mailbox_id"], ["mailboxes.account_id", "mailboxes.id"], ondelete="CASCADE"
    ),
    ForeignKeyConstraint(
        ["account_id", "email_id"], ["emails.account_id", "emails.id"], ondelete="CASCADE"
    ),
    UniqueConstraint("account_id", "mailbox_id", "email_id"),
)
Index(
    "ix_mailbox_messages_account_id_email_id",
    mailbox_messages.c.account_id,
    mailbox_messages.c.email_id,
)
Index(
    "ix_mailbox_messages_account_id_mailbox_id_modseq",
    mailbox_messages.c.account_id,
    mailbox_messages.c.mailbox_id,
    mailbox_messages.c.modseq,
)

# Message-ids seen in an account → the thread they belong to (own Message-ID, In-Reply-To and
# References of every email), so a reply finds its thread with one indexed lookup.
thread_refs = Table(
    "thread_refs",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("message_id", Text, nullable=False, primary_key=True),
    Column("thread_id", BigInteger, nullable=False),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)
# when a thread's last email goes, its ids go too: without this, a scan of the account's refs
# (~11 ms of CPU at 30,000 refs, migration 0009)
Index("ix_thread_refs_account_id_thread_id", thread_refs.c.account_id, thread_refs.c.thread_id)

changes = Table(
    "changes",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("modseq", BigInteger, nullable=False, primary_key=True),
    Column("idx", Integer, nullable=False, primary_key=True),
    Column("object_type", String(16), nullable=False),  # Email Mailbox Thread Membership
    Column("object_id", BigInteger, nullable=False),
    Column("change", String(1), nullable=False),  # c(reated) u(pdated) d(estroyed)
    Column("mailbox_id", BigInteger, nullable=True),  # Membership rows
    Column("uid", BigInteger, nullable=True),  # Membership rows
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
    CheckConstraint("change IN ('c', 'u', 'd')", name="change_kind"),
)
Index(
    "ix_changes_account_id_mailbox_id_modseq",
    changes.c.account_id,
    changes.c.mailbox_id,
    changes.c.modseq,
)

# Full-text index rows on PostgreSQL (tsvector + GIN, created by the migration). On SQLite the
# same data lives in the FTS5 virtual table "email_fts" created by the migration; neither is
# described here because SQLAlchemy Core has no type for them (see mailserver.store.search).

# --------------------------------------------------------------------------------------------
# Blobs
# --------------------------------------------------------------------------------------------

blobs = Table(
    "blobs",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 hex
    Column("size", BigInteger, nullable=False),
    Column("refcount", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", BigInteger, nullable=False),  # last refcount change (sweeper grace)
)
Index("ix_blobs_refcount_updated_at", blobs.c.refcount, blobs.c.updated_at)

# The content of small blobs, kept in the database instead of the blob store
# (mailserver.blobs.inline): written in the transaction that adds the blob's first reference,
# deleted by the sweeper with its ``blobs`` row.
blob_data = Table(
    "blob_data",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 hex, = blobs.id
    Column("data", LargeBinary, nullable=False),
)


def storage_ddl(dialect: str) -> list[str]:
    """Engine-specific storage settings ``create_all`` cannot express (idempotent)."""
    if dialect == "postgresql":
        # out of line but not compressed: pglz on every stored message cost the PostgreSQL
        # server more CPU than the rest of a delivery, and mail with attachments (base64)
        # hardly compresses anyway
        return ["ALTER TABLE blob_data ALTER COLUMN data SET STORAGE EXTERNAL"]
    return []

# Small key/value facts about the installation (schema notes, UIDVALIDITY seed, …).
settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

SPECIAL_USE_MAILBOXES: tuple[tuple[str, str], ...] = (
    ("INBOX", "inbox"),
    ("Sent", "sent"),
    ("Drafts", "drafts"),
    ("Trash", "trash"),
    ("Junk", "junk"),
    ("Archive", "archive"),
)
"""Created for every new account: (path, role)."""

# --------------------------------------------------------------------------------------------
# Leases (mailserver.store.locks) — appended by the POP3 daemon work; keep this section last.
# --------------------------------------------------------------------------------------------

# A named, expiring lock per account that works across processes and nodes: the POP3 maildrop
# lock (name "pop3") today. A row is taken with an insert-or-take-over-if-expired upsert,
# renewed while its holder lives and deleted on release; a crashed holder's row expires.
leases = Table(
    "leases",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("name", String(64), nullable=False, primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # epoch milliseconds
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

# --------------------------------------------------------------------------------------------
# Outbound delivery queue (mailserver.queue) — keep after the leases section.
# --------------------------------------------------------------------------------------------

# One row per queued message. The queue is operator data, not mailbox data: it is read across
# accounts by the workers and the CLI, so its key is its own id; ``account_id`` (the submitting
# account, NULL for forwards and DSNs) is kept for per-account limits and listings. The row
# holds one reference on its blob (mailserver.store.blobrefs), dropped with the row.
queue_messages = Table(
    "queue_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, nullable=True),
    Column("blob_id", String(64), nullable=False),  # sha256 hex of the raw message
    Column("size", BigInteger, nullable=False),
    Column("sender", String(320), nullable=False),  # envelope MAIL FROM; "" = null sender
    Column("ret", String(4), nullable=True),  # RFC 3461 §4.3 RET=FULL|HDRS; NULL = not given
    Column("envid", Text, nullable=True),  # RFC 3461 §4.4 ENVID (xtext decoded)
    Column("body", String(16), nullable=True),  # MAIL BODY= (7BIT, 8BITMIME, BINARYMIME)
    Column("smtputf8", Boolean, nullable=False, server_default="0"),  # RFC 6531
    Column("requiretls", Boolean, nullable=False, server_default="0"),  # RFC 8689
    Column("is_dsn", Boolean, nullable=False, server_default="0"),  # a bounce we generated
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_queue_messages_account_id", queue_messages.c.account_id)

# One row per recipient still to deliver; deleted once delivered or failed for good (its DSN,
# if any, is queued in the same transaction). A worker owns a row while ``lease_expires_at`` is
# in the future; an expired lease is free for any worker (crash recovery).
queue_recipients = Table(
    "queue_recipients",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", BigInteger, nullable=False),
    Column("recipient", String(320), nullable=False),  # RCPT TO address as given
    Column("domain", String(253), nullable=False),  # lowercase, IDNA A-label: the routing key
    Column("orcpt", Text, nullable=True),  # RFC 3461 §4.2 ORCPT ("rfc822;addr")
    Column("notify", String(32), nullable=True),  # RFC 3461 §4.1: "NEVER" or a comma list
    Column("state", String(8), nullable=False, server_default="queued"),  # queued | held
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("last_attempt_at", BigInteger, nullable=True),
    Column("last_status", String(16), nullable=True),  # enhanced status code, e.g. "4.4.1"
    Column("last_error", Text, nullable=True),  # the remote reply or the local reason
    Column("delay_notified", Boolean, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["message_id"], ["queue_messages.id"], ondelete="CASCADE"),
)
Index("ix_queue_recipients_state_next_attempt_at",
      queue_recipients.c.state, queue_recipients.c.next_attempt_at)
Index("ix_queue_recipients_message_id", queue_recipients.c.message_id)
Index("ix_queue_recipients_domain", queue_recipients.c.domain)

# --------------------------------------------------------------------------------------------
# JMAP push subscriptions (RFC 8620 §7.2; mailserver.servers.jmap.pushsub) — appended by the
# JMAP daemon work; keep sections in the order they were added.
# --------------------------------------------------------------------------------------------

# A URL the JMAP server POSTs StateChange objects to once the client proved it owns it by
# echoing the verification code the server sent there first. ``types`` is a JSON list of type
# names (NULL = every type).
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("id", BigInteger, nullable=False, primary_key=True),
    Column("device_client_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("verification_code", String(64), nullable=False),
    Column("verified", Boolean, nullable=False, server_default="0"),
    Column("expires_at", BigInteger, nullable=False),
    Column("types", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # RFC 8291 keys as given ({"p256dh", "auth"} JSON); NULL = POST in clear
    Column("keys", Text, nullable=True),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

# JMAP EmailSubmission records (RFC 8621 §7; mailserver.servers.jmap.submission): what was sent
# when, to whom, and how each recipient was handed on. ``envelope`` and ``delivery_status`` are
# JSON in the RFC's own shapes.
email_submissions = Table(
    "email_submissions",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("id", BigInteger, nullable=False, primary_key=True),
    Column("identity_id", String(64), nullable=False),
    Column("email_id", BigInteger, nullable=False),
    Column("thread_id", BigInteger, nullable=False),
    Column("envelope", Text, nullable=False),
    Column("send_at", BigInteger, nullable=False),
    Column("undo_status", String(16), nullable=False),  # pending | final | canceled
    Column("delivery_status", Text, nullable=False),
    Column("queue_message_id", BigInteger, nullable=True),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

# Idempotency keys of the REST facade (mailserver.servers.jmap.rest): the first request with a
# client_mutation_id claims the row (response NULL while it runs) and stores its response; a
# repeated request gets that response instead of sending again.
rest_mutations = Table(
    "rest_mutations",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("client_mutation_id", String(128), nullable=False, primary_key=True),
    Column("response", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

# --------------------------------------------------------------------------------------------
# JMAP Identity and VacationResponse (RFC 8621 §6, §8; mailserver.servers.jmap.identity and
# .vacation, mailserver.autoreply) — appended by the JMAP features work (migration 0005).
# --------------------------------------------------------------------------------------------

# The account's sending identities. ``may_delete`` false marks the default identity of an
# owned address (one per address, kept in step with the account's addresses; editable, not
# deletable). ``reply_to`` and ``bcc`` are JSON lists of {"name", "email"} or NULL.
identities = Table(
    "identities",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("id", BigInteger, nullable=False, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("reply_to", Text, nullable=True),
    Column("bcc", Text, nullable=True),
    Column("text_signature", Text, nullable=False, server_default=""),
    Column("html_signature", Text, nullable=False, server_default=""),
    Column("may_delete", Boolean, nullable=False, server_default="1"),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

# The VacationResponse singleton of an account (no row = disabled). Dates are epoch seconds.
vacation_responses = Table(
    "vacation_responses",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("is_enabled", Boolean, nullable=False, server_default="0"),
    Column("from_date", BigInteger, nullable=True),
    Column("to_date", BigInteger, nullable=True),
    Column("subject", Text, nullable=True),
    Column("text_body", Text, nullable=True),
    Column("html_body", Text, nullable=True),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

# Who got an auto-reply when (RFC 5230 §4.2 / RFC 3834 §2: at most one per sender per period),
# shared by every process; cleared when the VacationResponse is changed.
vacation_replies = Table(
    "vacation_replies",
    metadata,
    Column("account_id", BigInteger, nullable=False, primary_key=True),
    Column("sender", String(320), nullable=False, primary_key=True),  # lowercase
    Column("replied_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

# EmailSubmission ↔ queue message, for the worker recording final recipient outcomes.
Index("ix_email_submissions_account_id_queue_message_id",
      email_submissions.c.account_id, email_submissions.c.queue_message_id)

# Failed logins per network and per login name (mailserver.auth.throttle.StoreLoginThrottle),
# shared by every daemon on every node. Times are epoch milliseconds.
login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(320), primary_key=True),  # "n:<network>" or "u:<login>"
    Column("failures", Integer, nullable=False),  # in the window that began at first_at
    Column("first_at", BigInteger, nullable=False),
    Column("last_at", BigInteger, nullable=False),
    Column("locked_until", BigInteger, nullable=False, server_default="0"),
)
