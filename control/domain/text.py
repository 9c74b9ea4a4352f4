"""Display names people read: refuse characters that make one name look like another.

Bidi controls (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) reorder what follows, so
"Dr. Smith\u202e..." can render as someone else's name in the provider's waiting list; zero-width
characters (U+200B-U+200D, U+2060, U+FEFF) make two names that look the same differ. Every
control (Cc) and format (Cf) character is refused, which covers both sets, plus the line and
paragraph separators (Zl, Zp) that break a one-line label.

Some invisible characters are letters or marks, not format characters: the Hangul fillers
(U+115F, U+1160, U+3164, U+FFA0), the braille blank (U+2800), the combining grapheme joiner
(U+034F), the Khmer inherent vowels (U+17B4, U+17B5) and the Mongolian free variation
selectors (U+180B-U+180D, U+180F). A name of U+3164 alone renders as nothing (a blank name
is otherwise refused) and one inside a name makes two that look the same differ: refused
too. Variation selectors (U+FE00-U+FE0F) stay allowed, since emoji need U+FE0F.
"""

from __future__ import annotations

import unicodedata

_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp"))
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0")


def unsafe_character(text: str) -> str | None:
    """The first character of `text` a display name may not hold, as U+XXXX, or None."""
    for ch in text:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES or ch in _INVISIBLE:
            return f"U+{ord(ch):04X}"
    return None
