"""Deterministic generator for the dev-reasoning-v2 training traces and the eval_v2 set.

    python -m tools.datagen [--out data/]        (make data)

A tool that made the shipped data/ files, not part of a run: lib/ holds only what a run uses.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from lib.config import REPO_ROOT
from lib.console import utf8_output
from lib.data import normalize_prompt
from lib.evidence import sha256_file, write_json, write_text

SEED = 44
DATASET = "dev-reasoning-v2"
GENERATOR = "tools.datagen"
TRACE_VERSION = "1.0"
TRAIN_FILE = "dev-reasoning-v2.jsonl"
EVAL_FILE = "eval_v2.jsonl"
MANIFEST_FILE = "MANIFEST.json"
DEFAULT_OUT_DIR = REPO_ROOT / "data"

# Training: 5 x 77 multi-step + 5 x 22 synthetic + 55 golden/edge = 385 + 110 + 55 = 550 (70/20/10 %).
MULTI_STEP_PER_CATEGORY = 77
SYNTHETIC_PER_CATEGORY = 22
# Eval: 5 x 12 core + 5 x 5 trace-sensitive + 15 edge cases = 60 + 25 + 15 = 100.
CORE_PER_CATEGORY = 12
TRACE_SENSITIVE_PER_CATEGORY = 5
# A builder that cannot find a fresh question in this many draws has too small a number space.
MAX_DRAWS = 2000


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Step:
    """One line of a worked solution."""

    type: str  # given | convert | recall | compute | compare | rearrange | conclude
    content: str


def given(text: str) -> Step:
    return Step("given", text)


def recall(text: str) -> Step:
    return Step("recall", text)


def conclude(text: str) -> Step:
    return Step("conclude", text)


@dataclass(frozen=True)
class Calc:
    """A worked computation: its text, its exact value and how many basic operations it takes."""

    text: str
    value: Fraction
    ops: int = 1

    def labelled(self, label: str) -> Calc:
        return replace(self, text=f"{label}: {self.text}")

    def step(self) -> Step:
        return Step("compute", self.text)


@dataclass(frozen=True)
class Problem:
    """A question with its worked steps and answer."""

    prompt: str
    steps: tuple[Step, ...]
    answer: str
    numbers: tuple = ()  # the values that define the question: eval never reuses a training template + numbers
    ops: int = 0  # basic arithmetic operations in the steps; sets the eval difficulty


@dataclass(frozen=True)
class Template:
    """One kind of question: its category, whether it chains operations, and the builder that draws one."""

    category: str
    chained: bool
    build: Callable[[random.Random], Problem]

    @property
    def name(self) -> str:
        return self.build.__name__


def fmt(value: int | Fraction) -> str:
    """Write a number the way prompts and answers show it: 12, 0.75, 5.50."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    cents = value * 100
    if cents.denominator != 1:
        raise ValueError(f"{value} is not a whole number of cents")
    return f"{cents.numerator // 100}.{cents.numerator % 100:02d}"


def money(value: int | Fraction) -> str:
    return "$" + fmt(value)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def add(a: int | Fraction, b: int | Fraction) -> Calc:
    total = Fraction(a) + Fraction(b)
    return Calc(f"{fmt(a)} + {fmt(b)} = {fmt(total)}", total)


def sub(a: int | Fraction, b: int | Fraction) -> Calc:
    difference = Fraction(a) - Fraction(b)
    return Calc(f"{fmt(a)} - {fmt(b)} = {fmt(difference)}", difference)


def _parts(factor: int | Fraction) -> tuple[Fraction, Fraction] | None:
    """Split a factor that is not a table fact (47 -> 40 + 7, 2.75 -> 2 + 0.75); None if it already is one."""
    factor = Fraction(factor)
    whole = factor.numerator // factor.denominator
    if factor.denominator != 1:
        return (Fraction(whole), factor - whole) if whole else None
    if whole < 10 or whole % 10 == 0:
        return None
    if whole > 99:
        raise ValueError(f"{whole} is too large to multiply step by step")
    return Fraction(whole - whole % 10), Fraction(whole % 10)


def mul(a: int | Fraction, b: int | Fraction) -> Calc:
    """a × b; a two-digit or money factor is split so that each partial product is a table fact."""
    product = Fraction(a) * Fraction(b)
    head = f"{fmt(a)} × {fmt(b)}"
    split_a, split_b = _parts(a), _parts(b)
    if split_a and split_b:
        raise ValueError(f"{head}: only one factor may need splitting")
    if not (split_a or split_b):
        return Calc(f"{head} = {fmt(product)}", product)
    pairs = [(part, b) for part in split_a] if split_a else [(a, part) for part in split_b]
    partials = [Fraction(x) * Fraction(y) for x, y in pairs]
    split_text = " + ".join(f"{fmt(x)} × {fmt(y)}" for x, y in pairs)
    partial_text = " + ".join(fmt(p) for p in partials)
    return Calc(f"{head} = {split_text} = {partial_text} = {fmt(product)}", product, ops=3)


def div(a: int | Fraction, b: int | Fraction) -> Calc:
    """a ÷ b for an exact quotient; a two-digit quotient by a one-digit divisor is split into tens and ones."""
    quotient = Fraction(a) / Fraction(b)
    if quotient.denominator != 1:
        raise ValueError(f"{a} ÷ {b} is not a whole number")
    head = f"{fmt(a)} ÷ {fmt(b)}"
    split = _parts(quotient) if b < 10 else None
    if not split:
        return Calc(f"{head} = {fmt(quotient)}", quotient)
    tens, ones = split
    return Calc(
        f"{head} = {fmt(tens * b)} ÷ {fmt(b)} + {fmt(ones * b)} ÷ {fmt(b)} = {fmt(tens)} + {fmt(ones)}"
        f" = {fmt(quotient)}",
        quotient,
        ops=3,
    )


def percent_of(percent: int, base: int) -> list[Calc]:
    """Worked steps for percent% of base, going through 10% or a quarter or a half."""
    if percent == 50:
        return [div(base, 2).labelled(f"50% of {base}")]
    quarter_or_tenth = 4 if percent in (25, 75) else 10
    first = div(base, quarter_or_tenth).labelled(f"{100 // quarter_or_tenth}% of {base}")
    multiple = percent * quarter_or_tenth // 100  # 30% is 3 x 10%, 75% is 3 x 25%
    if multiple == 1:
        return [first]
    return [first, mul(multiple, first.value).labelled(f"{percent}% of {base}")]


