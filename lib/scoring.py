"""Score model generations against expected answers: the one place the scoring rules live.

The model is taught to answer ``<reasoning>...</reasoning>\\n<answer>...</answer>``.

- Format: the stripped output is exactly one reasoning block, one newline and one answer
  block with a non-blank answer; no other text, no nested or repeated tags.
- Strict correctness: the format is right AND the answer-tag text matches the expected answer.
- Lenient correctness: the answer extracted by the first rule that applies matches: the first
  complete answer tag, else a final "Answer: ..." / "The answer is ..." line, else the last
  number in the output (lm-evaluation-harness "flexible-extract" style).
- Matching, on both sides: a Unicode minus or dash used as a sign (U+2212 minus, U+2012
  figure dash, U+2013 en dash, U+FE63 small and U+FF0D fullwidth hyphen-minus) reads as "-";
  case, surrounding whitespace, one trailing full stop and one pair of quotes around the whole
  answer ('nosaer', "Paris", curly quotes, guillemets, backticks) are ignored, inner whitespace
  is collapsed. An expected answer that is a number needs a predicted number of equal value
  ("31.50" matches "$31.5"; "-3" does not match "3"); currency signs are dropped and a trailing
  unit word on the prediction is allowed only when the expected answer has no unit or the same
  one. "50%" reads as 50 with unit "%", because the eval set writes percentages as the bare
  percentage. An expected fraction ("1/216") also accepts a rounded decimal within
  ``FRACTION_REL_TOL``. Any other answer compares as text ("Paris" matches "paris").
- Answer types (``answer_type``), for reports: integer, decimal, fraction, currency, percentage,
  number with unit, boolean, word, text; numbers are read exactly as matching reads them.
"""

import re
from fractions import Fraction
from typing import NamedTuple

# A rounded decimal for an expected fraction must be this close, relative to the exact value:
# "0.00463" for "1/216" passes (8e-5 off), "0.0046" does not (6e-3 off).
FRACTION_REL_TOL = Fraction(1, 1000)

# Use with ``fullmatch`` on the stripped output; ``is_well_formatted`` also needs a non-blank
# answer. Text inside a block may not contain any tag, so nesting and duplicates fail.
_BLOCK_BODY = r"(?:(?!</?(?:reasoning|answer)>).)*"
FORMAT_RE = re.compile(
    rf"<reasoning>(?P<reasoning>{_BLOCK_BODY})</reasoning>\n"
    rf"<answer>(?P<answer>{_BLOCK_BODY})</answer>",
    re.DOTALL,
)

# Starts at the last "<answer>" before the first "</answer>", so a stray extra opening tag
# does not leak into the extracted text.
_ANSWER_TAG_RE = re.compile(r"<answer>(?P<answer>(?:(?!<answer>).)*?)</answer>", re.DOTALL)
# The greedy ".*" anchors on the last "answer" in the line ("my answer: the answer is 7" -> "7").
_ANSWER_LINE_RE = re.compile(r".*\banswer\b\s*(?:is\b\s*:?|[:=])\s*(?P<answer>\S.*)", re.IGNORECASE)

# A fraction, or an integer (thousands separated by commas, or none) with optional decimals.
_NUMBER = r"\d+/\d+|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# Signs a model or an eval file may write for a minus; matching reads each of them as "-".
_MINUS_SIGNS = "-\u2212\u2012\u2013\ufe63\uff0d"
_TO_HYPHEN_MINUS = str.maketrans(dict.fromkeys(_MINUS_SIGNS[1:], "-"))
# Pairs that may wrap a whole answer: 'x', "x", ‘x’, “x”, «x», `x`.
_QUOTE_PAIRS = {"'": "'", '"': '"', "\u2018": "\u2019", "\u201c": "\u201d", "\u00ab": "\u00bb", "`": "`"}
# A minus counts only when it does not follow a word character, so "5-3" yields 5 and 3, not -3.
_NUMBER_IN_TEXT_RE = re.compile(rf"(?:(?<!\w)[{_MINUS_SIGNS}])?(?:{_NUMBER})")
_QUANTITY_RE = re.compile(
    rf"(?P<sign>-?)[$€£]?\s*(?P<number>{_NUMBER})\s*(?P<unit>%|°?[^\W\d_]+(?:/[^\W\d_]+)?)?"
)


