"""Student-controlled text made safe for each sink it reaches: one escaping per sink.

- terminal and results.json: `printable` (also every file list), each line of student text marked as the
  student's (`student_lines`, `student_tail`) in plain text;
- CSV (scores.csv): `csv_cell`, which also makes a formula inert;
- Markdown (summary.md, duplicates.md, tests in Gradescope's "md" format): `markdown_code`, a code span,
  or `markdown_block`, a fenced block, where nothing is rendered.

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


# Marks each line of student text in plain-text sinks (the terminal, results.json's top-level output, tests in
# the "text" format): no line the student wrote can begin where a line of the grader's own begins.
STUDENT_MARK = "  | "


def student_lines(text: object) -> str:
    """Student text (printed output, a traceback) as whole lines of a plain-text sink: printable, every line
    marked with STUDENT_MARK."""
    return "\n".join(STUDENT_MARK + line for line in printable(text).split("\n"))


def student_tail(text: object) -> str:
    """Text that continues a line the grader began ("ERROR: " + a message the student's code chose, or a
    message of the grader's that quotes the child's output): printable, each line after the first marked
    with STUDENT_MARK, so none of it starts a line of its own."""
    return printable(text).replace("\n", "\n" + STUDENT_MARK)


# What a spreadsheet may read as a formula (OWASP's list; its tab and CR never lead: printable escapes them).
FORMULA_START = ("=", "+", "-", "@")


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: printable, on one line, and prefixed with ' when it begins
    like a formula. Numbers written by the grader itself are passed as numbers, not through here."""
    text = printable(value, name=True)
    return "'" + text if text.startswith(FORMULA_START) else text


def markdown_code(value: object) -> str:
    """A Markdown code span holding `value` as one printable line: no link, image, heading or HTML inside
    is rendered. The fence is one backtick longer than the longest run of backticks inside."""
    text = printable(value, name=True)
    fence = _fence(text, 1)
    return f"{fence} {text} {fence}"


def markdown_block(value: object) -> str:
    """A fenced Markdown code block holding `value` (printable, its lines kept): nothing inside is rendered,
    and no line inside can close it, the fence being longer than any run of backticks inside."""
    text = printable(value)
    fence = _fence(text, 3)
    return f"{fence}\n{text}\n{fence}"


def _fence(text: str, shortest: int) -> str:
    """Backticks longer than any run of them in `text` (and at least `shortest`): nothing inside closes it."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    return "`" * max(shortest, longest + 1)
