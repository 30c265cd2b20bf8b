"""Tests for lib.scoring: format check, answer extraction, number parsing, matching, aggregation."""

from fractions import Fraction

import pytest

from lib.scoring import (
    FRACTION_REL_TOL,
    answers_match,
    extract_answer,
    is_well_formatted,
    normalize_number,
    score_output,
    summarize,
)


def taught(answer: str, reasoning: str = "step 1\nstep 2") -> str:
    """An output in exactly the format the model is taught."""
    return f"<reasoning>{reasoning}</reasoning>\n<answer>{answer}</answer>"


# --- format check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        taught("42"),
        taught("Paris", reasoning="one step"),
        "\n  " + taught("5.75") + "\n\n",  # surrounding whitespace is stripped first
        taught("hello world", reasoning="a\n\nb"),  # whitespace inside the answer is fine
    ],
)
def test_well_formatted(output):
    assert is_well_formatted(output)


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(taught("42") + "<answer>42</answer>", id="duplicate answer tag"),
        pytest.param("<reasoning>x</reasoning>\n<answer>42", id="missing </answer>"),
        pytest.param(taught("42") + " I hope", id="text after </answer>"),
        pytest.param("Sure! " + taught("42"), id="text before <reasoning>"),
        pytest.param(taught(""), id="empty answer"),
        pytest.param(taught("   "), id="blank answer"),
        pytest.param("<reasoning>x</reasoning><answer>42</answer>", id="no newline between blocks"),
        pytest.param("<reasoning>x</reasoning>\n\n<answer>42</answer>", id="two newlines"),
        pytest.param(taught("<answer>42</answer>"), id="nested answer tag"),
        pytest.param(taught("42", reasoning="<reasoning>x</reasoning>"), id="nested reasoning tag"),
        pytest.param(
            "<reasoning>x</reasoning>\n<reasoning>y</reasoning>\n<answer>1</answer>",
            id="two reasoning blocks",
        ),
        pytest.param("<answer>42</answer>", id="no reasoning"),
        pytest.param("42", id="bare answer"),
        pytest.param("", id="empty output"),
    ],
)
def test_not_well_formatted(output):
    assert not is_well_formatted(output)


# --- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (taught(" 42 "), ("42", "answer_tag")),
        # First complete tag wins, even when later text disagrees.
        ("<answer>7</answer> then <answer>8</answer>", ("7", "answer_tag")),
        # A stray opening tag does not leak into the answer.
        ("<answer><answer>9</answer>", ("9", "answer_tag")),
        # A blank tag says nothing, so the next rule applies.
        ("2 + 5 = 7\n<answer> </answer>", ("7", "last_number")),
        ("3 * 4 = 12\nAnswer: 12", ("12", "answer_line")),
        ("so\nthe FINAL answer is: Friday.", ("Friday.", "answer_line")),
        ("The answer is 42\n\n", ("42", "answer_line")),
        ("answer = 3.5", ("3.5", "answer_line")),
        # Only the final line counts as an answer line.
        ("Answer: 5\nbut 2 + 4 = 6", ("6", "last_number")),
        # Truncated answer tag: fall back to the last number.
        ("<reasoning>10 + 5 = 15</reasoning>\n<answer>15", ("15", "last_number")),
        ("costs $1,000.50 in total", ("1,000.50", "last_number")),
        ("it drops to -3 degrees", ("-3", "last_number")),
        ("5-3 is small", ("3", "last_number")),  # a hyphen after a digit is not a sign
        ("probability 1/216 overall", ("1/216", "last_number")),
        ("3, 4, 5", ("5", "last_number")),
        ("no digits at all", (None, "none")),
        ("", (None, "none")),
    ],
)
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


# --- number parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("15", Fraction(15)),
        ("15.0", Fraction(15)),
        ("007", Fraction(7)),
        ("$31.5", Fraction(63, 2)),
        ("31.50", Fraction(63, 2)),
        ("-$3", Fraction(-3)),
        ("1,000", Fraction(1000)),
        ("1,234,567.5", Fraction(2469135, 2)),
        ("-3", Fraction(-3)),
        ("153 km", Fraction(153)),
        ("15 km/h", Fraction(15)),
        ("20 °C", Fraction(20)),
        ("1/216", Fraction(1, 216)),
        ("50%", Fraction(50)),  # a percentage reads as the bare percentage, not 0.5
        ("  42.  ", Fraction(42)),
    ],
)
def test_normalize_number(text, value):
    assert normalize_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["Paris", "", "1,00", "1,0000", "3 4", "42 is it", "1/0", "1.5/2", "x = 42", "15 red apples"],
)
def test_normalize_number_rejects(text):
    assert normalize_number(text) is None


