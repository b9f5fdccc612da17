"""Thread assignment through thread_refs, on both engines."""

from __future__ import annotations

from searchhelpers import msg
from sqlalchemy import select

from mailserver.store import schema
from mailserver.store.accountlock import begin_change
from mailserver.store.threads import (
    MAX_REFERENCES,
    assign_thread,
    thread_email_ids,
    thread_message_ids,
)


async def thread_of(mail, account_id: int, email_id: int) -> int:
    async with mail.db.read() as conn:
        return (await conn.execute(select(schema.emails.c.thread_id).where(
            schema.emails.c.account_id == account_id,
            schema.emails.c.id == email_id))).scalar_one()


async def thread_changes(mail, account_id: int) -> list[tuple[int, str]]:
    c = schema.changes
    async with mail.db.read() as conn:
        rows = await conn.execute(select(c.c.object_id, c.c.change).where(
            c.c.account_id == account_id, c.c.object_type == "Thread")
            .order_by(c.c.modseq, c.c.idx))
        return [tuple(r) for r in rows]


async def emails_of_thread(mail, account_id: int, thread_id: int) -> list[int]:
    async with mail.db.read() as conn:
        return await thread_email_ids(conn, account_id, thread_id)


async def test_reply_and_references_chain(mail):
    a = await mail.account("a@example.com")
    root = await mail.add(a, msg("Plans", message_id="root@x"), received_at=100)
    reply = await mail.add(a, msg("Re: Plans", message_id="r1@x", in_reply_to=["root@x"],
                                  references=["root@x"]), received_at=200)
    # the middle message r2 never arrives; r3 still joins through References
    r3 = await mail.add(a, msg("Re: Re: Plans", message_id="r3@x", in_reply_to=["<r2@x>"],
                               references=["<root@x>", "<r1@x>", "<r2@x>"]), received_at=300)
    other = await mail.add(a, msg("Plans", message_id="other@x"), received_at=150)
    t = await thread_of(mail, a, root)
    assert await thread_of(mail, a, reply) == t == await thread_of(mail, a, r3)
    assert await thread_of(mail, a, other) != t
    # r2 arrives late: its own id was recorded by r3
    r2 = await mail.add(a, msg("Re: Plans", message_id="r2@x", in_reply_to=["r1@x"]),
                        received_at=250)
    assert await thread_of(mail, a, r2) == t
    assert await emails_of_thread(mail, a, t) == [root, reply, r2, r3]
    other_t = await thread_of(mail, a, other)
    assert await thread_changes(mail, a) == [
        (t, "c"), (t, "u"), (t, "u"), (other_t, "c"), (t, "u")]


async def test_child_before_parent(mail):
    a = await mail.account("a@example.com")
    child = await mail.add(a, msg("Re: Lunch?", message_id="c@x", in_reply_to=["p@x"],
                                  references=["p@x"]), received_at=500)
    parent = await mail.add(a, msg("Lunch?", message_id="p@x"), received_at=400)
    t = await thread_of(mail, a, child)
    assert await thread_of(mail, a, parent) == t
    assert await emails_of_thread(mail, a, t) == [parent, child]  # receivedAt order
    # a second copy of the same message lands in the same thread too
    dup = await mail.add(a, msg("Lunch?", message_id="<p@x>"), received_at=600)
    assert await thread_of(mail, a, dup) == t
    # another account knowing the same ids has threads of its own
    b = await mail.account("b@example.com")
    await mail.add(b, msg("Hi", message_id="other@x"))  # b's thread 1
    rb = await mail.add(b, msg("Re: Lunch?", message_id="c2@x", in_reply_to=["p@x"]))
    assert await thread_of(mail, b, rb) == 2
    assert await emails_of_thread(mail, a, t) == [parent, child, dup]


async def test_no_ids_and_subject_guard(mail):
    a = await mail.account("a@example.com")
    x = await mail.add(a, msg("Same subject"))
    y = await mail.add(a, msg("Same subject"))
    assert await thread_of(mail, a, x) != await thread_of(mail, a, y)  # no ids: own thread
    p = await mail.add(a, msg("Quarterly report", message_id="q@x"))
    changed = await mail.add(a, msg("Something else entirely", message_id="s@x",
                                    in_reply_to=["q@x"], references=["q@x"]))
    same = await mail.add(a, msg("RE: quarterly REPORT", base_subject="quarterly REPORT",
                                 message_id="t@x", in_reply_to=["q@x"]))
    empty = await mail.add(a, msg("", message_id="u@x", in_reply_to=["q@x"]))
    tp = await thread_of(mail, a, p)
    assert await thread_of(mail, a, changed) != tp  # changed subject: new conversation
    assert await thread_of(mail, a, same) == tp  # base subject compared case-insensitively
    assert await thread_of(mail, a, empty) == tp  # no subject: references decide
    # a reply to the changed-subject message follows it, not the original thread
    follow = await mail.add(a, msg("Re: Something else entirely", message_id="v@x",
                                   references=["q@x", "s@x"]))
    assert await thread_of(mail, a, follow) == await thread_of(mail, a, changed)


async def test_several_threads_lowest_wins_no_merge(mail):
    a = await mail.account("a@example.com")
    one = await mail.add(a, msg("Topic", message_id="one@x"))
    two = await mail.add(a, msg("Topic", message_id="two@x"))
    t1, t2 = await thread_of(mail, a, one), await thread_of(mail, a, two)
    assert t1 < t2
    both = await mail.add(a, msg("Re: Topic", message_id="both@x",
                                 references=["two@x", "one@x"]))
    assert await thread_of(mail, a, both) == t1
    assert await thread_of(mail, a, two) == t2  # existing emails never move
    assert await emails_of_thread(mail, a, t2) == [two]
    # ids already mapped keep their thread
    later = await mail.add(a, msg("Re: Topic", message_id="later@x", in_reply_to=["two@x"]))
    assert await thread_of(mail, a, later) == t2


async def test_assign_thread_direct(mail):
    a = await mail.account("a@example.com")
    long_id = "x" * 600 + "@x"
    refs = ["root@x", *[f"m{i}@x" for i in range(200)]]
    parsed = msg("S", message_id="<self@x>", in_reply_to=[" <m199@x> "], references=refs)
    ids = thread_message_ids(parsed)
    assert ids[:3] == ["self@x", "m199@x", "root@x"]
    assert len(ids) == 2 + MAX_REFERENCES  # root + the last ones (m199 counted once)
    assert thread_message_ids(msg("S", message_id=long_id, in_reply_to=[""])) == []
    async with mail.db.write() as conn:
        cs = await begin_change(conn, a)
        t = await assign_thread(conn, cs, parsed)
        again = await assign_thread(conn, cs, msg("S", references=["m150@x"]))
        await cs.flush(conn)
    assert again == t
    assert [(r["object_type"], r["object_id"], r["change"]) for r in cs.rows] == []  # flushed
    async with mail.db.read() as conn:
        n = len((await conn.execute(select(schema.thread_refs.c.message_id).where(
            schema.thread_refs.c.account_id == a))).all())
    assert n == len(ids)
    assert await thread_changes(mail, a) == [(t, "c")]  # recorded once per change set