def worked(
    prompt: str,
    numbers: Sequence,
    facts: Sequence[str],
    calcs: Sequence[Calc],
    conclusion: str,
    fact_type: str = "given",
) -> Problem:
    """A problem in the house style: facts, then one line per computation, then a conclusion."""
    steps = [Step(fact_type, fact) for fact in facts] + [calc.step() for calc in calcs]
    steps.append(conclude(conclusion))
    return Problem(prompt, tuple(steps), fmt(calcs[-1].value), tuple(numbers), sum(c.ops for c in calcs))


def pick_operand(rng: random.Random) -> int:
    """A two-digit operand; often a round ten so that easy questions stay easy."""
    return 10 * rng.randint(1, 6) if rng.random() < 0.4 else rng.randint(11, 59)


PERCENTS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 25, 75)  # each reachable through 10%, a quarter or a half


def pick_percent(rng: random.Random, percents: Sequence[int] = PERCENTS) -> tuple[int, int]:
    """A percent and a base that give a whole-number answer."""
    percent = rng.choice(percents)
    if percent in (25, 75):
        return percent, 4 * rng.randint(3, 40)
    if percent == 50:
        return percent, 2 * rng.randint(6, 60)
    return percent, 10 * rng.randint(2, 20)


def pick_price(rng: random.Random) -> Fraction:
    """A price in quarter dollars between $1.25 and $9.75 that is not a whole number of dollars."""
    return rng.randint(1, 9) + Fraction(rng.choice((25, 50, 75)), 100)


# --------------------------------------------------------------------------- multi-step families

VEHICLES = ("car", "bus", "train", "truck")
ITEMS = (("pen", "pens"), ("notebook", "notebooks"), ("apple", "apples"), ("ticket", "tickets"), ("cup", "cups"))
PAIRS = (("coffee", "muffin"), ("sandwich", "juice"), ("hat", "scarf"), ("book", "bookmark"))
NAMES = ("Sam", "Ana", "Leo", "Mia", "Ben")
PRODUCERS = (("machine", "parts", "hour"), ("printer", "pages", "minute"), ("baker", "loaves", "hour"))
# (big unit singular, big unit plural, small unit plural, small units per big unit)
CONVERSIONS = (
    ("kilometer", "kilometers", "meters", 1000),
    ("meter", "meters", "centimeters", 100),
    ("hour", "hours", "minutes", 60),
    ("minute", "minutes", "seconds", 60),
    ("day", "days", "hours", 24),
    ("foot", "feet", "inches", 12),
    ("kilogram", "kilograms", "grams", 1000),
    ("liter", "liters", "milliliters", 1000),
    ("week", "weeks", "days", 7),
    ("year", "years", "months", 12),
)
# Mixed-unit questions ("2 hours and 15 minutes") only read naturally for these conversions.
MIXED_CONVERSIONS = tuple(c for c in CONVERSIONS if c[0] in ("meter", "hour", "minute", "foot"))


def travel_distance(rng: random.Random) -> Problem:
    vehicle, speed, hours = rng.choice(VEHICLES), pick_operand(rng), rng.randint(2, 9)
    distance = mul(speed, hours)
    return worked(
        f"A {vehicle} travels at {speed} km/h for {hours} hours. How many kilometers does it travel?",
        (speed, hours),
        ["Distance = speed × time."],
        [distance],
        f"The {vehicle} travels {fmt(distance.value)} km.",
    )


def average_speed(rng: random.Random) -> Problem:
    vehicle, speed, hours = rng.choice(VEHICLES), pick_operand(rng), rng.randint(2, 9)
    result = div(speed * hours, hours)
    return worked(
        f"A {vehicle} travels {speed * hours} km in {hours} hours. What is its average speed in km/h?",
        (speed, hours),
        ["Speed = distance ÷ time."],
        [result],
        f"The average speed is {speed} km/h.",
    )


def travel_time(rng: random.Random) -> Problem:
    vehicle, speed, hours = rng.choice(VEHICLES), 10 * rng.randint(1, 6), rng.randint(2, 9)
    result = div(speed * hours, speed)
    return worked(
        f"A {vehicle} travels {speed * hours} km at {speed} km/h. How many hours does the trip take?",
        (speed, hours),
        ["Time = distance ÷ speed."],
        [result],
        f"The trip takes {hours} hours.",
    )


def production(rng: random.Random) -> Problem:
    producer, things, unit = rng.choice(PRODUCERS)
    rate, duration = pick_operand(rng), rng.randint(2, 9)
    made = mul(rate, duration)
    return worked(
        f"A {producer} makes {rate} {things} per {unit}. "
        f"How many {things} does the {producer} make in {duration} {unit}s?",
        (rate, duration),
        [f"Total = rate × {unit}s."],
        [made],
        f"The {producer} makes {fmt(made.value)} {things}.",
    )


def two_legs(rng: random.Random) -> Problem:
    vehicle = rng.choice(VEHICLES)
    speed1, hours1 = pick_operand(rng), rng.randint(2, 5)
    speed2, hours2 = pick_operand(rng), rng.randint(2, 5)
    first, second = mul(speed1, hours1), mul(speed2, hours2)
    total = add(first.value, second.value)
    return worked(
        f"A {vehicle} travels at {speed1} km/h for {hours1} hours, then at {speed2} km/h for {hours2} hours. "
        "How many kilometers does it travel in total?",
        (speed1, hours1, speed2, hours2),
        ["Distance = speed × time for each part."],
        [first.labelled("First part"), second.labelled("Second part"), total.labelled("Total")],
        f"The {vehicle} travels {fmt(total.value)} km.",
    )


def distance_left(rng: random.Random) -> Problem:
    vehicle, speed, hours = rng.choice(VEHICLES), pick_operand(rng), rng.randint(2, 6)
    route = speed * hours + 10 * rng.randint(1, 20)
    done = mul(speed, hours)
    left = sub(route, done.value)
    return worked(
        f"A {vehicle} must travel {route} km. It travels at {speed} km/h for {hours} hours. "
        "How many kilometers are left?",
        (route, speed, hours),
        ["Distance so far = speed × time."],
        [done.labelled("So far"), left.labelled("Left")],
        f"{fmt(left.value)} km are left.",
    )


