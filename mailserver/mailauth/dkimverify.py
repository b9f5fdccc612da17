"""DKIM (RFC 6376, RFC 8463) and ARC (RFC 8617) verification of received messages.

The DKIM/ARC logic is dkimpy's (with the faster drop-ins of ``dkimpy_fast``); what this
module adds:

- **Async DNS without blocking the loop.** dkimpy asks for keys through a synchronous
  ``dnsfunc``. We first read every ``s=``/``d=`` pair from the message's DKIM-Signature,
  ARC-Message-Signature and ARC-Seal fields, fetch all those TXT records concurrently through
  our ``Resolver`` (and its cache), and then run dkimpy with a ``dnsfunc`` that only reads
  those prefetched answers. Verification then costs CPU only: it runs inline for ordinary
  messages and in a worker thread above ``INLINE_LIMIT`` bytes (hashing a large body would
  stall every other session on the loop).
- ``rsa-sha1`` signatures are not accepted (RFC 8301 §3.1): permerror. A signature whose
  ``l=`` leaves part of the body unsigned gives ``policy``, not ``pass`` (RFC 6376 §8.2:
  anyone may append to it), so it cannot make DMARC pass.
- **RFC 8601 result codes** instead of dkimpy's booleans: ``pass``; ``fail`` (bad signature or
  body hash); ``permerror`` (malformed signature, no key, revoked or unusable key, key type not
  the one ``a=`` names); ``temperror`` (the key lookup failed: SERVFAIL/timeout); ``none``
  (no signature). Nothing a sender puts in a message makes this module raise: every dkimpy
  exception, and anything unexpected from parsing hostile input, becomes a ``permerror``.
- **A bound on work**: at most ``max_signatures`` DKIM signatures are checked (RFC 6376 §6.1
  lets verifiers limit them); the rest are ignored. An ARC chain naming more than
  ``MAX_ARC_KEYS`` different keys fails without any lookup.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import dkim as dkimpy
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import parse_tag_value

from mailserver.mailauth import dkimpy_fast  # noqa: F401  (installs faster dkimpy hot spots)
from mailserver.mailauth.dns import DnsTempError, Resolver

__all__ = ["ArcResult", "DkimResult", "INLINE_LIMIT", "verify_arc", "verify_dkim"]

DkimOutcome = Literal["pass", "fail", "policy", "neutral", "permerror", "temperror", "none"]
ArcOutcome = Literal["pass", "fail", "none"]

INLINE_LIMIT = 256 * 1024  # bytes; larger messages are verified in a worker thread
MAX_SIGNATURES = 10
MAX_ARC_KEYS = 16  # distinct keys one ARC chain may make us look up (real chains: a few)
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers MUST accept 1024..4096-bit keys

# dkimpy logs every failure at ERROR; a forged signature is an outcome, not our error
_quiet = logging.getLogger("mailserver.mailauth.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False
_quiet.setLevel(logging.CRITICAL + 1)

# selector and domain as DNS labels: anything else cannot name a key we would look up
_DNS_NAME = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,250}[A-Za-z0-9_])?")
_SIG_FIELDS = (b"dkim-signature", b"arc-message-signature", b"arc-seal",
               b"arc-authentication-results")


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: DkimOutcome
    domain: str = ""  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i= (AUID)
    b_prefix: str = ""  # the first 8 characters of b= (RFC 6008 header.b)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ArcResult:
    result: ArcOutcome
    instances: int = 0  # the highest i= in the chain (0 = not ARC-sealed)
    sealers: tuple[str, ...] = ()  # ARC-Seal d= per instance, newest first
    reason: str = ""


# -- key prefetch ---------------------------------------------------------------------------


_TEMP = object()  # marker: the lookup failed temporarily


def _key_name(tags: dict[bytes, bytes]) -> str | None:
    s, d = tags.get(b"s", b"").strip(), tags.get(b"d", b"").strip()
    if not (_DNS_NAME.fullmatch(s) and _DNS_NAME.fullmatch(d)):
        return None
    return (s + b"._domainkey." + d).decode("ascii").lower()


def _signature_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of the signature fields, unparsed, split the way dkimpy's
    ``rfc822_parse`` splits them (so the n-th DKIM-Signature here is dkimpy's index n)."""
    out: list[tuple[bytes, list[bytes]]] = []
    current: list[bytes] | None = None
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    for line in re.split(rb"\r?\n", head):
        if not line:
            break  # end of the header
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        name, sep, value = line.partition(b":")
        current = None
        if sep and name.lower() in _SIG_FIELDS:
            current = [value]
            out.append((name.lower(), current))
    return [(name, b"\r\n".join(parts)) for name, parts in out]


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        return parse_tag_value(value)
    except Exception:  # noqa: BLE001 — hostile input: any parser failure means "malformed"
        return None


