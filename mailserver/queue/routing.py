"""Where mail for a domain goes: the MX hosts and their addresses, in the order to try them.

RFC 5321 §5.1: MX records by preference, equal preferences shuffled (load spreading), each
host's addresses tried in turn; a domain with no MX but an address record is its own mail host
(implicit MX); an address literal ``[192.0.2.1]`` is used as is. RFC 7505: a null MX
(``MX 0 .``) means the domain accepts no mail — a permanent failure. CNAMEs on the way are
followed by the resolver (``dns.asyncresolver`` returns the final rrset).

Addresses of a host: A first, then AAAA. (IPv4 first because a host without IPv6
connectivity should not pay a failed connect per MX; a dual-stack host reaches either.)
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from mailserver.mailauth.dns import DnsTempError, Resolver

__all__ = ["Route", "RoutingError", "route_domain", "host_addresses"]


class RoutingError(Exception):
    """No route. ``permanent``: bounce now (null MX, no such domain); else retry later."""

    def __init__(self, message: str, *, status: str, permanent: bool) -> None:
        super().__init__(message)
        self.status = status
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Route:
    host: str  # the MX name (or the domain itself, or the literal)
    preference: int
    literal: str | None = None  # an address literal needs no lookup
    secure: bool = False  # the MX answer was DNSSEC-validated (DANE, RFC 7672 §2.2.1)


async def route_domain(resolver: Resolver, domain: str, rng: random.Random) -> list[Route]:
    """MX hosts for ``domain`` in the order to try them; raises ``RoutingError``."""
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            raise RoutingError(f"bad address literal {domain}", status="5.1.2",
                               permanent=True) from None
        return [Route(domain, 0, literal)]
    try:
        answer = await resolver.query(domain, "MX")
    except DnsTempError as e:
        raise RoutingError(f"MX lookup for {domain}: {e}", status="4.4.3",
                           permanent=False) from None
    if answer.nxdomain:
        # RFC 5321 §5.1: no such domain — nothing to retry
        raise RoutingError(f"domain {domain} does not exist", status="5.1.2", permanent=True)
    records = sorted(((r.preference, r.exchange.to_text().rstrip(".").lower())  # type: ignore[attr-defined]
                      for r in answer.rrset))
    secure = answer.secure
    if not records:
        return [Route(domain, 0, secure=secure)]  # implicit MX (RFC 5321 §5.1)
    if len(records) == 1 and records[0][1] == "":
        raise RoutingError(f"{domain} accepts no mail (null MX)", status="5.1.10",
                           permanent=True)  # RFC 7505 §4.2
    out: list[Route] = []
    i = 0
    while i < len(records):
        j = i
        while j < len(records) and records[j][0] == records[i][0]:
            j += 1
        group = [Route(name, pref, secure=secure) for pref, name in records[i:j] if name]
        rng.shuffle(group)
        out.extend(group)
        i = j
    return out


async def host_addresses(resolver: Resolver, route: Route) -> list[str]:
    """The addresses of one MX host (A then AAAA); [] when it has none. Raises
    ``DnsTempError`` when neither lookup answered."""
    if route.literal is not None:
        return [route.literal]
    try:
        return [route.host] if ipaddress.ip_address(route.host) else []
    except ValueError:
        pass
    out: list[str] = []
    errors = 0
    for fn in (resolver.a, resolver.aaaa):
        try:
            out.extend(await fn(route.host))
        except DnsTempError:
            errors += 1
    if errors == 2:
        raise DnsTempError(f"no address lookup for {route.host} answered")
    return out