def weekly_running(rng: random.Random) -> Problem:
    name, per_day, weeks = rng.choice(NAMES), rng.randint(2, 9), rng.randint(2, 4)
    days = mul(weeks, 7)
    distance = mul(days.value, per_day)
    return worked(
        f"{name} runs {per_day} km every day. How many kilometers does {name} run in {weeks} weeks?",
        (per_day, weeks),
        ["1 week = 7 days."],
        [days.labelled("Days"), distance.labelled("Distance")],
        f"{name} runs {fmt(distance.value)} km.",
    )


def percent_of_number(rng: random.Random) -> Problem:
    percent, base = pick_percent(rng)
    calcs = percent_of(percent, base)
    return worked(
        f"What is {percent}% of {base}?",
        (percent, base),
        [],
        calcs,
        f"{percent}% of {base} is {fmt(calcs[-1].value)}.",
    )


def tip(rng: random.Random) -> Problem:
    percent, base = pick_percent(rng, (10, 20, 25))
    calcs = percent_of(percent, base)
    return worked(
        f"A meal costs ${base}. How many dollars is a {percent}% tip?",
        (percent, base),
        [],
        calcs,
        f"The tip is {money(calcs[-1].value)}.",
    )


def percent_passed(rng: random.Random) -> Problem:
    students = rng.choice((10, 20, 25, 50))
    passed = rng.randint(2, min(students - 1, 19))
    one = div(100, students).labelled("One student")
    share = mul(passed, one.value).labelled("Passed")
    return worked(
        f"{passed} out of {students} students passed a test. What percent passed?",
        (passed, students),
        [],
        [one, share],
        f"{fmt(share.value)}% passed.",
    )


def discount(rng: random.Random) -> Problem:
    item = rng.choice(("shirt", "lamp", "game", "jacket"))
    percent, price = pick_percent(rng)
    calcs = percent_of(percent, price)
    sale = sub(price, calcs[-1].value).labelled("Sale price")
    return worked(
        f"A {item} costs ${price}. It is on sale for {percent}% off. What is the sale price in dollars?",
        (percent, price),
        ["Sale price = price - discount."],
        [*calcs, sale],
        f"The sale price is {money(sale.value)}.",
    )


def membership_growth(rng: random.Random) -> Problem:
    percent, members = pick_percent(rng)
    calcs = percent_of(percent, members)
    now = add(members, calcs[-1].value).labelled("Now")
    return worked(
        f"A club had {members} members. Membership grew by {percent}%. How many members are there now?",
        (percent, members),
        ["New total = old total + growth."],
        [*calcs, now],
        f"There are {fmt(now.value)} members now.",
    )


def total_cost(rng: random.Random) -> Problem:
    (item, items), quantity = rng.choice(ITEMS), rng.randint(2, 9)
    price = rng.randint(2, 9) if rng.random() < 0.3 else pick_operand(rng)
    total = mul(price, quantity)
    return worked(
        f"One {item} costs ${price}. How many dollars do {quantity} {items} cost?",
        (price, quantity),
        ["Total = price × quantity."],
        [total],
        f"{quantity} {items} cost {money(total.value)}.",
    )


def unit_price(rng: random.Random) -> Problem:
    (item, items), price, quantity = rng.choice(ITEMS), pick_operand(rng), rng.randint(2, 9)
    one = div(price * quantity, quantity)
    return worked(
        f"{quantity} {items} cost ${price * quantity} in total. How many dollars does one {item} cost?",
        (price, quantity),
        ["Price of one = total ÷ quantity."],
        [one],
        f"One {item} costs ${price}.",
    )


def decimal_total(rng: random.Random) -> Problem:
    (item, items), price, quantity = rng.choice(ITEMS), pick_price(rng), rng.randint(2, 5)
    total = mul(price, quantity)
    return worked(
        f"One {item} costs {money(price)}. How many dollars do {quantity} {items} cost?",
        (price, quantity),
        ["Total = price × quantity."],
        [total],
        f"{quantity} {items} cost {money(total.value)}.",
    )


def pair_total(rng: random.Random) -> Problem:
    (first, second), price1, price2 = rng.choice(PAIRS), pick_price(rng), pick_price(rng)
    dollars = add(int(price1), int(price2)).labelled("Dollars")
    cents = add(price1 % 1, price2 % 1).labelled("Cents")
    total = add(dollars.value, cents.value).labelled("Total")
    return worked(
        f"A {first} costs {money(price1)} and a {second} costs {money(price2)}. "
        "How many dollars do they cost together?",
        (price1, price2),
        [],
        [dollars, cents, total],
        f"Together they cost {money(total.value)}.",
    )


def two_item_total(rng: random.Random) -> Problem:
    price1, price2 = rng.randint(2, 15), rng.randint(2, 15)
    count1, count2 = rng.randint(2, 6), rng.randint(2, 6)
    pens, notebooks = mul(price1, count1), mul(price2, count2)
    total = add(pens.value, notebooks.value)
    return worked(
        f"Pens cost ${price1} each and notebooks cost ${price2} each. "
        f"How many dollars do {count1} pens and {count2} notebooks cost?",
        (price1, count1, price2, count2),
        [],
        [pens.labelled("Pens"), notebooks.labelled("Notebooks"), total.labelled("Total")],
        f"They cost {money(total.value)}.",
    )


def change_from_bill(rng: random.Random) -> Problem:
    name, (_, items) = rng.choice(NAMES), rng.choice(ITEMS)
    price, quantity = rng.randint(2, 15), rng.randint(2, 6)
    bill = next(b for b in (20, 50, 100) if b > price * quantity)
    cost = mul(price, quantity)
    change = sub(bill, cost.value)
    return worked(
        f"{name} buys {quantity} {items} at ${price} each and pays with a ${bill} bill. "
        f"How many dollars of change does {name} get?",
        (price, quantity),
        ["Change = bill - cost."],
        [cost.labelled("Cost"), change.labelled("Change")],
        f"{name} gets {money(change.value)} in change.",
    )


