"""``MailboxView``: what one IMAP session has told its client about the selected mailbox.

The client numbers messages 1..n; those numbers only change when the server says so (EXISTS,
EXPUNGE, VANISHED). So the view keeps the UIDs the client knows, in order (sequence number =
index + 1), with the flags and MODSEQ last reported for each, and the mailbox's HIGHESTMODSEQ
as of the last report. ``sync`` compares that with the store and produces the untagged
responses that bring the client up to date:

- new messages → ``* n EXISTS`` (UIDs only grow, so they go at the end);
- flag changes → ``* n FETCH (FLAGS … [UID] [MODSEQ])``;
- expunges → ``* n EXPUNGE`` (highest first, so the other numbers stay valid) or, with QRESYNC,
  ``* VANISHED uid-set``. RFC 9051 §7.5.1: never while answering FETCH, STORE or SEARCH (and
  the other sequence-number commands) — there the expunged UIDs stay in the view as
  ``pending`` (their numbers still count; FETCH skips them) until a command that may report
  them.

The store is asked "did anything change?" with one indexed row read (the mailbox's
``highest_modseq``); only then does the view read the change log (``vanished_since``,
``changed_since``), falling back to a full UID scan when the log is compacted. The reads go
through ``reads.py`` (plain sqlite3 on SQLite: these run after every command).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from protocols.imap import responses
from protocols.imap.values import SequenceSet

from mailserver.store import messages as msg
from mailserver.store.keywords import flags_to_imap


@dataclass(slots=True)
class MailboxView:
    account_id: int
    mailbox_id: int
    path: str
    uidvalidity: int
    readonly: bool
    uids: list[int] = field(default_factory=list)
    flags: dict[int, frozenset[str]] = field(default_factory=dict)  # uid → stored keywords
    modseqs: dict[int, int] = field(default_factory=dict)
    highest_modseq: int = 0
    max_uid: int = 0  # highest UID ever shown (expunged ones included)
    uid_next: int = 1  # as of SELECT
    pending: set[int] = field(default_factory=set)  # expunged, not yet reported
    saved: list[int] | None = None  # RFC 5182 SEARCH RETURN (SAVE): UIDs
    _kw: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)

    # ---- numbers ------------------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, seqset: SequenceSet, uid: bool) -> list[int]:
        """UIDs (ascending) that a sequence set names. Never materialises the set: ranges are
        clipped against the view (``1:4294967295`` costs what the mailbox holds)."""
        if seqset.saved:
            saved = set(self.saved or ())
            return [u for u in self.uids if u in saved]
        if not self.uids:
            return []
        if not uid:
            out: list[int] = []
            for a, b in seqset.resolved(len(self.uids)):
                a, b = max(a, 1), min(b, len(self.uids))
                if a <= b:
                    out.extend(self.uids[a - 1:b])
            return sorted(set(out))
        # RFC 9051 §6.4.9: "*" is the highest UID in the mailbox
        out = []
        for a, b in seqset.resolved(self.uids[-1]):
            lo = bisect.bisect_left(self.uids, a)
            hi = bisect.bisect_right(self.uids, b)
            out.extend(self.uids[lo:hi])
        return sorted(set(out))

    def to_seqs(self, uids) -> list[int]:
        return [s for s in (self.seq_of(u) for u in uids) if s is not None]

    def remember(self, m: msg.Message) -> None:
        # one frozenset per distinct flag combination: a big mailbox has few of them
        self.flags[m.uid] = self._kw.setdefault(m.keywords, m.keywords)
        self.modseqs[m.uid] = m.modseq

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    async def open(cls, reads, account_id: int, path: str,
                   readonly: bool) -> tuple["MailboxView | None", object]:
        """(view, mailbox) of the mailbox at ``path`` in one read transaction; (None, None)
        when there is no such mailbox. ``reads``: the daemon's ``reads.StoreReads``."""
        box, status, rows = await reads.open_mailbox(account_id, path)
        if box is None:
            return None, None
        view = cls(account_id, box.id, box.path, status.uidvalidity, readonly)
        view.uids = [m.uid for m in rows]
        for m in rows:
            view.remember(m)
        view.highest_modseq = status.highest_modseq
        view.max_uid = max(view.uids[-1] if view.uids else 0, status.uid_next - 1)
        view.uid_next = status.uid_next
        return view, box

    # ---- bringing the client up to date --------------------------------------------------
    async def sync(self, reads, *, allow_expunge: bool, condstore: bool, qresync: bool,
                   utf8: bool = False) -> bytes:
        out: list[bytes] = []
        since = self.highest_modseq
        # one transaction: usually just the one-row status read
        status, rows, gone = await reads.changes(self.account_id, self.mailbox_id, since,
                                                 self.uids)
        changed: list[msg.Message] = []
        new: list[msg.Message] = []
        if status is None:  # deleted by another session: everything is gone
            self.pending.update(self.uids)
        elif status.highest_modseq != since:
            known = self.flags
            for u in gone:
                if u in known:
                    self.pending.add(u)
            for m in rows:
                if m.uid in self.pending:
                    continue
                if m.uid > self.max_uid:
                    new.append(m)
                elif m.uid in known:
                    changed.append(m)
            self.highest_modseq = status.highest_modseq
        if allow_expunge and self.pending:
            gone_uids = sorted(self.pending)
            if qresync:  # RFC 7162 §3.2.10
                out.append(responses.vanished(_uid_set(gone_uids)))
            else:
                for uid in reversed(gone_uids):
                    seq = self.seq_of(uid)
                    if seq is not None:
                        out.append(responses.expunge(seq))
            gone_set = self.pending
            self.uids = [u for u in self.uids if u not in gone_set]
            for u in gone_uids:
                self.flags.pop(u, None)
                self.modseqs.pop(u, None)
            self.pending = set()
        if new:
            for m in new:
                self.uids.append(m.uid)
                self.remember(m)
                self.max_uid = max(self.max_uid, m.uid)
            out.append(responses.exists(len(self.uids)))
        for m in changed:
            if m.keywords == self.flags.get(m.uid) and (
                    not condstore or m.modseq == self.modseqs.get(m.uid)):
                continue
            self.remember(m)
            seq = self.seq_of(m.uid)
            if seq is None:
                continue
            items: list[tuple[str, object]] = [
                ("FLAGS", responses.fetch_flags(flags_to_imap(m.keywords)))]
            if condstore:  # RFC 7162 §3.1.4: UID and MODSEQ in unsolicited FETCH
                items = [("UID", m.uid), *items, ("MODSEQ", (m.modseq,))]
            out.append(responses.fetch(seq, items))
        return b"".join(out)


def _uid_set(uids: list[int]) -> str:
    """Compact ``1:3,7`` form of ascending UIDs."""
    parts: list[str] = []
    start = prev = None
    for u in uids:
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = u
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


uid_set = _uid_set
