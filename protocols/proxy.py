"""The PROXY protocol header (HAProxy, versions 1 and 2), sans I/O.

A load balancer that speaks the PROXY protocol sends one header before any byte of the real
protocol (and before a TLS ClientHello on implicit-TLS ports), telling the server who the client
really is. Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt ("the spec").

    result = parse_header(buffered_bytes)
    if result is NEED_DATA: read more (never more than MAX_V1 / MAX_V2 octets in all)
    else: header, consumed = result      # ProxyError on anything malformed: close the connection

``header_length(prefix)`` tells from the first octets how long the header is, so a daemon can
read exactly the header off a socket and leave whatever follows (a TLS ClientHello) unread.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = [
    "NEED_DATA", "ProxyError", "ProxyHeader", "parse_header", "header_length", "V2_SIGNATURE",
    "MAX_V1", "MAX_V2", "encode_v1", "encode_v2",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # spec §2.2: 12 octets
V1_PREFIX = b"PROXY "
MAX_V1 = 107  # spec §2.1: the longest v1 line, CRLF included
V2_FIXED = 16  # signature, ver/cmd, family, length
MAX_V2 = V2_FIXED + 65535  # the length field is 16 bits; we accept what the spec allows

# spec §2.2: address family (high nibble) and transport (low nibble)
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0, 1, 2, 3
_ADDR_LEN = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}

# spec §2.2.1 TLV types we name
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_SSL = 0x20


class ProxyError(ValueError):
    """The bytes are not a valid PROXY header (the connection must be closed, spec §2)."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the proxy said. ``source``/``destination`` are (host, port) for TCP over IPv4/IPv6,
    None for LOCAL connections (health checks), UNKNOWN and UNIX/unspecified families: the
    daemon then keeps the socket's own addresses."""

    version: int  # 1 or 2
    local: bool  # v2 LOCAL command: the proxy's own connection, not a relayed client
    transport: str  # "TCP4", "TCP6", "UDP4", "UDP6", "UNIX", "UNKNOWN"
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    tlvs: tuple[tuple[int, bytes], ...] = field(default=(), repr=False)


def header_length(data: bytes) -> int | None | _NeedData:
    """Total header length once it can be told from ``data``; None when ``data`` does not
    start a PROXY header at all; NEED_DATA when more octets are needed to tell."""
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and len(data) < V2_FIXED:
        return NEED_DATA
    if data.startswith(V2_SIGNATURE):
        return V2_FIXED + struct.unpack_from("!H", data, 14)[0]
    if V1_PREFIX.startswith(data[:6]) and len(data) < 6:
        return NEED_DATA
    if data.startswith(V1_PREFIX):
        end = data.find(b"\r\n", 0, MAX_V1)
        if end >= 0:
            return end + 2
        if len(data) >= MAX_V1:
            return None
        return NEED_DATA
    return None


def parse_header(data: bytes) -> tuple[ProxyHeader, int] | _NeedData:
    """Parse the header at the start of ``data``: (header, octets consumed) or NEED_DATA."""
    n = header_length(data)
    if n is NEED_DATA:
        return NEED_DATA
    if n is None:
        raise ProxyError("no PROXY protocol header")
    assert isinstance(n, int)
    if len(data) < n:
        return NEED_DATA
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data[:n]), n
    return _parse_v1(data[:n]), n


def _parse_v1(line: bytes) -> ProxyHeader:
    # spec §2.1: "PROXY" SP proto SP src SP dst SP sport SP dport CRLF; or "PROXY UNKNOWN ..."
    try:
        text = line[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyError("non-ASCII PROXY v1 header") from None
    parts = text.split(" ")
    if len(parts) < 2 or parts[0] != "PROXY":
        raise ProxyError("bad PROXY v1 header")
    proto = parts[1]
    if proto == "UNKNOWN":
        return ProxyHeader(1, False, "UNKNOWN")  # the rest of the line is ignored (§2.1)
    if proto not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyError("bad PROXY v1 header")
    version = 4 if proto == "TCP4" else 6
    src, dst = _v1_addr(parts[2], version), _v1_addr(parts[3], version)
    sport, dport = _v1_port(parts[4]), _v1_port(parts[5])
    return ProxyHeader(1, False, proto, (src, sport), (dst, dport))


def _v1_addr(text: str, version: int) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"bad address in PROXY v1 header: {text!r}") from None
    if addr.version != version:
        raise ProxyError("address family does not match the PROXY v1 protocol")
    return str(addr)