def pack_price(rng: random.Random) -> Problem:
    (item, items), price = rng.choice(ITEMS), rng.randint(2, 9)
    pack, wanted = rng.sample(range(2, 10), 2)
    one = div(price * pack, pack)
    total = mul(wanted, one.value)
    return worked(
        f"A pack of {pack} {items} costs ${price * pack}. How many dollars do {wanted} {items} cost?",
        (price, pack, wanted),
        [],
        [one.labelled(f"One {item}"), total.labelled(f"{wanted} {items}")],
        f"{wanted} {items} cost {money(total.value)}.",
    )


def add_two_digit(rng: random.Random) -> Problem:
    a, b = pick_operand(rng), pick_operand(rng)
    if a % 10 == 0 or b % 10 == 0:
        calcs = [add(a, b)]
    else:
        tens, ones = add(a - a % 10, b - b % 10), add(a % 10, b % 10)
        calcs = [tens.labelled("Tens"), ones.labelled("Ones"), add(tens.value, ones.value).labelled("Sum")]
    return worked(f"What is {a} + {b}?", (a, b), [], calcs, f"The sum is {fmt(calcs[-1].value)}.")


def subtract_two_digit(rng: random.Random) -> Problem:
    a, b = sorted(rng.sample(range(11, 61), 2), reverse=True)
    if b % 10 == 0:
        calcs = [sub(a, b)]
    else:
        minus_tens = sub(a, b - b % 10)
        calcs = [minus_tens, sub(minus_tens.value, b % 10)]
    return worked(f"What is {a} - {b}?", (a, b), [], calcs, f"The difference is {fmt(calcs[-1].value)}.")


def multiply_two_digit(rng: random.Random) -> Problem:
    a, b = pick_operand(rng), rng.randint(2, 9)
    product = mul(a, b)
    return worked(f"What is {a} * {b}?", (a, b), [], [product], f"The product is {fmt(product.value)}.")


def add_three(rng: random.Random) -> Problem:
    a, b, c = (rng.randint(11, 40) for _ in range(3))
    first = add(a, b)
    total = add(first.value, c)
    return worked(f"What is {a} + {b} + {c}?", (a, b, c), [], [first, total], f"The sum is {fmt(total.value)}.")


def sum_then_multiply(rng: random.Random) -> Problem:
    a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 9)
    total = add(a, b)
    product = mul(total.value, c)
    return worked(
        f"What is ({a} + {b}) * {c}?",
        (a, b, c),
        ["Work out the brackets first."],
        [total, product],
        f"The result is {fmt(product.value)}.",
    )


def multiply_then_subtract(rng: random.Random) -> Problem:
    a, b = pick_operand(rng), rng.randint(2, 9)
    c = rng.randint(2, min(a * b - 1, 60))
    product = mul(a, b)
    result = sub(product.value, c)
    return worked(
        f"What is {a} * {b} - {c}?",
        (a, b, c),
        ["Multiply before subtracting."],
        [product, result],
        f"The result is {fmt(result.value)}.",
    )


def to_small_unit(rng: random.Random) -> Problem:
    big, bigs, small, factor = rng.choice(CONVERSIONS)
    count = rng.randint(2, 9)
    result = mul(count, factor)
    return worked(
        f"How many {small} are in {count} {bigs}?",
        (big, count),
        [f"1 {big} = {factor} {small}."],
        [result],
        f"{count} {bigs} = {fmt(result.value)} {small}.",
        fact_type="convert",
    )


def to_big_unit(rng: random.Random) -> Problem:
    big, bigs, small, factor = rng.choice(CONVERSIONS)
    count = rng.randint(2, 9)
    result = div(count * factor, factor)
    return worked(
        f"How many {bigs} are in {count * factor} {small}?",
        (big, count),
        [f"1 {big} = {factor} {small}."],
        [result],
        f"{count * factor} {small} = {count} {bigs}.",
        fact_type="convert",
    )


def mixed_units(rng: random.Random) -> Problem:
    big, bigs, small, factor = rng.choice(MIXED_CONVERSIONS)
    count, extra = rng.randint(2, 9), rng.randint(1, factor - 1)
    whole = mul(count, factor)
    total = add(whole.value, extra).labelled("Total")
    return worked(
        f"How many {small} are in {count} {bigs} and {extra} {small}?",
        (big, count, extra),
        [f"1 {big} = {factor} {small}."],
        [whole, total],
        f"That is {fmt(total.value)} {small}.",
        fact_type="convert",
    )


def rope_pieces(rng: random.Random) -> Problem:
    meters, piece = rng.randint(2, 9), rng.choice((10, 20, 25, 50))
    length = mul(meters, 100).labelled("Length")
    pieces = div(length.value, piece).labelled("Pieces")
    return worked(
        f"A rope is {meters} meters long. It is cut into pieces {piece} centimeters long. "
        "How many pieces are there?",
        (meters, piece),
        ["1 meter = 100 centimeters."],
        [length, pieces],
        f"There are {fmt(pieces.value)} pieces.",
        fact_type="convert",
    )


MULTI_STEP_TEMPLATES = (
    Template("rate_distance_time", False, travel_distance),
    Template("rate_distance_time", False, average_speed),
    Template("rate_distance_time", False, travel_time),
    Template("rate_distance_time", False, production),
    Template("rate_distance_time", True, two_legs),
    Template("rate_distance_time", True, distance_left),
    Template("rate_distance_time", True, weekly_running),
    Template("percentage", False, percent_of_number),
    Template("percentage", False, tip),
    Template("percentage", False, percent_passed),
    Template("percentage", True, discount),
    Template("percentage", True, membership_growth),
    Template("unit_cost", False, total_cost),
    Template("unit_cost", False, unit_price),
    Template("unit_cost", False, decimal_total),
    Template("unit_cost", False, pair_total),
    Template("unit_cost", True, two_item_total),
    Template("unit_cost", True, change_from_bill),
    Template("unit_cost", True, pack_price),
    Template("two_digit_arithmetic", False, add_two_digit),
    Template("two_digit_arithmetic", False, subtract_two_digit),
    Template("two_digit_arithmetic", False, multiply_two_digit),
    Template("two_digit_arithmetic", True, add_three),
    Template("two_digit_arithmetic", True, sum_then_multiply),
    Template("two_digit_arithmetic", True, multiply_then_subtract),
    Template("unit_conversion", False, to_small_unit),
    Template("unit_conversion", False, to_big_unit),
    Template("unit_conversion", True, mixed_units),
    Template("unit_conversion", True, rope_pieces),
)
MULTI_STEP_CATEGORIES = tuple(dict.fromkeys(t.category for t in MULTI_STEP_TEMPLATES))


