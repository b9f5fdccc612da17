"""The PostgreSQL lexemes: ``tokenize`` folds each distinct word once (with an ASCII fast
path); the lexemes must be exactly those of folding every occurrence, in order of first
appearance."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.store.search import MAX_TOKEN_CHARS, _WORD, fold, tokenize, words


def reference(value: str) -> list[str]:
    out = []
    for w in words(value):
        out.extend(t[:MAX_TOKEN_CHARS] for t in _WORD.findall(fold(w)))
    return list(dict.fromkeys(out))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_same_lexemes_as_folding_every_word(value: str) -> None:
    assert list(dict.fromkeys(tokenize(value))) == reference(value)


def test_examples() -> None:
    assert list(dict.fromkeys(tokenize("École école ECOLE Straße ﬁnance naïve x_y"))) == \
        ["ecole", "strasse", "finance", "naive", "x", "y"]
