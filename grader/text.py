"""Student-controlled text made safe to show: on a terminal, in results.json, in a file list.

A submission chooses its printed output, its exception messages and its file names. Control characters
(an ANSI escape can rewrite what a terminal shows, a carriage return can hide a line), Unicode direction
overrides (which reorder what a reader sees) and text that is not valid UTF-8 (a lone surrogate makes
results.json invalid for strict readers) are shown as visible escapes instead. Newline and tab stay.
"""
from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates, line/paragraph
# separators, and lone surrogates (what decoding with "surrogateescape" leaves for undecodable bytes).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_IN_NAMES = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    if match.group() in _NAMED:
        return _NAMED[match.group()]
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by "surrogateescape" decoding
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, name: bool = False) -> str:
    """`text` (an exception message, a path with odd bytes kept as lone surrogates) as a string with every
    unsafe character shown as an escape (e.g. ESC as \\x1b). A `name` (of a file, a folder) is one line:
    newline and tab are escaped too."""
    return (_UNSAFE_IN_NAMES if name else _UNSAFE).sub(_escape, str(text))

