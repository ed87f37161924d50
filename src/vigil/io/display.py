r"""Text that came with the data, shown to people: characters that hide or rearrange text made visible.

A key is whatever the producer sent. A right-to-left override (U+202E) makes ``user\u202egnp.exe`` display as
``userexe.png``; a zero-width space makes two keys that look the same differ; a newline or an escape sequence
rewrites the terminal. Wherever the ``vigil`` command prints such text (tables, alert lines), every control,
format (bidi, zero-width), surrogate, private-use or unassigned character, and every line or paragraph
separator, is shown as ``<U+XXXX>`` instead; everything else, spaces and all scripts included, is shown as it is.

Examples:
    >>> visible("user\u202egnp.exe"), visible("a\u200bb"), visible("tab\there"), visible("Zoë 李")
    ('user<U+202E>gnp.exe', 'a<U+200B>b', 'tab<U+0009>here', 'Zoë 李')
"""

from __future__ import annotations

import unicodedata
from typing import Any

_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def visible(text: Any) -> str:
    """``text`` (any value, as ``str``) with hidden and control characters shown as ``<U+XXXX>``."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # the common case, at C speed
        return s
    return "".join(f"<U+{ord(c):04X}>" if unicodedata.category(c) in _HIDDEN else c for c in s)