async def _prefetch(resolver: Resolver, names: Iterable[str]) -> dict[str, object]:
    """TXT answers by name: the record bytes, None when there is none, or ``_TEMP``."""
    unique = sorted(set(names))

    async def one(name: str) -> object:
        try:
            records = await resolver.txt_bytes(name)
        except DnsTempError:
            return _TEMP
        except Exception:  # noqa: BLE001 — a name dnspython refuses cannot hold a key
            return None
        if not records:
            return None
        # RFC 6376 §3.6.2.2: one record is expected; prefer one that says it is a DKIM key
        return next((r for r in records if r.lstrip().startswith(b"v=DKIM1")), records[0])

    answers = await asyncio.gather(*(one(n) for n in unique))
    return dict(zip(unique, answers, strict=True))


def _dnsfunc(answers: dict[str, object]):  # type: ignore[no-untyped-def]
    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name)
        answer = answers.get(key.rstrip(".").lower())
        if answer is _TEMP:
            raise dkimpy.DnsTimeoutError(f"{key}: temporary DNS failure")
        return answer  # type: ignore[return-value]
    return lookup


def _key_problem(name: str, record: bytes, algorithm: bytes) -> str | None:
    """Why the key record cannot verify an ``algorithm`` signature, or None if it can."""
    try:
        _pk, bits, ktag, _tls = dkimpy.evaluate_pk(name, record)
    except Exception as exc:  # noqa: BLE001
        return f"unusable key: {exc}"[:200]
    if ktag is None:
        return "key not for email"
    if not algorithm.startswith(ktag + b"-"):  # RFC 6376 §3.6.1 k= must match a=
        return f"key type {ktag.decode()} does not match a={algorithm.decode(errors='replace')}"
    if ktag == b"rsa" and bits is not None and bits < MIN_RSA_BITS:
        return f"RSA key too small ({bits} bits)"
    return None


# -- DKIM -----------------------------------------------------------------------------------


def _text(value: bytes | None, limit: int = 255) -> str:
    if not value:
        return ""
    return re.sub(rb"\s+", b"", value).decode("ascii", "replace")[:limit]


def _verify_one(message: dkimpy.DKIM | None, idx: int, tags: dict[bytes, bytes] | None,
                answers: dict[str, object]) -> DkimResult:
    if tags is None:
        return DkimResult("permerror", reason="malformed DKIM-Signature")
    info = dict(domain=_text(tags.get(b"d")).lower(), selector=_text(tags.get(b"s")),
                algorithm=_text(tags.get(b"a")).lower(), identity=_text(tags.get(b"i")),
                b_prefix=_text(tags.get(b"b"))[:8])
    try:
        dkimpy.validate_signature_fields(tags)
    except Exception as exc:  # noqa: BLE001
        return DkimResult("permerror", reason=f"{exc}"[:200], **info)
    if info["algorithm"] not in ("rsa-sha256", "ed25519-sha256"):
        # RFC 8301 §3.1: rsa-sha1 must not be used for verifying
        return DkimResult("permerror", reason=f"algorithm {info['algorithm']} not accepted",
                          **info)
    name = _key_name(tags)
    if name is None:
        return DkimResult("permerror", reason="invalid s= or d=", **info)
    record = answers.get(name)
    if record is _TEMP:
        return DkimResult("temperror", reason=f"key lookup for {name} failed", **info)
    if record is None:
        return DkimResult("permerror", reason=f"no key at {name}", **info)
    problem = _key_problem(name, record, tags[b"a"].strip().lower())  # type: ignore[arg-type]
    if problem:
        return DkimResult("permerror", reason=problem, **info)
    if message is None:
        return DkimResult("permerror", reason="message header cannot be parsed", **info)
    try:
        ok = message.verify(idx, dnsfunc=_dnsfunc(answers))
    except dkimpy.ValidationError as exc:  # body hash mismatch and friends
        return DkimResult("fail", reason=f"{exc}"[:200], **info)
    except Exception as exc:  # noqa: BLE001 — malformed input must never escape
        return DkimResult("permerror", reason=f"{exc}"[:200], **info)
    if not ok:
        return DkimResult("fail", reason="signature did not verify", **info)
    if b"l" in tags:
        # RFC 6376 §8.2: content appended after l= is not signed; such a pass proves nothing
        # about what the reader sees, so it does not count (RFC 8601 §2.7.1 "policy")
        try:
            signed_len = int(tags[b"l"])
            canon = CanonicalizationPolicy.from_c_value(
                tags.get(b"c", b"simple/simple").strip())
            body_len = len(canon.canonicalize_body(message.body))
        except Exception as exc:  # noqa: BLE001
            return DkimResult("permerror", reason=f"{exc}"[:200], **info)
        if signed_len < body_len:
            return DkimResult("policy", reason=f"l= signs {signed_len} of {body_len} body "
                              "bytes", **info)
    return DkimResult("pass", **info)