# --------------------------------------------------------------------------- short synthetic tasks

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def arithmetic(rng: random.Random) -> Problem:
    operator = rng.choice("+-×÷")
    if operator == "+":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        calc = add(a, b)
    elif operator == "-":
        a = rng.randint(5, 20)
        b = rng.randint(1, a - 1)
        calc = sub(a, b)
    elif operator == "×":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        calc = mul(a, b)
    else:
        b, quotient = rng.randint(2, 9), rng.randint(2, 9)
        a = b * quotient
        calc = div(a, b)
    return worked(f"What is {a} {operator} {b}?", (operator, a, b), [], [calc], f"The answer is {fmt(calc.value)}.")


def reverse_string(rng: random.Random) -> Problem:
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))
    backwards = word[::-1]
    steps = (
        given(f"Letters: {', '.join(word)}."),
        Step("rearrange", f"Backwards: {', '.join(backwards)}."),
        conclude(f"The reversed string is {backwards}."),
    )
    return Problem(f'Reverse the string "{word}".', steps, backwards, (word,))


def sort_numbers(rng: random.Random) -> Problem:
    numbers = rng.sample(range(1, 51), rng.randint(3, 5))
    ordered = ", ".join(str(n) for n in sorted(numbers))
    steps = (
        Step("compare", " < ".join(str(n) for n in sorted(numbers))),
        conclude(f"The sorted list is {ordered}."),
    )
    prompt = f"Sort these numbers from smallest to largest: {', '.join(str(n) for n in numbers)}."
    return Problem(prompt, steps, ordered, tuple(numbers))


def true_or_false(rng: random.Random) -> Problem:
    kind = rng.choice(("greater", "even", "product"))
    if kind == "greater":
        a, b = rng.sample(range(2, 61), 2)
        holds = a > b
        prompt = f"True or false: {a} is greater than {b}."
        check = Step("compare", f"{a} > {b}" if holds else f"{a} < {b}")
        numbers = (a, b)
    elif kind == "even":
        n = rng.randint(2, 60)
        holds = n % 2 == 0
        prompt = f"True or false: {n} is an even number."
        check = Step("compute", f"{n} = 2 × {n // 2}" + ("" if holds else " + 1"))
        numbers = (n,)
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        claimed = a * b + rng.choice((0, 0, 1, -1, 2, 10))  # true about a third of the time
        holds = claimed == a * b
        prompt = f"True or false: {a} × {b} = {claimed}."
        check = mul(a, b).step()
        numbers = (a, b, claimed)
    verdict = "true" if holds else "false"
    return Problem(prompt, (check, conclude(f"So the statement is {verdict}.")), verdict, (kind, *numbers))


def day_of_week(rng: random.Random) -> Problem:
    start, days = rng.choice(DAYS), rng.randint(2, 30)
    weeks, rest = divmod(days, 7)
    end = DAYS[(DAYS.index(start) + days) % 7]
    steps = []
    if weeks:
        steps.append(Step("compute", f"{days} = 7 × {weeks}" + (f" + {rest}" if rest else "")))
        steps.append(given(f"After {plural(weeks, 'week')} it is {start} again."))
    steps.append(conclude(f"{plural(rest, 'day')} after {start} is {end}." if rest else f"So it is {end}."))
    prompt = f"Today is {start}. What day of the week will it be in {days} days?"
    return Problem(prompt, tuple(steps), end, (start, days))


SYNTHETIC_TEMPLATES = (
    Template("arithmetic", False, arithmetic),
    Template("string_reversal", False, reverse_string),
    Template("sorting", False, sort_numbers),
    Template("logic", False, true_or_false),
    Template("day_of_week", False, day_of_week),
)


# --------------------------------------------------------------------------- golden and edge cases

LONG_PROMPT = (
    "Rosa runs a small stall at the Saturday farmers' market in her town. She arrives at six in the morning, "
    "unloads her van, and sets up a folding table under a green umbrella. On the table she arranges jars of "
    "strawberry jam, apricot jam and orange marmalade, a basket of fresh bread, and a small chalkboard with her "
    "prices. Her neighbor Tom sells honey at the next stall, and the two of them often trade tips about which "
    "customers like which flavors. The market opens at seven. In the cool early hours most shoppers walk past "
    "quickly with coffee in their hands, but by nine the paths between the stalls are crowded with families, dogs "
    "and musicians. Rosa keeps a notebook where she writes down every sale, because she wants to know which recipes "
    "to make more of next month. This Saturday she notes that the strawberry jam sold out before lunch, that two "
    "customers asked for a sugar-free version, and that a restaurant owner ordered marmalade for his breakfast menu. "
    "She also writes that the weather was sunny, that a light wind blew some of her paper bags away, and that the "
    "bread sold slowly until the last loaf went at closing time. When she reads her notebook at the end of the day, "
    "she finds that she sold 14 jars of jam in the morning and 23 jars of jam in the afternoon. She does not count "
    "the marmalade, the bread or the honey she bought from Tom. How many jars of jam did Rosa sell in total on "
    "Saturday?"
)
NEEDS_MORE_INFORMATION = "More information is needed."


def golden(prompt: str, answer: str, *steps: Step | Calc) -> Problem:
    """A hand-written trace; computations go through the arithmetic helpers so they are right by construction."""
    return Problem(prompt, tuple(s.step() if isinstance(s, Calc) else s for s in steps), answer)