def _v1_port(text: str) -> int:
    # spec §2.1: decimal, no leading zero, 0..65535
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyError(f"bad port in PROXY v1 header: {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyError(f"bad port in PROXY v1 header: {text!r}")
    return port


def _parse_v2(data: bytes) -> ProxyHeader:
    ver_cmd, fam = data[12], data[13]
    if ver_cmd >> 4 != 2:
        raise ProxyError("unsupported PROXY v2 version")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyError("unknown PROXY v2 command")
    family, proto = fam >> 4, fam & 0x0F
    body = data[V2_FIXED:]
    if command == 0:  # LOCAL: spec §2.2 says the receiver must ignore the address block
        return ProxyHeader(2, True, "UNKNOWN", tlvs=_tlvs_or_empty(body, family))
    if family not in (_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX) or proto > 2:
        raise ProxyError("unknown PROXY v2 address family")
    if family == _AF_UNSPEC or proto == 0:
        return ProxyHeader(2, False, "UNKNOWN")
    need = _ADDR_LEN[family]
    if len(body) < need:
        raise ProxyError("PROXY v2 address block too short")
    tlvs = _parse_tlvs(body[need:])
    if family == _AF_UNIX:
        return ProxyHeader(2, False, "UNIX", tlvs=tlvs)
    if family == _AF_INET:
        src = str(ipaddress.IPv4Address(body[0:4]))
        dst = str(ipaddress.IPv4Address(body[4:8]))
        sport, dport = struct.unpack_from("!HH", body, 8)
        transport = "TCP4" if proto == 1 else "UDP4"
    else:
        src = _ip6(body[0:16])
        dst = _ip6(body[16:32])
        sport, dport = struct.unpack_from("!HH", body, 32)
        transport = "TCP6" if proto == 1 else "UDP6"
    return ProxyHeader(2, False, transport, (src, sport), (dst, dport), tlvs)


def _ip6(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    # An IPv4 client relayed over an IPv6 listener: report the IPv4 address (per-IP limits).
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def _tlvs_or_empty(body: bytes, family: int) -> tuple[tuple[int, bytes], ...]:
    need = _ADDR_LEN.get(family, 0)
    try:
        return _parse_tlvs(body[need:]) if len(body) >= need else ()
    except ProxyError:
        return ()


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    out = []
    i = 0
    while i < len(data):
        if len(data) - i < 3:
            raise ProxyError("truncated PROXY v2 TLV")
        kind, length = data[i], struct.unpack_from("!H", data, i + 1)[0]
        if i + 3 + length > len(data):
            raise ProxyError("truncated PROXY v2 TLV")
        out.append((kind, bytes(data[i + 3:i + 3 + length])))
        i += 3 + length
    return tuple(out)


# -- writers (for tests, benchmarks and anyone sitting in front of our own daemons) -----------

def encode_v1(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    version = ipaddress.ip_address(source[0]).version
    proto = "TCP4" if version == 4 else "TCP6"
    return (f"PROXY {proto} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode("ascii"))


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None, *,
              local: bool = False, tlvs: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    tlv_bytes = b"".join(struct.pack("!BH", k, len(v)) + v for k, v in tlvs)
    if local or source is None or destination is None:
        cmd = 0x20 if local else 0x21
        return V2_SIGNATURE + bytes([cmd, 0x00]) + struct.pack("!H", len(tlv_bytes)) + tlv_bytes
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version == 4:
        fam = 0x11
        body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    else:
        fam = 0x21
        body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    body += tlv_bytes
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body
