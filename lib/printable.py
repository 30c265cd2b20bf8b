"""Text from a model or a user's file, shown so that nothing in it hides or breaks a line: pure functions.

A model can generate any character, and a user's data file can hold any: a carriage return, a vertical tab,
U+2028, NUL, a right-to-left override. The evidence's JSON keeps every string exactly; every page rendered from
it (Markdown, HTML, the terminal) shows the characters that would not show, or that some reader takes for a line
break, escaped as Python writes them ('\\r', '\\x0b', '\\u2028'). So a line of a rendered file is a line of the
text, in every reader: the only line break left is the newline, and only where the text has one.
"""

from __future__ import annotations

import html
import re
import unicodedata

# Cc control, Cf format (bidirectional overrides, byte-order marks), Cs surrogate, Co private use, Cn unassigned,
# Zl/Zp the line and paragraph separators. The zero-width (non-)joiners are format characters that emoji and
# Indic scripts need to show as meant, so they are kept.
HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
KEPT = frozenset("\t\u200c\u200d")
EXAMPLE_CHARS = 400  # a page shows this many characters of a text, the rest folded; the JSON keeps them whole


def escape_char(char: str) -> str:
    """One character as Python's escape: '\\r', '\\x0b', '\\x85', '\\u2028', '\\U000e0001'."""
    return char.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def is_hidden(char: str) -> bool:
    return char not in KEPT and unicodedata.category(char) in HIDDEN_CATEGORIES


def visible(text: str, newlines: bool = True) -> str:
    """`text` with every hidden character escaped; newlines kept when `newlines`, else escaped too (one line)."""
    if text.isprintable():  # the common case: nothing to escape
        return text
    return "".join(char if (char == "\n" and newlines) or not (char == "\n" or is_hidden(char)) else escape_char(char)
                   for char in text)


def one_line(text: str) -> str:
    """`text` as one visible line: newlines escaped as well."""
    return visible(text, newlines=False)


def fence(text: str) -> str:
    """A Markdown code fence longer than any backtick run in `text`, so that the text cannot close it early."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def code_span(text: str) -> str:
    """`text` as one line of Markdown inline code, whatever backticks or spaces it holds (CommonMark's rules)."""
    shown = one_line(text)
    if not shown:
        return "(empty)"
    ticks = "`" * (max(map(len, re.findall("`+", shown)), default=0) + 1)
    # A space on each side is stripped by the reader: needed when the text starts or ends with a backtick, or
    # with spaces on both sides (which the reader would otherwise strip from the text itself).
    pad = " " if shown[0] == "`" or shown[-1] == "`" or (shown[0] == shown[-1] == " " and shown.strip()) else ""
    return f"{ticks}{pad}{shown}{pad}{ticks}"


def table_cell(text: str) -> str:
    """`text` as the content of one Markdown table cell: one visible line, its pipes escaped."""
    return one_line(text).replace("|", "\\|")


def esc(text: str) -> str:
    """Text for HTML: escaped for the markup, and its hidden characters shown escaped."""
    return html.escape(visible(text))


def folded_pre(text: str, kind: str = "") -> str:
    """A model's or a user's text as HTML in a <pre>, hidden characters escaped; what is past EXAMPLE_CHARS folded
    (details). The report's and the comparison's examples."""
    shown = visible(text)
    attribute = f' class="{kind}"' if kind else ""
    if len(shown) <= EXAMPLE_CHARS:
        return f"<pre{attribute}>{html.escape(shown)}</pre>"
    return (f"<pre{attribute}>{html.escape(shown[:EXAMPLE_CHARS])}</pre><details><summary>"
            f"{len(shown) - EXAMPLE_CHARS:,} more characters</summary><pre{attribute}>"
            f"{html.escape(shown[EXAMPLE_CHARS:])}</pre></details>")
