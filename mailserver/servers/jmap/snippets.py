"""SearchSnippet (RFC 8621 §5): the subject and a piece of the body with the words of the
filter's text/subject/body conditions marked (``<mark>``), HTML-escaped."""

from __future__ import annotations

import html
import re
from typing import Any

from mailserver.store import search

# ---------------------------------------------------------------------------------------------

def filter_words(flt: Any) -> tuple[list[str], list[str]]:
    subject: list[str] = []
    body: list[str] = []

    def walk(f: Any) -> None:
        if not isinstance(f, dict):
            return
        if "operator" in f:
            if f["operator"] != "NOT":
                for c in f.get("conditions") or []:
                    walk(c)
            return
        for key in ("text", "subject"):
            if isinstance(f.get(key), str):
                subject.extend(search.words(f[key]))
        for key in ("text", "body"):
            if isinstance(f.get(key), str):
                body.extend(search.words(f[key]))
    walk(flt)
    return subject, body


def _word_re(words: list[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})\w*", re.IGNORECASE)


def highlight(value: str, words: list[str]) -> str | None:
    """HTML-escaped ``value`` with the words (as token prefixes) in ``<mark>`` (RFC 8621 §5)."""
    if not words:
        return None
    pattern = _word_re(words)
    out, pos, hit = [], 0, False
    for m in pattern.finditer(value):
        out.append(html.escape(value[pos:m.start()], quote=False))
        out.append("<mark>" + html.escape(m.group(0), quote=False) + "</mark>")
        pos, hit = m.end(), True
    out.append(html.escape(value[pos:], quote=False))
    return "".join(out) if hit else None


def snippet(body: str, words: list[str], width: int = 255) -> str | None:
    m = _word_re(words).search(body)
    if m is None:
        return None
    start = max(0, m.start() - 40)
    piece = " ".join(body[start:start + width].split())
    return highlight(piece, words)