# --- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        # integers
        ("15", "15"),
        (" 15 ", "15"),
        ("15.", "15"),
        ("15.0", "15"),
        ("1,000", "1000"),
        ("-3", "-3"),
        # decimals and money
        ("5.75", "5.75"),
        ("5.750", "5.75"),
        ("$31.50", "31.5"),
        ("31.50", "$31.50"),
        ("31.50 dollars", "$31.50"),
        # units: allowed on the prediction when the expected answer has none or the same one
        ("153 km", "153"),
        ("153 KM", "153 km"),
        ("153", "153 km"),
        ("50%", "50"),
        # fractions: exact, or a decimal within the relative tolerance
        ("1/216", "1/216"),
        ("2/432", "1/216"),
        ("0.00463", "1/216"),
        ("0.333", "1/3"),
        ("23/4", "5.75"),
        # words, booleans, days
        ("Paris", "Paris"),
        ("paris", "Paris"),
        ("Paris.", "Paris"),
        ("True", "true"),
        ("FRIDAY", "Friday"),
        ("friday ", "Friday"),
        ("olleh  dlrow", "olleh dlrow"),
    ],
)
def test_answers_match(predicted, expected):
    assert answers_match(predicted, expected)


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        ("16", "15"),
        ("420", "42"),
        ("42", "420"),
        ("1.5", "15"),
        ("15", "1.5"),
        ("-3", "3"),
        ("5.7", "5.75"),
        ("$31.49", "$31.50"),
        ("153 miles", "153 km"),
        ("0.5", "50%"),
        ("0.0046", "1/216"),  # 6e-3 off: outside the tolerance
        ("0.33", "1/3"),
        ("0.0046", "0.00463"),  # the tolerance is only for an expected fraction
        ("42 apples and 3 pears", "42"),
        ("x = 42", "42"),
        ("forty-two", "42"),
        ("London", "Paris"),
        ("false", "true"),
        ("Thursday", "Friday"),
        ("Paris France", "Paris"),
        ("", "Paris"),
        (None, "15"),
        (None, "Paris"),
    ],
)
def test_answers_do_not_match(predicted, expected):
    assert not answers_match(predicted, expected)


def test_fraction_tolerance_is_relative():
    expected = Fraction(1, 216)
    inside = float(expected * (1 + FRACTION_REL_TOL / 2))
    outside = float(expected * (1 + FRACTION_REL_TOL * 2))
    assert answers_match(f"{inside:.10f}", "1/216")
    assert not answers_match(f"{outside:.10f}", "1/216")


# --- scoring and aggregation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected", "score"),
    [
        pytest.param(
            taught("15"),
            "15",
            {"extracted": "15", "extracted_from": "answer_tag", "format_ok": True,
             "correct_strict": True, "correct_lenient": True},
            id="taught format, right answer",
        ),
        pytest.param(
            taught("16"),
            "15",
            {"extracted": "16", "extracted_from": "answer_tag", "format_ok": True,
             "correct_strict": False, "correct_lenient": False},
            id="taught format, wrong answer",
        ),
        pytest.param(
            "<reasoning>7 + 8 = 15</reasoning>\nThe answer is 15",
            "15",
            {"extracted": "15", "extracted_from": "answer_line", "format_ok": False,
             "correct_strict": False, "correct_lenient": True},
            id="right answer outside the tags",
        ),
        pytest.param(
            taught("15") + " and more",
            "15",
            {"extracted": "15", "extracted_from": "answer_tag", "format_ok": False,
             "correct_strict": False, "correct_lenient": True},
            id="text after </answer>",
        ),
        pytest.param(
            "<reasoning>7 + 8 = 15</reasoning>\n<answer>15",
            "15",
            {"extracted": "15", "extracted_from": "last_number", "format_ok": False,
             "correct_strict": False, "correct_lenient": True},
            id="missing </answer>",
        ),
        pytest.param(
            "<reasoning>the total is 15</reasoning>\n<answer>\n</answer>",
            "15",
            {"extracted": "15", "extracted_from": "last_number", "format_ok": False,
             "correct_strict": False, "correct_lenient": True},
            id="empty answer",
        ),
        pytest.param(
            "<reasoning><reasoning><reasoning>",
            "15",
            {"extracted": None, "extracted_from": "none", "format_ok": False,
             "correct_strict": False, "correct_lenient": False},
            id="garbage",
        ),
    ],
)
def test_score_output(output, expected, score):
    assert score_output(output, expected) == score


def test_summarize_rates():
    scores = [
        score_output(taught("15"), "15"),  # strict and lenient
        score_output("The answer is 15", "15"),  # lenient only
        score_output(taught("16"), "15"),  # well formatted, wrong
        score_output("nothing", "15"),  # nothing right
    ]
    assert summarize(scores) == {
        "n": 4,
        "accuracy": 0.25,
        "accuracy_lenient": 0.5,
        "format_rate": 0.5,
    }


def test_summarize_empty_is_zero():
    assert summarize([]) == {"n": 0, "accuracy": 0.0, "accuracy_lenient": 0.0, "format_rate": 0.0}
