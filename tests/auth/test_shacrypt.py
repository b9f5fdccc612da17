"""SHA-crypt against the specification's vectors and, where it still exists, crypt(3)."""

import random
import string
import warnings

import pytest

from mailserver.auth.shacrypt import ShaCryptError, sha_crypt, verify_sha_crypt

# Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", the test vectors of the spec.
SPEC_VECTORS = [
    ("$5$saltstring", "Hello world!",
     "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("$5$rounds=10000$saltstringsaltstring", "Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
    ("$5$rounds=5000$toolongsaltstring", "This is just a test",
     "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"),
    ("$5$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"),
    ("$5$rounds=77777$short", "we have a short salt string but not a short password",
     "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"),
    ("$5$rounds=123456$asaltof16chars..", "a short string",
     "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"),
    ("$5$rounds=10$roundstoolow", "the minimum number is still observed",
     "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbY"
     "EdFCoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0"
     "Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZx"
     "Uhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("$6$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3Cm"
     "Ls66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("$6$rounds=77777$short", "we have a short salt string but not a short password",
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCa"
     "UeOxFmtlcGZelFl5CxtgfiAc0"),
    ("$6$rounds=123456$asaltof16chars..", "a short string",
     "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6yc"
     "ULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58j"
     "aTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."),
]


@pytest.mark.parametrize("setting,password,expected", SPEC_VECTORS)
def test_spec_vectors(setting, password, expected):
    assert sha_crypt(password, setting) == expected
    # the complete hash works as a setting too (verification re-hashes with it)
    assert verify_sha_crypt(expected, password)
    if "rounds=" not in setting or int(setting.split("=")[1].split("$")[0]) < 20000:
        assert not verify_sha_crypt(expected, password + "x")


def _system_crypt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # Python ≥ 3.13
            return None
    return crypt


def test_against_system_crypt():
    crypt = _system_crypt()
    if crypt is None:
        pytest.skip("the crypt module is gone (Python ≥ 3.13); the spec vectors stand alone")
    rng = random.Random(20240601)
    alphabet = string.ascii_letters + string.digits + "./"
    cases = [("", "$6$abc"), ("é" * 70, "$6$abc"), ("x" * 200, "$5$abcdefghijklmnop"),
             ("pässwörd", "$6$rounds=1000$a")]
    for _ in range(24):
        pw = "".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 90)))
        salt = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 17)))
        variant = rng.choice("56")
        rounds = rng.choice([None, 1000, 1001, 4999, 5000, 6001])
        setting = f"${variant}$" + (f"rounds={rounds}$" if rounds else "") + salt
        cases.append((pw, setting))
    for pw, setting in cases:
        assert sha_crypt(pw, setting) == crypt.crypt(pw, setting), (pw, setting)


def test_bytes_password_and_utf8():
    h = sha_crypt("pässwörd", "$6$salt")
    assert sha_crypt("pässwörd".encode(), "$6$salt") == h
    assert verify_sha_crypt(h, "pässwörd".encode())


@pytest.mark.parametrize("bad", ["", "$6", "$7$salt$x", "$1$abc$def", "6$salt$x",
                                 "$6$rounds=abc$salt$x", "$6$rounds=1000", "$6$sa:lt$x",
                                 "$6$sälz$x"])
def test_malformed(bad):
    with pytest.raises(ShaCryptError):
        sha_crypt("pw", bad)
    assert verify_sha_crypt(bad, "pw") is False


def test_truncated_or_altered_hash_does_not_verify():
    h = sha_crypt("pw", "$6$salt")
    assert not verify_sha_crypt(h[:-1], "pw")
    assert not verify_sha_crypt(h + "A", "pw")
    assert not verify_sha_crypt(h.replace("$6$salt", "$6$SALT"), "pw")
