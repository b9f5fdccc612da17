"""Queue rows: enqueue (inside the caller's transaction), claim by lease, record outcomes.

Tables ``queue_messages`` / ``queue_recipients`` (see ``mailserver.store.schema``). Decisions:

- **Enqueue joins the caller's transaction.** The submission daemon (and the DSN generator)
  calls ``enqueue`` on the connection of its own ``db.write()`` so that the queue rows commit
  together with whatever else it writes, and it answers 250 only after that commit. The blob
  must already be durable (``await blobs.put(raw)`` *before* opening the transaction, as the
  ingest path does); ``enqueue`` adds the queue's reference to it (``blobrefs.add_ref``) in the
  same transaction, so the sweeper keeps the blob while any queue row points at it.
- **Claim by lease, not by holding a transaction.** A worker marks due recipients as its own
  for ``lease_seconds`` in one short write transaction (PostgreSQL: the candidate rows are
  picked with ``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint sets without
  waiting; SQLite: the database has a single writer, which serialises claims), then talks SMTP
  with no transaction open, then records the outcome in another short transaction — only if it
  still holds the lease. A crashed worker's rows become claimable when the lease expires.
- **Finished recipients are deleted**; the message row (and its blob reference) goes with its
  last recipient. The DSN for a finished recipient is queued in that same transaction, so a
  failure and its bounce are one atomic step.
- Times are integer epoch seconds, taken from the ``now`` the caller passes (injectable clock).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import blobrefs, schema

__all__ = [
    "Recipient", "QueuedMessage", "ClaimedRecipient", "enqueue", "claim", "finish",
    "finish_many", "defer", "renew", "release_lease", "domain_of", "NOTIFY_VALUES",
]

_m = schema.queue_messages
_r = schema.queue_recipients

NOTIFY_VALUES = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RCPT TO with its RFC 3461 parameters.

    ``notify``: None = not given (the default: FAILURE and DELAY, §4.1), else a set of
    ``SUCCESS``/``FAILURE``/``DELAY`` or ``{"NEVER"}``. ``orcpt``: the ORCPT value as
    "addr-type;address" (xtext decoded), or None.
    """

    address: str
    notify: frozenset[str] | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    account_id: int | None
    blob_id: str
    size: int
    sender: str
    ret: str | None
    envid: str | None
    body: str | None
    smtputf8: bool
    requiretls: bool
    is_dsn: bool
    created_at: int


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    id: int
    message: QueuedMessage
    recipient: str
    domain: str
    orcpt: str | None
    notify: frozenset[str] | None
    attempts: int
    delay_notified: bool
    created_at: int
    lease_owner: str = field(default="")


def domain_of(address: str) -> str:
    """The routing domain of an address: lowercase, IDNA A-label ("" when there is none)."""
    _local, at, domain = address.rpartition("@")
    if not at:
        return ""
    domain = domain.strip().rstrip(".").lower()
    if domain.startswith("[") and domain.endswith("]"):
        return domain  # RFC 5321 §4.1.3 address literal
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def encode_notify(notify: frozenset[str] | None) -> str | None:
    if notify is None:
        return None
    values = {n.upper() for n in notify}
    if not values <= NOTIFY_VALUES or ("NEVER" in values and len(values) > 1) or not values:
        raise ValueError(f"invalid NOTIFY {sorted(notify)!r} (RFC 3461 §4.1)")
    return ",".join(sorted(values))


def decode_notify(value: str | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value.split(","))