class _Quantity(NamedTuple):
    value: Fraction
    unit: str  # casefolded; "" when there is none
    is_fraction: bool  # written as "a/b", so a rounded decimal may stand for it


def _drop_full_stop(text: str) -> str:
    return text[:-1].rstrip() if text.endswith(".") else text


def _normalize_text(text: str) -> str:
    """Minus signs as "-", casefold, collapse whitespace, drop one trailing full stop and one pair of quotes."""
    text = _drop_full_stop(" ".join(text.translate(_TO_HYPHEN_MINUS).split()).casefold())
    # The full stop may sit inside the quotes ("Paris.") or outside them ("Paris".).
    if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        text = _drop_full_stop(text[1:-1].strip())
    return text


def _parse_quantity(text: str) -> _Quantity | None:
    """Read a single number with optional sign, currency sign and unit, or return None."""
    match = _QUANTITY_RE.fullmatch(_normalize_text(text))
    if match is None:
        return None
    number = match["number"].replace(",", "")
    try:
        value = Fraction(number)
    except ZeroDivisionError:
        return None
    if match["sign"]:
        value = -value
    return _Quantity(value, match["unit"] or "", "/" in number)


def answer_type(answer: str) -> str:
    """The kind of an answer, for reports: "integer", "decimal", "fraction", "currency", "percentage",
    "number with unit", "boolean", "word" or "text" (several words)."""
    quantity = _parse_quantity(answer)
    text = _normalize_text(answer)
    if quantity is None:
        if text in ("true", "false"):
            return "boolean"
        return "word" if len(text.split()) == 1 else "text"
    if re.match(r"-?[$€£]", text):
        return "currency"
    if quantity.unit:
        return "percentage" if quantity.unit == "%" else "number with unit"
    if quantity.is_fraction:
        return "fraction"
    return "decimal" if "." in text else "integer"


def is_well_formatted(output: str) -> bool:
    """True when the output is exactly the taught format with a non-blank answer."""
    match = FORMAT_RE.fullmatch(output.strip())
    return match is not None and bool(match["answer"].strip())


def extract_answer(output: str) -> tuple[str | None, str]:
    """Return (answer, source); source is "answer_tag", "answer_line", "last_number" or "none".

    A blank answer tag gives nothing, so extraction falls through to the next rule.
    """
    tag = _ANSWER_TAG_RE.search(output)
    if tag is not None and tag["answer"].strip():
        return tag["answer"].strip(), "answer_tag"
    lines = output.strip().splitlines()
    answer_line = _ANSWER_LINE_RE.fullmatch(lines[-1].strip()) if lines else None
    if answer_line is not None:
        return answer_line["answer"].strip(), "answer_line"
    numbers = _NUMBER_IN_TEXT_RE.findall(output)
    if numbers:
        return numbers[-1], "last_number"
    return None, "none"


def _values_match(predicted: _Quantity, expected: _Quantity) -> bool:
    if predicted.value == expected.value:
        return True
    if not expected.is_fraction:
        return False
    return abs(predicted.value - expected.value) <= FRACTION_REL_TOL * abs(expected.value)


def answers_match(predicted: str | None, expected: str) -> bool:
    """True when the predicted answer equals the expected one under the module's matching rules."""
    if predicted is None:
        return False
    expected_quantity = _parse_quantity(expected)
    if expected_quantity is None:
        return _normalize_text(predicted) == _normalize_text(expected)
    predicted_quantity = _parse_quantity(predicted)
    if predicted_quantity is None:
        return False
    units = (predicted_quantity.unit, expected_quantity.unit)
    unit_ok = "" in units or units[0] == units[1]
    return unit_ok and _values_match(predicted_quantity, expected_quantity)


def score_output(output: str, expected: str) -> dict:
    """Score one generation: extracted answer and its source, format, strict and lenient result."""
    extracted, source = extract_answer(output)
    format_ok = is_well_formatted(output)
    correct_lenient = answers_match(extracted, expected)
    return {
        "extracted": extracted,
        "extracted_from": source,
        "format_ok": format_ok,
        # A well-formatted output has exactly one answer tag, which is what was extracted.
        "correct_strict": format_ok and correct_lenient,
        "correct_lenient": correct_lenient,
    }
