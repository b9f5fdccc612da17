"""PROXY protocol v1/v2 headers (protocols/proxy.py): the spec's examples, every truncation,
malformed input, round trips, and a fuzz that only ever sees ProxyError or NEED_DATA."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import proxy
from protocols.proxy import NEED_DATA, ProxyError, ProxyHeader, encode_v1, encode_v2, parse_header

SIG = proxy.V2_SIGNATURE


def parsed(data: bytes) -> tuple[ProxyHeader, int]:
    result = parse_header(data)
    assert result is not NEED_DATA
    return result  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# v1
# ------------------------------------------------------------------------------------------------

def test_v1_tcp4_and_what_follows_is_left_alone() -> None:
    data = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\nUSER alice\r\n"
    header, n = parsed(data)
    assert data[n:] == b"USER alice\r\n"
    assert header == ProxyHeader(1, False, "TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 110))


def test_v1_tcp6_and_unknown() -> None:
    header, _ = parsed(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n")
    assert header.source == ("2001:db8::1", 1) and header.destination == ("2001:db8::2", 65535)
    header, n = parsed(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
    assert header.transport == "UNKNOWN" and header.source is None
    assert parsed(b"PROXY UNKNOWN\r\n")[0].transport == "UNKNOWN"


def test_v1_longest_line_is_accepted_and_one_more_octet_is_not() -> None:
    # spec §2.1: 107 octets is the worst case, CRLF included
    longest = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
               b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(longest) == proxy.MAX_V1
    assert parsed(longest)[1] == proxy.MAX_V1
    tcp6 = longest.replace(b"UNKNOWN", b"TCP6")
    assert parsed(tcp6)[0].source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    too_long = b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n"
    with pytest.raises(ProxyError):
        parse_header(too_long)
    assert proxy.header_length(b"PROXY " + b"x" * 200) is None  # no CRLF in 107 octets


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",  # a field missing
    b"PROXY TCP4 192.0.2.1  198.51.100.2 56324 110\r\n",  # double space
    b"PROXY TCP4 2001:db8::1 198.51.100.2 56324 110\r\n",  # family mismatch
    b"PROXY TCP6 192.0.2.1 198.51.100.2 56324 110\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 110\r\n",  # leading zero
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 110\r\n",  # port out of range
    b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 110\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1\xd9\xa1 110\r\n",  # non-ASCII digit
    b"PROXY TCP4 192.0.2.999 198.51.100.2 1 110\r\n",
    b"PROXY UDP4 192.0.2.1 198.51.100.2 1 110\r\n",
    b"PROXY tcp4 192.0.2.1 198.51.100.2 1 110\r\n",
    b"PROXY \r\n",
])
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_header(line)


def test_not_a_proxy_header() -> None:
    for data in (b"USER alice\r\n", b"\x16\x03\x01\x00\xa5", b"GET / HTTP/1.1\r\n", b"proxy "):
        assert proxy.header_length(data) is None
        with pytest.raises(ProxyError):
            parse_header(data)


# ------------------------------------------------------------------------------------------------
# v2
# ------------------------------------------------------------------------------------------------

def test_v2_ipv4_with_tlvs() -> None:
    data = encode_v2(("192.0.2.1", 40000), ("198.51.100.2", 995),
                     tlvs=((proxy.PP2_TYPE_ALPN, b"pop3"), (proxy.PP2_TYPE_AUTHORITY, b"mx")))
    header, n = parsed(data + b"\x16\x03\x01")
    assert n == len(data)
    assert header.version == 2 and not header.local and header.transport == "TCP4"
    assert header.source == ("192.0.2.1", 40000) and header.destination == ("198.51.100.2", 995)
    assert header.tlvs == ((1, b"pop3"), (2, b"mx"))


def test_v2_ipv6_and_mapped_ipv4() -> None:
    header, _ = parsed(encode_v2(("2001:db8::7", 1), ("2001:db8::8", 2)))
    assert header.transport == "TCP6" and header.source == ("2001:db8::7", 1)
    header, _ = parsed(encode_v2(("::ffff:192.0.2.9", 1), ("::1", 2)))
    assert header.source == ("192.0.2.9", 1)  # reported as the IPv4 client it is


def test_v2_local_unspec_unix_udp() -> None:
    header, _ = parsed(encode_v2(None, None, local=True))
    assert header.local and header.source is None
    # LOCAL ignores whatever address block follows (spec §2.2)
    body = b"\x00" * 5
    header, _ = parsed(SIG + bytes([0x20, 0x11]) + struct.pack("!H", len(body)) + body)
    assert header.local
    header, _ = parsed(encode_v2(None, None))  # PROXY + UNSPEC
    assert header.transport == "UNKNOWN" and header.source is None
    unix = b"/a".ljust(108, b"\x00") + b"/b".ljust(108, b"\x00")
    header, _ = parsed(SIG + bytes([0x21, 0x31]) + struct.pack("!H", 216) + unix)
    assert header.transport == "UNIX" and header.source is None
    udp = bytes([192, 0, 2, 1, 192, 0, 2, 2]) + struct.pack("!HH", 53, 5353)
    header, _ = parsed(SIG + bytes([0x21, 0x12]) + struct.pack("!H", 12) + udp)
    assert header.transport == "UDP4" and header.source == ("192.0.2.1", 53)


@pytest.mark.parametrize("fixed", [
    bytes([0x11, 0x11]),  # version 1 in a v2 header
    bytes([0x22, 0x11]),  # command 2
    bytes([0x21, 0x41]),  # family 4
    bytes([0x21, 0x13]),  # transport 3
])
def test_v2_bad_fixed_part(fixed: bytes) -> None:
    body = b"\x00" * 12
    with pytest.raises(ProxyError):
        parse_header(SIG + fixed + struct.pack("!H", len(body)) + body)


def test_v2_short_address_block_and_truncated_tlv() -> None:
    with pytest.raises(ProxyError):
        parse_header(SIG + bytes([0x21, 0x11]) + struct.pack("!H", 6) + b"\x00" * 6)
    body = b"\x00" * 12 + bytes([0x01, 0x00, 0x09]) + b"ab"  # TLV says 9, carries 2
    with pytest.raises(ProxyError):
        parse_header(SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body)
    body = b"\x00" * 12 + b"\x01\x00"  # TLV header cut
    with pytest.raises(ProxyError):
        parse_header(SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body)


# ------------------------------------------------------------------------------------------------
# Truncation, round trips, fuzz
# ------------------------------------------------------------------------------------------------

HEADERS = [
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\n",
    b"PROXY UNKNOWN\r\n",
    encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=((0x20, b"\x01" * 5),)),
    encode_v2(("2001:db8::1", 1), ("2001:db8::2", 2)),
    encode_v2(None, None, local=True),
]


@pytest.mark.parametrize("header", HEADERS)
def test_every_prefix_needs_data_and_length_is_known_early(header: bytes) -> None:
    for i in range(len(header)):
        assert parse_header(header[:i]) is NEED_DATA, i
    n = proxy.header_length(header[:proxy.V2_FIXED] if header.startswith(SIG) else header)
    assert n == len(header)
    assert parsed(header + b"rest")[1] == len(header)


ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)


@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports,
       st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4))
@settings(max_examples=200, deadline=None)
def test_round_trip(addrs, sport, dport, tlvs) -> None:
    src, dst = addrs
    h1, n1 = parsed(encode_v1((src, sport), (dst, dport)))
    assert (h1.source, h1.destination) == ((src, sport), (dst, dport))
    data = encode_v2((src, sport), (dst, dport), tlvs=tuple(tlvs))
    h2, n2 = parsed(data)
    assert n2 == len(data)
    assert (h2.source, h2.destination, h2.tlvs) == ((src, sport), (dst, dport),
                                                    tuple((k, v) for k, v in tlvs))


@given(st.one_of(
    st.binary(max_size=300),
    st.sampled_from(HEADERS).flatmap(lambda h: st.tuples(
        st.just(h), st.integers(0, len(h) - 1), st.binary(max_size=3))).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):]),
    st.binary(max_size=120).map(lambda b: b"PROXY " + b),
    st.binary(max_size=300).map(lambda b: SIG + b),
))
@settings(max_examples=800, deadline=None)
def test_fuzz_only_proxy_error_or_need_data(data: bytes) -> None:
    try:
        result = parse_header(data)
    except ProxyError:
        return
    if result is NEED_DATA:
        n = proxy.header_length(data)
        assert n is NEED_DATA or (isinstance(n, int) and n > len(data))
        assert len(data) < proxy.MAX_V2
        return
    header, n = result
    assert 0 < n <= len(data) and header.version in (1, 2)