async def enqueue(conn: AsyncConnection, *, blob_id: str, size: int, sender: str,
                  recipients: Sequence[Recipient | str], now: int,
                  ret: str | None = None, envid: str | None = None, body: str | None = None,
                  smtputf8: bool = False, requiretls: bool = False,
                  account_id: int | None = None, is_dsn: bool = False) -> int:
    """Queue one message for outbound delivery; returns its queue id.

    Runs inside the CALLER's write transaction: ``conn`` comes from ``db.write()`` and nothing
    is queued until the caller commits (answer 250 only after that). Before opening that
    transaction the caller must have stored the message: ``blob_id = await blobs.put(raw)``
    (durable when it returns) and ``size = len(raw)``; this function adds the queue's one
    reference to the blob (``mailserver.store.blobrefs``) in the same transaction.

    - ``sender``: the envelope MAIL FROM address, "" for the null sender (no DSN is ever sent
      for it). ``ret`` ("FULL" | "HDRS" | None) and ``envid`` are the RFC 3461 MAIL
      parameters; ``body`` the BODY= value ("7BIT", "8BITMIME", …), ``smtputf8`` whether the
      message was received with SMTPUTF8 (RFC 6531), ``requiretls`` the RFC 8689 flag.
    - ``recipients``: ``Recipient`` objects (with NOTIFY/ORCPT) or plain address strings; they
      are deduplicated (case-insensitively), each becomes due immediately (``now``).
    - ``account_id``: the submitting account (None for forwards and DSNs); ``now``: epoch
      seconds from the caller's clock.

    Raises ``ValueError`` for no recipients, an address without a domain or an invalid
    NOTIFY combination (nothing is written then).
    """
    rcpts: list[Recipient] = []
    seen: set[str] = set()
    for r in recipients:
        if isinstance(r, str):
            r = Recipient(r)
        key = r.address.lower()
        if key in seen:
            continue
        seen.add(key)
        if not domain_of(r.address):
            raise ValueError(f"recipient {r.address!r} has no domain")
        rcpts.append(r)
    if not rcpts:
        raise ValueError("no recipients")
    rows = [{"recipient": r.address, "domain": domain_of(r.address), "orcpt": r.orcpt,
             "notify": encode_notify(r.notify), "next_attempt_at": now, "created_at": now}
            for r in rcpts]
    if ret is not None:
        ret = ret.upper()
        if ret not in ("FULL", "HDRS"):
            raise ValueError(f"invalid RET {ret!r} (RFC 3461 §4.3)")
    message_id = (await conn.execute(
        insert(_m).values(account_id=account_id, blob_id=blob_id, size=size, sender=sender,
                          ret=ret, envid=envid, body=body, smtputf8=smtputf8,
                          requiretls=requiretls, is_dsn=is_dsn, created_at=now)
        .returning(_m.c.id))).scalar_one()
    for row in rows:
        row["message_id"] = message_id
    await conn.execute(insert(_r), rows)
    await blobrefs.add_ref(conn, blob_id, size, now)
    return message_id


# ---------------------------------------------------------------------------------------------
# Workers: claim, finish, defer
# ---------------------------------------------------------------------------------------------

_CLAIM_COLUMNS = (
    _r.c.id, _r.c.recipient, _r.c.domain, _r.c.orcpt, _r.c.notify, _r.c.attempts,
    _r.c.delay_notified, _r.c.created_at, _r.c.message_id,
)


def _due(now: int):
    return and_(_r.c.state == "queued", _r.c.next_attempt_at <= now,
                or_(_r.c.lease_expires_at.is_(None), _r.c.lease_expires_at <= now))


