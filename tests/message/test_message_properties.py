"""Property tests: parse_message never raises and its offsets always nest, on random bytes,
mutated corpus messages and generated MIME trees (whose leaf bodies must come back exactly)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.message import MimePart, parse_message
from mailserver.message.parser import parse_message_strict

CORPUS = [p.read_bytes() for p in sorted((Path(__file__).parent / "corpus").glob("*.eml"))]
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check(raw: bytes) -> None:
    pm = parse_message_strict(raw)  # the strict path: a bug surfaces as an exception here
    assert pm.size == len(raw)
    root = pm.structure
    assert root is not None and root.part_id == ""
    assert root.header_start == 0 and root.body_end == len(raw)
    assert pm.header_end == root.header_end
    _check_part(raw, root)
    assert MimePart.from_dict(json.loads(pm.structure_json())) == root
    assert len(pm.preview) <= 256
    assert parse_message(raw) == pm


def _check_part(raw: bytes, part: MimePart) -> None:
    assert 0 <= part.header_start <= part.header_end <= part.body_start <= part.body_end
    assert part.body_end <= len(raw)
    if part.content_type.startswith("multipart/"):
        assert part.children  # IMAP needs at least one body in a multipart
    for n, child in enumerate(part.children, 1):
        assert part.body_start <= child.header_start and child.body_end <= part.body_end
        if part.embedded is not None:
            assert child.part_id == part.part_id
        else:
            assert child.part_id == (f"{part.part_id}.{n}" if part.part_id else str(n))
        _check_part(raw, child)


@SETTINGS
@given(st.binary(max_size=3000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


_NOISE = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b"--", b":", b"\r\n\r\n", b"=?utf-8?q?", b"?=", b'"', b"(", b"<",
     b";", b"*0*=", b"\x00", b"\xff\xfe", b"--=_B", b"--outer", b"--XYZ--", b"\t", b"%"]
)  # fmt: skip


@st.composite
def mutated(draw) -> bytes:
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(raw)))
        if op == 0:
            del raw[pos:]
        elif op == 1:
            del raw[pos : pos + draw(st.integers(1, 40))]
        elif op == 2:
            raw[pos:pos] = draw(_NOISE)
        elif op == 3:
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=20))
        else:
            end = draw(st.integers(pos, len(raw)))
            raw[pos:pos] = raw[pos:end]
    if draw(st.booleans()):
        raw = bytearray(bytes(raw).replace(b"\r\n", b"\n"))
    return bytes(raw)


@SETTINGS
@given(mutated())
def test_mutated_corpus(raw: bytes) -> None:
    check(raw)


# ---------------------------------------------------------------------------------------------
# generated MIME trees: well-formed input must come back byte-exact

_BODY = st.text(alphabet="abc xyz\n\u00e9", max_size=60).map(lambda s: s.encode("utf-8"))
_BOUNDARY = st.text(alphabet="abcXYZ0123=_.", min_size=1, max_size=12)


def _leaf() -> st.SearchStrategy:
    return st.tuples(
        st.just("leaf"),
        st.sampled_from(["text/plain", "text/html", "application/octet-stream", None]),
        _BODY,
    )


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(
            st.just("multi"),
            st.sampled_from(["mixed", "alternative", "related"]),
            _BOUNDARY,
            st.lists(children, min_size=1, max_size=4),
            _BODY,  # preamble
        ),
        st.tuples(st.just("message"), children),
    )


TREES = st.recursive(_leaf(), _extend, max_leaves=12)


def serialize(node, nl: bytes, counter: list[int], pid: str, expected: dict) -> bytes:
    """Serialize a generated tree; record the expected leaf bodies by section number."""
    kind = node[0]
    if kind == "leaf":
        _, ctype, body = node
        body = body.replace(b"\n", nl)
        expected[pid] = body
        head = b"" if ctype is None else b"Content-Type: " + ctype.encode() + nl
        return b"X-Leaf: " + pid.encode() + nl + head + nl + body
    if kind == "message":
        inner = serialize(node[1], nl, counter, pid, expected)
        return b"Content-Type: message/rfc822" + nl + nl + b"Subject: inner" + nl + inner
    _, sub, boundary, children, preamble = node
    counter[0] += 1
    bnd = f"{boundary}.{counter[0]}".encode()  # unique, but may share prefixes
    out = [b"Content-Type: multipart/" + sub.encode() + b'; boundary="' + bnd + b'"' + nl + nl]
    out.append(preamble.replace(b"\n", nl) + nl)
    prefix = f"{pid}." if pid else ""
    for n, child in enumerate(children, 1):
        out.append(b"--" + bnd + nl)
        out.append(serialize(child, nl, counter, f"{prefix}{n}", expected))
        out.append(nl)
    out.append(b"--" + bnd + b"--" + nl + b"epilogue")
    return b"".join(out)


@SETTINGS
@given(TREES, st.sampled_from([b"\r\n", b"\n"]))
def test_generated_trees_round_trip(tree, nl: bytes) -> None:
    expected: dict[str, bytes] = {}
    raw = b"From: a@b.c" + nl + serialize(tree, nl, [0], "", expected)
    check(raw)
    pm = parse_message_strict(raw)
    leaves = {
        p.part_id: raw[p.body_start : p.body_end]
        for p in pm.structure.walk()
        if not p.children and not p.content_type.startswith("multipart/")
    }
    assert leaves == expected
