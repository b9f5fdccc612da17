"""IMAP flags ↔ JMAP keywords."""

import pytest

from mailserver.store.keywords import (
    InvalidKeyword,
    decode_keywords,
    encode_keywords,
    flags_from_imap,
    flags_to_imap,
    keyword_from_imap,
    keyword_to_imap,
    normalize_keyword,
)


def test_round_trip_system_flags():
    for flag, kw in [("\\Seen", "$seen"), ("\\Answered", "$answered"), ("\\Flagged", "$flagged"),
                     ("\\Draft", "$draft"), ("\\Deleted", "$deleted")]:
        assert keyword_from_imap(flag) == kw and keyword_from_imap(flag.upper()) == kw
        assert keyword_to_imap(kw) == flag
    assert keyword_from_imap("$Forwarded") == "$forwarded" and keyword_to_imap("junk") == "junk"
    assert normalize_keyword("$SEEN") == "$seen" and normalize_keyword("\\seen") == "$seen"
    assert flags_from_imap(["\\Seen", "Work"]) == {"$seen", "work"}
    assert flags_to_imap({"$seen", "work"}) == ["\\Seen", "work"]


def test_encoding_and_invalid():
    assert encode_keywords({"b", "a", "a"}) == "a b" and encode_keywords(()) == ""
    assert decode_keywords("a b") == {"a", "b"} and decode_keywords("") == frozenset()
    for bad in ("\\Recent", "\\Foo", "", "a b", "x(y", "é"):
        with pytest.raises(InvalidKeyword):
            normalize_keyword(bad)
