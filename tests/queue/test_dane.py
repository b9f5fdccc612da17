"""DANE (RFC 7672) end to end: knot signs the test zones, a validating unbound on loopback
resolves them (real AD bits; a zone whose trust anchor does not match answers SERVFAIL), and the
queue worker delivers to TLS sinks whose certificates do or do not match the TLSA records."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from qhelpers import FakeClock, make_qenv, message

from mailserver.mailauth.dns import Resolver
from mailserver.queue import dane
from mailserver.testing.dnsserver import KnotServer, UnboundServer, find_knot, find_unbound
from mailserver.testing.tools import missing_tool

NOW = 1_800_000_000
HOSTS = ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")


class Pki:
    """Keys and certificates: self-signed leaves, and a CA with leaves it issued."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test DANE TA")])
        self.ca = self._cert(name, self.ca_key.public_key(), name, self.ca_key, ca=True)

    @staticmethod
    def _cert(subject, public_key, issuer, signer, *, ca=False, names=(), days=(-1, 30)):
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(now + dt.timedelta(days=days[0]))
             .not_valid_after(now + dt.timedelta(days=days[1]))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]), critical=False)
        return b.sign(signer, hashes.SHA256())

    def leaf(self, label: str, *names: str, issued: bool = False,
             days=(-1, 30)) -> tuple[x509.Certificate, ssl.SSLContext]:
        """A certificate (self-signed, or issued by the CA and sent with it) and a server
        context presenting it."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names
                                                else label)])
        if issued:
            cert = self._cert(subject, key.public_key(), self.ca.subject, self.ca_key,
                              names=names, days=days)
            chain = [cert, self.ca]
        else:
            cert = self._cert(subject, key.public_key(), subject, key, names=names, days=days)
            chain = [cert]
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        (self.base / f"{label}.crt").write_bytes(pem)
        (self.base / f"{label}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.base / f"{label}.crt", self.base / f"{label}.key")
        return cert, ctx


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def cert_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def free_port() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            for host in HOSTS:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every sink address")


class World:
    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.pki = Pki(base)
        p = self.pki
        self.good, self.good_ctx = p.leaf("good", "mx.ee.dane.test")
        self.other, self.other_ctx = p.leaf("other", "mx1.mismatch.dane.test")
        self.ta_leaf, self.ta_ctx = p.leaf("ta", "mx.ta.dane.test", issued=True)
        self.ta_wrong, self.ta_wrong_ctx = p.leaf("tawrong", "elsewhere.example", issued=True)
        t = f"_{self.port}._tcp"
        ee = f"TLSA 3 1 1 {spki_sha256(self.good)}"
        ta = f"TLSA 2 0 1 {cert_sha256(self.pki.ca)}"
        signed = f"""
ee            MX 10 mx.ee
mx.ee         A 127.0.0.3
{t}.mx.ee     {ee}
mismatch      MX 10 mx1.mismatch
mismatch      MX 20 mx2.mismatch
mx1.mismatch  A 127.0.0.4
mx2.mismatch  A 127.0.0.5
{t}.mx1.mismatch {ee}
{t}.mx2.mismatch {ee}
notls         MX 10 mx.notls
mx.notls      A 127.0.0.3
{t}.mx.notls  {ee}
ta            MX 10 mx.ta
mx.ta         A 127.0.0.6
{t}.mx.ta     {ta}
tawrong       MX 10 mx.tawrong
mx.tawrong    A 127.0.0.6
{t}.mx.tawrong {ta}
unusable      MX 10 mx.unusable
mx.unusable   A 127.0.0.3
{t}.mx.unusable TLSA 1 1 1 {spki_sha256(self.good)}
plain         MX 10 mx.plain
mx.plain      A 127.0.0.4
implicit      A 127.0.0.3
{t}.implicit  {ee}
"""
        insecure = f"""