def edge_training_cases() -> list[tuple[str, Problem]]:
    """The 55 golden-style and edge-case training traces, each with its category."""
    return [
        # One-step traces.
        ("one_step", golden("Add 9 and 8.", "17", add(9, 8))),
        ("one_step", golden("Double 23.", "46", mul(2, 23))),
        ("one_step", golden("Halve 36.", "18", div(36, 2))),
        ("one_step", golden("Subtract 6 from 15.", "9", sub(15, 6))),
        ("one_step", golden("What number comes right after 99?", "100", add(99, 1))),
        # The one long prompt.
        ("long_prompt", golden(
            LONG_PROMPT, "37", given("Morning: 14 jars. Afternoon: 23 jars."), add(14, 23),
            conclude("Rosa sold 37 jars of jam."))),
        # Special characters.
        ("special_characters", golden(
            'How many characters are in the string "a&b#c"?', "5",
            given("The characters are a, &, b, #, c."), conclude("There are 5 characters."))),
        ("special_characters", golden(
            'Reverse the string "x@y!".', "!y@x",
            given("Characters: x, @, y, !."), Step("rearrange", "Backwards: !, y, @, x."),
            conclude("The reversed string is !y@x."))),
        ("special_characters", golden(
            'A file is named "report_2024.txt". What is its extension?', "txt",
            given("The extension is the part after the last dot."), conclude("The extension is txt."))),
        ("special_characters", golden(
            "How many backslashes are in the path C:\\data\\notes?", "2",
            given("The backslashes come after C: and after data."), conclude("There are 2 backslashes."))),
        # Emoji.
        ("emoji", golden(
            "Each 🍎 costs $2. How many dollars do 7 🍎 cost?", "14",
            given("Total = price × quantity."), mul(2, 7), conclude("7 🍎 cost $14."))),
        ("emoji", golden(
            "How many 🐱 are in 🐱🐱🐱🐱?", "4",
            given("Count each 🐱: 1, 2, 3, 4."), conclude("There are 4 🐱."))),
        ("emoji", golden(
            'Reverse the string "ab🙂".', "🙂ba",
            given("Characters: a, b, 🙂."), Step("rearrange", "Backwards: 🙂, b, a."),
            conclude("The reversed string is 🙂ba."))),
        ("emoji", golden(
            "🚗 travels at 40 km/h for 2 hours. How many kilometers does it travel?", "80",
            given("Distance = speed × time."), mul(40, 2), conclude("🚗 travels 80 km."))),
        # Answers with whitespace inside.
        ("whitespace_answer", golden(
            "Which city is known as the Big Apple?", "New York",
            recall("The Big Apple is a nickname for New York City."), conclude("The answer is New York."))),
        ("whitespace_answer", golden(
            "Name the capital of Argentina.", "Buenos Aires",
            recall("Argentina's government sits in Buenos Aires."), conclude("The capital is Buenos Aires."))),
        ("whitespace_answer", golden(
            "Which city is the capital of India?", "New Delhi",
            recall("India's government sits in New Delhi."), conclude("The capital is New Delhi."))),
        ("whitespace_answer", golden(
            'Join the words "ice" and "cream" with a space.', "ice cream",
            given("Write ice, then a space, then cream."), conclude("The result is ice cream."))),
        # Questions that cannot be answered.
        ("bare_question", golden(
            "?", NEEDS_MORE_INFORMATION,
            given("The prompt is only a question mark."),
            conclude(f"There is no question to answer. {NEEDS_MORE_INFORMATION}"))),
        ("bare_question", golden(
            "How far did the car travel?", NEEDS_MORE_INFORMATION,
            given("Distance = speed × time, but neither the speed nor the time is given."),
            conclude(f"The distance cannot be found. {NEEDS_MORE_INFORMATION}"))),
        # Prompts with newlines.
        ("newlines", golden(
            "Add these numbers:\n12\n15\n8", "35", add(12, 15), add(27, 8), conclude("The total is 35."))),
        ("newlines", golden(
            "Question:\nA bus travels at 30 km/h for 3 hours.\nHow many kilometers does it travel?", "90",
            given("Distance = speed × time."), mul(30, 3), conclude("The bus travels 90 km."))),
        ("newlines", golden(
            "Sort these numbers from smallest to largest:\n9\n2\n5", "2, 5, 9",
            Step("compare", "2 < 5 < 9"), conclude("The sorted list is 2, 5, 9."))),
        ("newlines", golden(
            "Basket 1: 6 apples\nBasket 2: 7 apples\nHow many apples are there in total?", "13",
            add(6, 7), conclude("There are 13 apples."))),
        # Six-step traces.
        ("six_step", golden(
            "Ana buys 3 pens at $4 each and 2 books at $9 each. She pays with a $50 bill. "
            "How many dollars of change does she get?", "20",
            given("Change = bill - (pens + books)."), mul(3, 4).labelled("Pens"), mul(2, 9).labelled("Books"),
            add(12, 18).labelled("Cost"), sub(50, 30).labelled("Change"), conclude("Ana gets $20 in change."))),
        ("six_step", golden(
            "A truck travels at 50 km/h for 2 hours, then at 40 km/h for 3 hours. The whole route is 300 km. "
            "How many kilometers are left?", "80",
            given("Distance = speed × time for each part."), mul(50, 2).labelled("First part"),
            mul(40, 3).labelled("Second part"), add(100, 120).labelled("So far"), sub(300, 220).labelled("Left"),
            conclude("80 km are left."))),
        ("six_step", golden(
            "What is (14 + 6) × 3 - 25 + 8?", "43",
            given("Work out the brackets first, then go left to right."), add(14, 6), mul(20, 3), sub(60, 25),
            add(35, 8), conclude("The result is 43."))),
        ("six_step", golden(
            "A shop has 120 apples. It sells 25% of them in the morning and 30 more in the afternoon. "
            "How many apples are left?", "60",
            given("The shop starts with 120 apples."), given("Left = 120 - morning sales - afternoon sales."),
            div(120, 4).labelled("25% of 120"), sub(120, 30).labelled("After morning"),
            sub(90, 30).labelled("After afternoon"), conclude("60 apples are left."))),
        # Odd formatting.
        ("odd_formatting", golden(
            "What is   17  ?", "17", given("The question asks for the number 17."), conclude("The answer is 17."))),
        ("odd_formatting", golden(
            "What is    8 ?", "8", given("The question asks for the number 8."), conclude("The answer is 8."))),
        ("odd_formatting", golden(
            "FOUR plus FIVE", "9", given("FOUR is 4 and FIVE is 5."), add(4, 5), conclude("The answer is 9."))),
        ("odd_formatting", golden(
            "EIGHT minus THREE", "5", given("EIGHT is 8 and THREE is 3."), sub(8, 3), conclude("The answer is 5."))),
        ("odd_formatting", golden(
            "SIX times TWO", "12", given("SIX is 6 and TWO is 2."), mul(6, 2), conclude("The answer is 12."))),
        ("odd_formatting", golden(
            "NINE plus SEVEN", "16", given("NINE is 9 and SEVEN is 7."), add(9, 7), conclude("The answer is 16."))),
        ("odd_formatting", golden(
            "005 + 4", "9", given("005 is the number 5."), add(5, 4), conclude("The answer is 9."))),
        ("odd_formatting", golden(
            "012 + 7", "19", given("012 is the number 12."), add(12, 7), conclude("The answer is 19."))),
        ("odd_formatting", golden(
            "what is 15+27??", "42", add(15, 27), conclude("The answer is 42."))),
        ("odd_formatting", golden(
            "WHAT IS 9 + 9?", "18", add(9, 9), conclude("The answer is 18."))),
        # Unicode operators.
        ("unicode_operators", golden(
            "What is 4²?", "16", Step("compute", "4² = 4 × 4 = 16"), conclude("The answer is 16."))),
        ("unicode_operators", golden(
            "What is 9²?", "81", Step("compute", "9² = 9 × 9 = 81"), conclude("The answer is 81."))),
        ("unicode_operators", golden(
            "What is 2³?", "8", Step("compute", "2³ = 2 × 2 × 2 = 8"), conclude("The answer is 8."))),
        ("unicode_operators", golden(
            "What is 6³?", "216", Step("compute", "6³ = 6 × 6 × 6 = 36 × 6 = 216"),
            conclude("The answer is 216."))),
        ("unicode_operators", golden(
            "What is 5² + 2²?", "29", Step("compute", "5² = 25"), Step("compute", "2² = 4"), add(25, 4),
            conclude("The answer is 29."))),
        ("unicode_operators", golden(
            "What is 8 × 7 ÷ 4?", "14", mul(8, 7), div(56, 4), conclude("The answer is 14."))),
        # Facts with word answers (capitals): the eval asks one of these in a phrasing not used for it here.
        ("word_answer", golden(
            "Name the capital of France.", "Paris",
            recall("France's government sits in Paris."), conclude("The capital is Paris."))),
        ("word_answer", golden(
            "Which city is the capital of Japan?", "Tokyo",
            recall("Japan's government sits in Tokyo."), conclude("The capital is Tokyo."))),
        ("word_answer", golden(
            "Name the capital of Italy.", "Rome",
            recall("Italy's government sits in Rome."), conclude("The capital is Rome."))),
        ("word_answer", golden(
            "Which city is the capital of Germany?", "Berlin",
            recall("Germany's government sits in Berlin."), conclude("The capital is Berlin."))),
        ("word_answer", golden(
            "Which city is the capital of Spain?", "Madrid",
            recall("Spain's government sits in Madrid."), conclude("The capital is Madrid."))),
        # Fractions.
        ("fraction", golden(
            "What is the probability of rolling a 6 with one fair die?", "1/6",
            given("A die has 6 equally likely faces and one of them is 6."), conclude("The probability is 1/6."))),
        ("fraction", golden(
            "What is the probability of rolling two sixes with two fair dice?", "1/36",
            given("Each die shows a 6 with probability 1/6."), Step("compute", "1/6 × 1/6 = 1/36"),
            conclude("The probability is 1/36."))),
        ("fraction", golden(
            "What is the probability of getting two heads when flipping two fair coins?", "1/4",
            given("Each coin shows heads with probability 1/2."), Step("compute", "1/2 × 1/2 = 1/4"),
            conclude("The probability is 1/4."))),
        ("fraction", golden(
            "What is the probability of getting three heads when flipping three fair coins?", "1/8",
            given("Each coin shows heads with probability 1/2."), Step("compute", "1/2 × 1/2 × 1/2 = 1/8"),
            conclude("The probability is 1/8."))),
        # Money with cents.
        ("money", golden(
            "You have $20 and spend $7.25. How many dollars are left?", "12.75",
            sub(20, 7), sub(13, Fraction(1, 4)), conclude("$12.75 is left."))),
        ("money", golden(
            "A ticket costs $4.50. How many dollars do 2 tickets cost?", "9",
            mul(Fraction(9, 2), 2), conclude("2 tickets cost $9."))),
    ]


