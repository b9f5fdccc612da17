"""The RFC 8291 keys parser and encryption (``mailserver.servers.jmap.webpush``) on arbitrary
input: anything a client sends as ``keys`` is either accepted as a valid key pair or refused
with ``KeyError_`` (which PushSubscription/set answers with invalidProperties) — never another
exception; accepted keys always encrypt to a body ``http_ece`` decrypts."""

from __future__ import annotations

import base64

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.servers.jmap import webpush

UA = ec.generate_private_key(ec.SECP256R1())
UA_PUBLIC = UA.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=120),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=8)
key_strings = st.one_of(st.text(max_size=120), st.binary(max_size=100).map(b64),
                        st.just(b64(UA_PUBLIC)), st.just(b64(UA_PUBLIC[:-1] + b"\x00")))


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values,
                 st.fixed_dictionaries({"p256dh": key_strings, "auth": key_strings}),
                 st.fixed_dictionaries({"p256dh": key_strings,
                                        "auth": st.binary(min_size=16, max_size=16).map(b64)})))
def test_parse_keys_accepts_or_refuses_cleanly(keys):
    try:
        public, auth = webpush.parse_keys(keys)
    except webpush.KeyError_:
        return
    assert len(public) == 65 and len(auth) == 16
    body = webpush.encrypt(b'{"@type":"StateChange"}', public, auth)
    if public == UA_PUBLIC:
        assert http_ece.decrypt(body, private_key=UA, auth_secret=auth,
                                version="aes128gcm") == b'{"@type":"StateChange"}'


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000))
def test_any_payload_round_trips(payload):
    auth = bytes(range(16))
    body = webpush.encrypt(payload, UA_PUBLIC, auth)
    assert http_ece.decrypt(body, private_key=UA, auth_secret=auth,
                            version="aes128gcm") == payload