@             MX 10 mx
mx            A 127.0.0.4
{t}.mx        {ee}
"""
        if find_knot() is None:
            missing_tool("knotd not installed (Debian package: knot)")
        if find_unbound() is None:
            missing_tool("unbound not installed (Debian package: unbound)")
        zones = {"dane.test": signed, "insecure.test": insecure, "bogus.test": "@ MX 10 mx\n"
                 "mx A 127.0.0.3\n"}
        self.knot = KnotServer.start(zones, signed=("dane.test", "bogus.test"))
        try:
            anchor = self.knot.dnskey("dane.test")
            wrong = anchor.replace("dane.test.", "bogus.test.", 1)  # not bogus.test's key
            self.unbound = UnboundServer.start(self.knot, zones, [anchor, wrong])
        except Exception:
            self.knot.stop()
            raise

    def stop(self) -> None:
        self.unbound.stop()
        self.knot.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("dane"))
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
async def denv(tmp_path, world):
    async with make_qenv(tmp_path, world.unbound, world.port) as q:
        yield q


async def run(q, *recipients: str, requiretls: bool = False):
    await q.enqueue(message(), "alice@example.test", list(recipients), now=NOW,
                    requiretls=requiretls)
    await q.worker(FakeClock(NOW)).run_until_idle()


async def assert_deferred(q, *sinks, text: str = "", status: str = "4.7.5") -> None:
    """Nothing reached ``sinks``; the one queued recipient waits with ``status``/``text``."""
    assert all(sink.received == [] for sink in sinks)
    (row,) = await q.queue_rows()
    assert row.last_status.startswith(status) and text in row.last_error, row


async def test_resolver_sees_the_ad_bit(world):
    r = Resolver([world.unbound.host], port=world.unbound.port, timeout=5.0, dnssec=True)
    assert (await r.query("ee.dane.test", "MX")).secure
    assert (await r.query(f"_{world.port}._tcp.mx.ee.dane.test", "TLSA")).secure
    assert (await r.query("nothing.dane.test", "A")).secure  # authenticated denial
    assert not (await r.query("insecure.test", "MX")).secure
    plain = Resolver([world.unbound.host], port=world.unbound.port, timeout=5.0)
    assert not (await plain.query("ee.dane.test", "MX")).secure  # not asked: not trusted
    with pytest.raises(Exception):  # bogus: SERVFAIL from a validating resolver
        await r.query("bogus.test", "MX")


async def test_dane_ee_match_delivers_over_tls(denv, world):
    sink = await denv.sink("127.0.0.3", tls=world.good_ctx)
    await run(denv, "a@ee.dane.test")
    assert sink.recipients() == ["a@ee.dane.test"] and sink.received[0].tls
    assert await denv.queue_rows() == []


async def test_implicit_mx_uses_the_domain_tlsa(denv, world):
    sink = await denv.sink("127.0.0.3", tls=world.other_ctx)  # does not match
    await run(denv, "b@implicit.dane.test")
    await assert_deferred(denv, sink, text="DANE")


async def test_mismatch_skips_the_host_and_uses_the_next_mx(denv, world):
    bad = await denv.sink("127.0.0.4", tls=world.other_ctx)
    good = await denv.sink("127.0.0.5", tls=world.good_ctx)
    await run(denv, "c@mismatch.dane.test")
    assert bad.received == [] and bad.sessions >= 1  # handshake, then nothing sent
    assert good.recipients() == ["c@mismatch.dane.test"] and good.received[0].tls
    assert await denv.queue_rows() == []


async def test_mismatch_everywhere_defers_without_cleartext(denv, world):
    a = await denv.sink("127.0.0.4", tls=world.other_ctx)
    b = await denv.sink("127.0.0.5", tls=world.other_ctx)
    await run(denv, "d@mismatch.dane.test")
    await assert_deferred(denv, a, b, text="TLSA")


async def test_no_starttls_means_no_delivery(denv, world):
    sink = await denv.sink("127.0.0.3")  # no STARTTLS offered
    await run(denv, "e@notls.dane.test")
    await assert_deferred(denv, sink, text="STARTTLS")


async def test_dane_ta_chain_and_name(denv, world):
    sink = await denv.sink("127.0.0.6", tls=world.ta_ctx)
    await run(denv, "f@ta.dane.test")
    assert sink.recipients() == ["f@ta.dane.test"] and sink.received[0].tls


async def test_dane_ta_wrong_name_defers(denv, world):
    sink = await denv.sink("127.0.0.6", tls=world.ta_wrong_ctx)  # CA ok, name is not the MX
    await run(denv, "g@tawrong.dane.test")
    await assert_deferred(denv, sink, text="names none")


async def test_unusable_tlsa_still_requires_tls(denv, world):
    clear = await denv.sink("127.0.0.3")
    await run(denv, "h@unusable.dane.test")
    await assert_deferred(denv, clear, text="STARTTLS")
    await clear.stop()
    denv.sinks.remove(clear)
    tls = await denv.sink("127.0.0.3", tls=world.other_ctx)  # any certificate will do
    await denv.worker(FakeClock(NOW + 3600)).run_until_idle()
    assert tls.recipients() == ["h@unusable.dane.test"] and tls.received[0].tls


async def test_insecure_zone_is_opportunistic(denv, world):
    sink = await denv.sink("127.0.0.4", tls=world.other_ctx)  # TLSA would not match
    await run(denv, "i@insecure.test", "j@plain.dane.test")
    assert sorted(sink.recipients()) == ["i@insecure.test", "j@plain.dane.test"]


async def test_bogus_zone_defers(denv, world):
    sink = await denv.sink("127.0.0.3", tls=world.good_ctx)
    await run(denv, "k@bogus.test")
    assert sink.sessions == 0
    await assert_deferred(denv, sink, status="4.4.3")


async def test_requiretls_over_dane(denv, world):
    sink = await denv.sink("127.0.0.3", tls=world.good_ctx,
                           extensions=["PIPELINING", "8BITMIME", "REQUIRETLS"])
    await run(denv, "l@ee.dane.test", requiretls=True)
    assert sink.recipients() == ["l@ee.dane.test"]
    assert "REQUIRETLS" in sink.received[0].mail_params


async def test_dane_off_is_opportunistic(tmp_path, world):
    async with make_qenv(tmp_path, world.unbound, world.port, queue={"dane": False}) as q:
        sink = await q.sink("127.0.0.4", tls=world.other_ctx)
        await run(q, "m@mismatch.dane.test")
        assert sink.recipients() == ["m@mismatch.dane.test"]


def test_verify_chain_rules(world):
    ee = dane.DanePolicy(dane.DANE, "mx.ee.dane.test",
                         (dane.Tlsa(3, 1, 1, bytes.fromhex(spki_sha256(world.good))),))
    assert dane.verify_chain(ee, [world.good]) is None
    assert dane.verify_chain(ee, [world.other]) is not None
    assert dane.verify_chain(ee, []) is not None
    full = dane.DanePolicy(dane.DANE, "x", (dane.Tlsa(3, 0, 0, world.good.public_bytes(
        serialization.Encoding.DER)),))
    assert dane.verify_chain(full, [world.good]) is None
    ta = dane.DanePolicy(dane.DANE, "mx.ta.dane.test",
                         (dane.Tlsa(2, 1, 2, hashlib.sha512(world.pki.ca.public_key().public_bytes(
                             serialization.Encoding.DER,
                             serialization.PublicFormat.SubjectPublicKeyInfo)).digest()),))
    assert dane.verify_chain(ta, [world.ta_leaf, world.pki.ca]) is None
    assert "not valid" in dane.verify_chain(ta, [world.ta_leaf, world.pki.ca],
                                            now=NOW + 10 * 365 * 86400)
    assert dane.verify_chain(ta, [world.ta_leaf]) is not None  # TA not sent
    # a self-signed leaf placed before the CA is not issued by it
    forged = dane.verify_chain(dane.DanePolicy(dane.DANE, "mx1.mismatch.dane.test",
                                               ta.records), [world.other, world.pki.ca])
    assert forged is not None and "verify" in forged
    wild, _ = world.pki.leaf("wild", "*.ta.dane.test", issued=True)
    assert dane.verify_chain(ta, [wild, world.pki.ca]) is None
    deep = dane.DanePolicy(dane.DANE, "a.mx.ta.dane.test", ta.records)
    assert dane.verify_chain(deep, [wild, world.pki.ca]) is not None
    assert not dane.Tlsa(0, 1, 1, b"").usable and not dane.Tlsa(3, 2, 1, b"").usable
