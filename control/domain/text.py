"""Display names people read: refuse characters that make one name look like another.

Bidi controls (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) reorder what follows, so
"Dr. Smith\u202e..." can render as someone else's name in the provider's waiting list; zero-width
characters (U+200B-U+200D, U+2060, U+FEFF) make two names that look the same differ. Every
control (Cc) and format (Cf) character is refused, which covers both sets, plus the line and
paragraph separators (Zl, Zp) that break a one-line label.
"""

from __future__ import annotations

import unicodedata

_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp"))


def unsafe_character(text: str) -> str | None:
    """The first character of `text` a display name may not hold, as U+XXXX, or None."""
    for ch in text:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return f"U+{ord(ch):04X}"
    return None
