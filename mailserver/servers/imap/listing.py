"""LIST / LSUB: pattern matching and mailbox attributes (RFC 9051 §6.3.9, RFC 5258, RFC 6154).

One personal namespace, "" with separator "/". Attributes: \\HasChildren / \\HasNoChildren
(CHILDREN, always sent), the special-use attribute of the mailbox's role (always sent, RFC
6154 §2 permits it), \\Subscribed with the SUBSCRIBED selection or return option. The store
creates missing parents, so \\NonExistent never occurs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from protocols.imap import responses

SEP = "/"
ROLE_ATTR = {"sent": "\\Sent", "drafts": "\\Drafts", "trash": "\\Trash", "junk": "\\Junk",
             "archive": "\\Archive", "all": "\\All", "flagged": "\\Flagged",
             "important": "\\Important"}


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 9051 §6.3.9: ``*`` matches anything, ``%`` anything but the separator."""
    if pattern.startswith(SEP) or not reference:
        full = pattern
    else:
        full = reference + ("" if reference.endswith(SEP) else "") + pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.S)


def _matches(rxs: list[re.Pattern[str]], path: str) -> bool:
    if any(rx.fullmatch(path) for rx in rxs):
        return True
    # INBOX is case-insensitive (RFC 9051 §5.1): "inbox" and "Inbox/%" name it too
    if path == "INBOX" or path.startswith("INBOX/"):
        return any(re.fullmatch(rx.pattern, path, re.S | re.I) for rx in rxs)
    return False


def _attrs(box, has_children: bool, subscribed: bool) -> list[str]:
    attrs = ["\\HasChildren" if has_children else "\\HasNoChildren"]
    if box.role in ROLE_ATTR:
        attrs.append(ROLE_ATTR[box.role])
    if subscribed and box.subscribed:
        attrs.append("\\Subscribed")
    return attrs


def list_responses(cmd, boxes, utf8: bool) -> Iterator[tuple[bytes, object]]:
    """(line, mailbox or None) for each LIST answer line."""
    params = cmd.params
    sel = set(params.selection)
    ret = set(params.returns)
    if len(cmd.patterns) == 1 and cmd.patterns[0] == "" and not cmd.params.selection:
        # RFC 9051 §6.3.9: LIST "" "" asks for the hierarchy delimiter
        yield responses.list_response(["\\Noselect"], SEP, "", utf8=utf8), None
        return
    rxs = [pattern_regex(cmd.reference, p) for p in cmd.patterns]
    parents = {b.parent_id for b in boxes if b.parent_id is not None}
    by_id = {b.id: b for b in boxes}
    show_subscribed = "SUBSCRIBED" in sel or "SUBSCRIBED" in ret
    special_only = "SPECIAL-USE" in sel
    for box in boxes:
        matched = _matches(rxs, box.path)
        child_info: list[str] = []
        if "SUBSCRIBED" in sel:
            if not box.subscribed:
                # RFC 5258 §3.5 RECURSIVEMATCH: a non-subscribed parent of subscribed children
                if matched and "RECURSIVEMATCH" in sel and any(
                        b.subscribed and _is_descendant(b, box.id, by_id) for b in boxes):
                    child_info = ["SUBSCRIBED"]
                    attrs = _attrs(box, box.id in parents, False)
                    yield responses.list_response(attrs, SEP, box.path, utf8=utf8,
                                                  child_info=child_info), box
                continue
        if special_only and box.role not in ROLE_ATTR:
            continue
        if not matched:
            continue
        attrs = _attrs(box, box.id in parents, show_subscribed)
        yield responses.list_response(attrs, SEP, box.path, utf8=utf8), box


def _is_descendant(box, ancestor_id: int, by_id) -> bool:
    p = box.parent_id
    while p is not None:
        if p == ancestor_id:
            return True
        parent = by_id.get(p)
        p = parent.parent_id if parent else None
    return False


def lsub_responses(cmd, boxes, utf8: bool) -> Iterator[bytes]:
    if cmd.pattern == "":
        yield responses.lsub_response(["\\Noselect"], SEP, "", utf8=utf8)
        return
    rx = pattern_regex(cmd.reference, cmd.pattern)
    for box in boxes:
        if box.subscribed and _matches([rx], box.path):
            yield responses.lsub_response([], SEP, box.path, utf8=utf8)