async def claim(conn: AsyncConnection, *, owner: str, now: int, lease_seconds: int,
                limit: int, exclude_domains: Iterable[str] = ()) -> list[ClaimedRecipient]:
    """Take up to ``limit`` due recipients (oldest due first) for ``owner`` until
    ``now + lease_seconds``, none of ``exclude_domains`` (the domains the worker is already
    delivering to: their recipients wait for its next claim)."""
    cond = _due(now)
    exclude = list(exclude_domains)
    if exclude:
        cond = and_(cond, _r.c.domain.not_in(exclude))
    pick = select(_r.c.id).where(cond).order_by(_r.c.next_attempt_at, _r.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    ids = (await conn.execute(pick)).scalars().all()
    if not ids:
        return []
    rows = (await conn.execute(
        update(_r).where(_r.c.id.in_(ids), cond)
        .values(lease_owner=owner, lease_expires_at=now + lease_seconds)
        .returning(*_CLAIM_COLUMNS))).all()
    msg_ids = sorted({r.message_id for r in rows})
    messages = {m.id: QueuedMessage(**m._mapping) for m in (await conn.execute(
        select(*_m.c).where(_m.c.id.in_(msg_ids)))).all()}
    out = [ClaimedRecipient(r.id, messages[r.message_id], r.recipient, r.domain, r.orcpt,
                            decode_notify(r.notify), r.attempts, bool(r.delay_notified),
                            r.created_at, owner)
           for r in rows if r.message_id in messages]
    out.sort(key=lambda c: (c.domain, c.message.id, c.id))
    return out


async def finish(conn: AsyncConnection, rcpt: ClaimedRecipient, now: int) -> bool:
    """Delete a recipient that is done (delivered, or failed for good) if ``rcpt.lease_owner``
    still holds it; deletes the message and drops its blob reference with its last recipient.
    Returns False when the lease was lost (another worker owns the row now, or it was deleted
    by an operator)."""
    n = (await conn.execute(delete(_r).where(
        _r.c.id == rcpt.id, _r.c.lease_owner == rcpt.lease_owner))).rowcount
    if n != 1:
        return False
    await delete_message_if_done(conn, rcpt.message.id, now)
    return True


async def finish_many(conn: AsyncConnection, rcpts: Sequence[ClaimedRecipient],
                      now: int) -> set[int]:
    """``finish`` for many recipients in a few statements; returns the ids finished (those
    whose lease was still held by their ``lease_owner``)."""
    done: set[int] = set()
    by_owner: dict[str, list[int]] = {}
    for r in rcpts:
        by_owner.setdefault(r.lease_owner, []).append(r.id)
    msg_ids: set[int] = set()
    for owner, ids in by_owner.items():
        for chunk in _chunks(ids):
            rows = (await conn.execute(delete(_r).where(_r.c.id.in_(chunk),
                                                        _r.c.lease_owner == owner)
                                       .returning(_r.c.id, _r.c.message_id))).all()
            done.update(r[0] for r in rows)
            msg_ids.update(r[1] for r in rows)
    await delete_messages_if_done(conn, msg_ids, now)
    return done


def _chunks(ids: Sequence[int], size: int = 500):
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


async def delete_messages_if_done(conn: AsyncConnection, message_ids: Iterable[int],
                                  now: int) -> int:
    """Delete the messages among ``message_ids`` that have no recipient left, dropping their
    blob references; returns how many were deleted."""
    deleted = 0
    for chunk in _chunks(sorted(set(message_ids))):
        left = set((await conn.execute(select(_r.c.message_id).distinct()
                                       .where(_r.c.message_id.in_(chunk)))).scalars().all())
        gone = [m for m in chunk if m not in left]
        if not gone:
            continue
        blobs = (await conn.execute(delete(_m).where(_m.c.id.in_(gone))
                                    .returning(_m.c.blob_id))).scalars().all()
        deleted += len(blobs)
        counts: dict[str, int] = {}
        for b in blobs:
            counts[b] = counts.get(b, 0) + 1
        # blobrefs.drop_ref for many blobs in one executemany (the queue never holds more
        # references than it added, so the negative-count guard of drop_ref is not needed)
        await conn.execute(_DROP_REFS, [{"p_id": b, "p_n": n, "p_now": now}
                                        for b, n in sorted(counts.items())])
    return deleted


_b = schema.blobs
_DROP_REFS = (update(_b).where(_b.c.id == bindparam("p_id"))
              .values(refcount=_b.c.refcount - bindparam("p_n"), updated_at=bindparam("p_now")))


async def delete_message_if_done(conn: AsyncConnection, message_id: int, now: int) -> bool:
    left = (await conn.execute(select(func.count()).select_from(_r)
                               .where(_r.c.message_id == message_id))).scalar_one()
    if left:
        return False
    blob = (await conn.execute(delete(_m).where(_m.c.id == message_id)
                               .returning(_m.c.blob_id))).scalar_one_or_none()
    if blob is not None:
        await blobrefs.drop_ref(conn, blob, now)
    return True


async def defer(conn: AsyncConnection, rcpt: ClaimedRecipient, *, now: int,
                next_attempt_at: int, status: str, error: str,
                delay_notified: bool | None = None) -> bool:
    """Record a temporary failure and when to try again; releases the lease."""
    values = {"attempts": _r.c.attempts + 1, "next_attempt_at": next_attempt_at,
              "last_attempt_at": now, "last_status": status, "last_error": error[:2000],
              "lease_owner": None, "lease_expires_at": None}
    if delay_notified is not None:
        values["delay_notified"] = delay_notified
    n = (await conn.execute(update(_r).where(
        _r.c.id == rcpt.id, _r.c.lease_owner == rcpt.lease_owner).values(**values))).rowcount
    return n == 1


async def renew(conn: AsyncConnection, ids: Sequence[int], owner: str, until: int) -> int:
    """Extend ``owner``'s leases on ``ids`` (a delivery still running); returns how many."""
    if not ids:
        return 0
    return (await conn.execute(update(_r).where(_r.c.id.in_(list(ids)), _r.c.lease_owner == owner)
                               .values(lease_expires_at=until))).rowcount


async def release_lease(conn: AsyncConnection, ids: Sequence[int], owner: str) -> None:
    """Give back claimed rows untouched (worker shutting down, or work it did not start)."""
    if ids:
        await conn.execute(update(_r).where(_r.c.id.in_(list(ids)), _r.c.lease_owner == owner)
                           .values(lease_owner=None, lease_expires_at=None))