def _verify_all(raw: bytes, values: list[bytes], answers: dict[str, object],
                max_signatures: int) -> list[DkimResult]:
    try:
        message: dkimpy.DKIM | None = dkimpy.DKIM(raw, logger=_quiet, minkey=MIN_RSA_BITS)
    except Exception:  # noqa: BLE001
        message = None
    results = []
    for idx, value in enumerate(values[:max_signatures]):
        results.append(_verify_one(message, idx, _tags(value), answers))
    return results


async def verify_dkim(raw: bytes, resolver: Resolver, *,
                      max_signatures: int = MAX_SIGNATURES) -> list[DkimResult]:
    """One result per DKIM-Signature field (top first); ``[]`` when the message has none."""
    values = [v for n, v in _signature_fields(raw) if n == b"dkim-signature"][:max_signatures]
    if not values:
        return []
    names = [n for n in (_key_name(t) for t in map(_tags, values) if t) if n]
    answers = await _prefetch(resolver, names)
    if len(raw) > INLINE_LIMIT:
        return await asyncio.to_thread(_verify_all, raw, values, answers, max_signatures)
    return _verify_all(raw, values, answers, max_signatures)


# -- ARC ------------------------------------------------------------------------------------


def _verify_chain(raw: bytes, answers: dict[str, object]) -> ArcResult:
    try:
        arc = dkimpy.ARC(raw, logger=_quiet, minkey=MIN_RSA_BITS)
        cv, data, reason = arc.verify(dnsfunc=_dnsfunc(answers))
    except Exception as exc:  # noqa: BLE001
        return ArcResult("fail", reason=f"{exc}"[:200])
    sealers = tuple(_text(d.get("as-domain")).lower() for d in data)
    instances = max((d.get("instance", 0) for d in data), default=0)
    if cv == dkimpy.CV_Pass:
        return ArcResult("pass", instances, sealers)
    if cv == dkimpy.CV_None and not data:
        return ArcResult("none")
    # cv is CV_Fail, or None: a sealer reported a failed chain (RFC 8617 §5.2)
    return ArcResult("fail", instances, sealers, str(reason)[:200])


async def verify_arc(raw: bytes, resolver: Resolver) -> ArcResult:
    """Validate the ARC chain (RFC 8617 §5.2); ``none`` when the message carries no ARC set."""
    fields = [(n, v) for n, v in _signature_fields(raw) if n != b"dkim-signature"]
    if not fields:
        return ArcResult("none")
    if len(fields) > 3 * 50:  # RFC 8617 §4.2.1: at most 50 instances of 3 fields
        return ArcResult("fail", reason="too many ARC header fields")
    names = {n for n in (_key_name(t) for t in (_tags(v) for _, v in fields) if t) if n}
    if len(names) > MAX_ARC_KEYS:
        return ArcResult("fail", reason=f"ARC sets name {len(names)} different keys")
    answers = await _prefetch(resolver, names)
    temp = [n for n, a in answers.items() if a is _TEMP]
    if len(raw) > INLINE_LIMIT:
        result = await asyncio.to_thread(_verify_chain, raw, answers)
    else:
        result = _verify_chain(raw, answers)
    if result.result == "fail" and temp:
        # the arc method's registered results are none, pass and fail; say why it failed
        return ArcResult("fail", result.instances, result.sealers,
                         f"key lookup failed temporarily: {', '.join(temp)}"[:200])
    return result