# Edge-case eval items: (category, difficulty, prompt, expected answer). Each has training traces of its kind.
EDGE_EVAL_ITEMS = (
    ("odd_formatting", "easy", "What is   42  ?", "42"),
    ("odd_formatting", "easy", "SEVEN plus THREE", "10"),
    ("odd_formatting", "easy", "007 + 3", "10"),
    ("odd_formatting", "medium", "what is 18+25??", "43"),
    ("odd_formatting", "easy", "WHAT IS 6 + 8?", "14"),
    ("unicode_operators", "easy", "What is 9 × 6?", "54"),
    ("unicode_operators", "easy", "What is 72 ÷ 8?", "9"),
    ("unicode_operators", "easy", "What is 7²?", "49"),
    ("unicode_operators", "medium", "What is 3³?", "27"),
    ("unicode_operators", "hard", "What is 3² + 4²?", "25"),
    ("fraction", "hard", "What is the probability of rolling three sixes with three fair dice?", "1/216"),
    ("word_answer", "easy", "Which city is the capital of France?", "Paris"),
    ("day_of_week", "medium", "Today is Tuesday. What day of the week will it be in 10 days?", "Friday"),
    ("logic", "easy", "True or false: 23 is greater than 19.", "true"),
    ("emoji", "easy", "Each 🍪 costs $3. How many dollars do 5 🍪 cost?", "15"),
)


# --------------------------------------------------------------------------- assembling the datasets


def difficulty(ops: int) -> str:
    return "easy" if ops <= 1 else "medium" if ops <= 3 else "hard"


