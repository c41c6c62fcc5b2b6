"""Human durations in topology and config files."""

from __future__ import annotations

import pytest

from processor.timeutil import parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("5s", 5000),
        ("1m", 60_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1.5s", 1500),
        ("0.25m", 15_000),
        ("100", 100),
        ("0", 0),
        ("0ms", 0),
        (" 5 s ", 5000),
        ("0.5ms", 0),  # sub-millisecond truncates
        (1500, 1500),
        (0, 0),
        (2.9, 2),
    ],
)
def test_parses(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "text", ["", "s", "5x", "5 sec", "-5s", "1e3ms", "five", "5s5", "ms5", "1,5s", "inf"]
)
def test_rejects_malformed(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(text)


def test_error_message_gives_an_example():
    with pytest.raises(ValueError, match=r"expected a number with a unit: ms, s, m, h, d; e\.g\. '5s'"):
        parse_duration_ms("soon")


@pytest.mark.parametrize("value", [-1, -0.5])
def test_rejects_negative_numbers(value):
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration_ms(value)


@pytest.mark.parametrize("value", [True, False])
def test_rejects_booleans(value):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(value)


def test_every_whole_millisecond_of_two_decimal_seconds_is_exact_for_small_values():
    assert [parse_duration_ms(f"{i / 100}s") for i in range(1, 200)] == [i * 10 for i in range(1, 200)]


@pytest.mark.parametrize("text", ["2.01s", "4.02s", "8.03s"])
def test_decimal_seconds_do_not_lose_a_millisecond(text):
    assert parse_duration_ms(text) == round(float(text[:-1]) * 1000)
