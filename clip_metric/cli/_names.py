"""User paths and messages as the command line prints them: never raw control characters.

A file name may hold anything but ``/`` and NUL, including terminal escape sequences (``ESC ]0;``
sets the window title, ``ESC [2J`` clears the screen) and bytes that are not UTF-8 (kept by
Python as lone surrogates, which a UTF-8 stream refuses to write). Printed raw, such a name
rewrites the user's terminal or crashes the message that names it.
"""

from __future__ import annotations

import os
import re
from typing import Any

# C0 and C1 control characters (newline and tab excepted: messages span lines), DEL, line and
# paragraph separators, bidirectional overrides (they reorder what follows), and the lone
# surrogates that stand for undecodable bytes of a file name.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def shown(path: Any) -> str:
    """``path`` as the command line names it: as it is, or ``repr``-escaped when it holds characters
    that are not printable (control characters, undecodable bytes).

    Example:
        >>> shown("images/cat.png"), shown("images/\\x1b[2Jcat.png")
        ('images/cat.png', "'images/\\\\x1b[2Jcat.png'")
    """
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return text if text.isprintable() else repr(text)


def printable(message: str) -> str:
    """``message`` with every control character but newline and tab escaped (``\\x1b``, ``\\udcff``).

    The last guard before a message reaches the terminal, for names quoted inside text the
    command line did not write (an exception's message, say).

    Example:
        >>> printable("bad \\x1b]0;title\\x07 name")
        'bad \\\\x1b]0;title\\\\x07 name'
    """
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], message)