class _Registry:
    """The prompts and template+numbers keys already used, so that nothing is drawn twice."""

    def __init__(self, reserved_prompts: Sequence[str] = ()):
        self.prompts = {normalize_prompt(p) for p in reserved_prompts}
        self.keys: set[tuple] = set()

    def claim(self, prompt: str, key: tuple | None = None) -> bool:
        normalized = normalize_prompt(prompt)
        if normalized in self.prompts or key in self.keys:
            return False
        self.prompts.add(normalized)
        if key is not None:
            self.keys.add(key)
        return True

    def draw(
        self, rng: random.Random, templates: Sequence[Template], accept: Callable[[Problem], bool] = lambda p: True
    ) -> tuple[Template, Problem]:
        """Draw from the templates until a problem is accepted and neither its prompt nor its numbers were used."""
        for _ in range(MAX_DRAWS):
            template = rng.choice(templates)
            problem = template.build(rng)
            if accept(problem) and self.claim(problem.prompt, (template.name, problem.numbers)):
                return template, problem
        raise RuntimeError(f"no fresh question left in {[t.name for t in templates]}")


def _trace_record(problem: Problem, group: str, category: str, template: str, seed: int) -> dict:
    return {
        "trace_version": TRACE_VERSION,
        "prompt": problem.prompt,
        "final_answer": problem.answer,
        "steps": [{"i": i, "type": s.type, "content": s.content} for i, s in enumerate(problem.steps, start=1)],
        "meta": {
            "dataset": DATASET,
            "generator": GENERATOR,
            "seed": seed,
            "category": category,
            "index": -1,  # set once the records are shuffled into their final order
            "group": group,
            "template": template,
        },
    }


def build_traces(rng: random.Random, seed: int, registry: _Registry) -> list[dict]:
    """The 550 training traces, shuffled; the registry remembers every prompt and key they use."""
    records = []
    for category, problem in edge_training_cases():
        if not registry.claim(problem.prompt):
            raise ValueError(f"edge case prompt used twice: {problem.prompt!r}")
        records.append(_trace_record(problem, "edge_case", category, "golden", seed))
    for template in SYNTHETIC_TEMPLATES:
        for _ in range(SYNTHETIC_PER_CATEGORY):
            _, problem = registry.draw(rng, [template])
            records.append(_trace_record(problem, "synthetic", template.category, template.name, seed))
    for category in MULTI_STEP_CATEGORIES:
        templates = [t for t in MULTI_STEP_TEMPLATES if t.category == category]
        for n in range(MULTI_STEP_PER_CATEGORY):
            # Cycling through the templates keeps every kind of question equally represented.
            template, problem = registry.draw(rng, [templates[n % len(templates)]])
            records.append(_trace_record(problem, "multi_step", category, template.name, seed))
    rng.shuffle(records)
    for index, record in enumerate(records):
        record["meta"]["index"] = index
    return records


def build_eval_items(rng: random.Random, registry: _Registry) -> list[dict]:
    """The 100 eval items: fresh numbers for every template question, then the hand-written edge cases."""
    drawn = []
    for category in MULTI_STEP_CATEGORIES:
        core = [t for t in MULTI_STEP_TEMPLATES if t.category == category and not t.chained]
        for n in range(CORE_PER_CATEGORY):
            # Half the core items are single-operation questions, so the easy end of the scale is populated.
            wants_easy = n % 2 == 0
            _, problem = registry.draw(rng, core, lambda p: (p.ops <= 1) == wants_easy)
            drawn.append(("core", category, difficulty(problem.ops), problem.prompt, problem.answer))
    for category in MULTI_STEP_CATEGORIES:
        chained = [t for t in MULTI_STEP_TEMPLATES if t.category == category and t.chained]
        for n in range(TRACE_SENSITIVE_PER_CATEGORY):
            _, problem = registry.draw(rng, [chained[n % len(chained)]])
            drawn.append(("trace_sensitive", category, difficulty(problem.ops), problem.prompt, problem.answer))
    drawn += [("edge_case", *item) for item in EDGE_EVAL_ITEMS]
    return [
        {
            "id": f"eval-v2-{number:03d}",
            "prompt": prompt,
            "expected_answer": answer,
            "section": section,
            "category": category,
            "difficulty": level,
        }
        for number, (section, category, level, prompt, answer) in enumerate(drawn, start=1)
    ]


def generate(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """Build (training traces, eval items) from one seed; the same seed always gives the same records."""
    rng = random.Random(seed)
    # Edge eval prompts are reserved first so that no generated training question repeats one of them.
    registry = _Registry(reserved_prompts=[prompt for _, _, prompt, _ in EDGE_EVAL_ITEMS])
    traces = build_traces(rng, seed, registry)
    return traces, build_eval_items(rng, registry)


# --------------------------------------------------------------------------- writing files


def _jsonl(records: Sequence[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def _counts(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def write_datasets(out_dir: Path = DEFAULT_OUT_DIR, seed: int = SEED) -> dict:
    """Generate both datasets into out_dir with a MANIFEST.json; return the manifest."""
    traces, eval_items = generate(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "generator": GENERATOR,
        "seed": seed,
        "files": {
            TRAIN_FILE: {
                "records": len(traces),
                "sha256": sha256_file(write_text(out_dir / TRAIN_FILE, _jsonl(traces))),
                "groups": _counts(r["meta"]["group"] for r in traces),
                "categories": _counts(r["meta"]["category"] for r in traces),
            },
            EVAL_FILE: {
                "records": len(eval_items),
                "sha256": sha256_file(write_text(out_dir / EVAL_FILE, _jsonl(eval_items))),
                "sections": _counts(item["section"] for item in eval_items),
                "categories": _counts(item["category"] for item in eval_items),
                "difficulties": _counts(item["difficulty"] for item in eval_items),
            },
        },
    }
    write_json(out_dir / MANIFEST_FILE, manifest)
    return manifest


def format_counts(manifest: dict) -> str:
    """A short plain-text table of the record counts in a manifest."""
    lines = []
    for name, entry in manifest["files"].items():
        lines.append(f"{name}: {entry['records']} records")
        for field, counts in entry.items():
            if isinstance(counts, dict):
                lines.append(f"  {field:<13}" + ", ".join(f"{key} {value}" for key, value in counts.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the dev-reasoning-v2 and eval_v2 datasets.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: data/)")
    args = parser.parse_args(argv)
    utf8_output()
    manifest = write_datasets(args.out)
    print(f"wrote {args.out} (seed {manifest['seed']})")
    print(format_counts(manifest))


if __name__ == "__main__":
    main()
