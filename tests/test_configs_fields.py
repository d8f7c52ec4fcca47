"""Field typing of the configs (acl_tf.configs.fields): ranges, choices, loose and strict checks,
the shared construction check of ConfigBase."""

import dataclasses
import math
import re
from typing import Annotated, Literal, Optional

import numpy as np
import pytest

from acl_tf.configs import (
    Choice,
    ConfigBase,
    ConfigError,
    PositiveInt,
    Range,
    check_choice,
    check_value,
    choice_names,
    coerce,
    from_dict,
)


@pytest.mark.parametrize("rng,text,inside,outside", [
    (Range(0, 1), "in [0, 1]", [0, 0.5, 1], [-1e-9, 1.0000001]),
    (Range(0, 1, low_open=True), "in (0, 1]", [1e-12, 1], [0, 1.5]),
    (Range(0, 1, low_open=True, high_open=True), "in (0, 1)", [0.5], [0, 1]),
    (Range(1), ">= 1", [1, 10**12], [0, -3]),
    (Range(0, low_open=True), "> 0", [1e-300], [0, -1]),
    (Range(high=5, high_open=True), "< 5", [4.999, -10], [5, 6]),
    (Range(0, 0.5), "in [0, 0.5]", [0.25], [0.51]),
    (Range(0, 2**31 - 1), "in [0, 2147483647]", [2**31 - 1], [2**31, -1]),
])
def test_range_describes_and_checks(rng, text, inside, outside):
    assert rng.describe() == text
    for value in inside:
        assert rng.contains(value)
        rng.check(value, "x")
    for value in outside:
        assert not rng.contains(value)
        message = f"a.b must be {text}, got {value!r}."
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            rng.check(value, "a.b")


Unit = Annotated[float, Range(0, 1)]
Colour = Annotated[Literal["red", "green"], Choice("colour", "what a light shows")]


@pytest.mark.parametrize("text,expected", [
    ("1e-3", 0.001), ("1E-3", 0.001), (" 5e-1 ", 0.5), ("1.0e-1", 0.1), (".25", 0.25), (1, 1.0)])
def test_loose_floats_accept_every_usual_notation(text, expected):
    value = coerce(text, Unit, "lr")
    assert value == expected and type(value) is float


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf, "nan", "inf",
                                   "-Infinity", "1e400"])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(ConfigError, match="^lr must be a finite number"):
        coerce(value, float, "lr")
    with pytest.raises(ConfigError, match="^lr must be a finite number"):
        check_value(float(value), float, "lr")


def test_loose_ints_take_integral_numbers_in_any_notation():
    assert coerce("1e9", int, "n") == 10**9 and type(coerce("1e9", int, "n")) is int
    assert coerce("1.0e9", int, "n") == 10**9
    assert coerce(12.0, int, "n") == 12
    assert coerce("12", int, "n") == 12
    assert coerce(np.int64(7), int, "n") == 7
    for bad in ("1e-1", 12.5, "twelve", True, None, "1e400"):
        with pytest.raises(ConfigError, match="^n must be an integer, got "):
            coerce(bad, int, "n")


def test_strict_checks_parse_nothing():
    assert check_value(3, float, "x") == 3.0 and type(check_value(3, float, "x")) is float
    assert check_value(np.float32(0.5), float, "x") == 0.5
    assert check_value(np.int32(4), int, "x") == 4
    with pytest.raises(ConfigError, match="x must be a number, got '1e-3'"):
        check_value("1e-3", float, "x")
    with pytest.raises(ConfigError, match="x must be an integer, got 32.0"):
        check_value(32.0, int, "x")
    with pytest.raises(ConfigError, match="x must be true or false, got 1"):
        check_value(1, bool, "x")
    with pytest.raises(ConfigError, match="x must be a number, got True"):
        check_value(True, float, "x")


def test_choices_match_case_insensitively_and_name_the_choice():
    assert choice_names(Colour) == ("red", "green")
    assert choice_names(Literal[2, 3]) == (2, 3)
    assert check_choice(Colour, " RED ") == "red"
    assert coerce("Green", Colour, "light") == "green"
    with pytest.raises(ConfigError, match=r"^Unknown colour 'blue' for light; expected one of "
                                          r"\('red', 'green'\) \(what a light shows\)\.$"):
        coerce("blue", Colour, "light")
    with pytest.raises(ConfigError, match=r"^n must be one of \(2, 3\), got 4\.$"):
        coerce(4, Literal[2, 3], "n")
    assert coerce("3", Literal[2, 3], "n") == 3 and coerce(2.0, Literal[2, 3], "n") == 2
    with pytest.raises(ConfigError, match="must be one of"):
        check_value(3.0, Literal[2, 3], "n")     # strict: no float for an int choice
    with pytest.raises(ConfigError, match="Unknown colour 7"):
        coerce(7, Colour, "light")


def test_optional_tuples_and_ranges_of_elements():
    tp = Optional[tuple[Annotated[int, Range(1)], ...]]
    assert coerce(None, tp, "steps") is None
    assert coerce([1, "2", 3.0], tp, "steps") == (1, 2, 3)
    with pytest.raises(ConfigError, match=r"^steps\[1\] must be >= 1, got 0\.$"):
        coerce([3, 0], tp, "steps")
    with pytest.raises(ConfigError, match="steps must be a list, got 3"):
        coerce(3, tp, "steps")
    pair = tuple[Unit, Unit]
    with pytest.raises(ConfigError, match=r"scale needs 2 values, got \[0\.5\]"):
        coerce([0.5], pair, "scale")
    assert check_value([0.5, 1], pair, "scale") == (0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Inner(ConfigBase):
    rate: Unit = 0.5
    colour: Colour = "red"


@dataclasses.dataclass
class Outer(ConfigBase):
    inner: Inner = dataclasses.field(default_factory=lambda: Inner(rate=0.25))
    count: PositiveInt = 2
    low: Annotated[int, Range(0)] = 0

    def validate(self):
        if self.low >= self.count:
            raise ConfigError(f"low must be below count={self.count}, got {self.low}.")


def test_config_base_checks_direct_construction_too():
    assert Inner(rate=1, colour="GREEN") == Inner(rate=1.0, colour="green")
    assert type(Inner(rate=1).rate) is float
    with pytest.raises(ConfigError, match=r"^Inner\.rate must be in \[0, 1\], got 2\.0\.$"):
        Inner(rate=2)
    with pytest.raises(ConfigError, match=r"^Outer\.count must be >= 1, got 0\.$"):
        Outer(count=0)
    with pytest.raises(ConfigError, match="Outer.inner must be a Inner"):
        Outer(inner={"rate": 0.1})
    with pytest.raises(ConfigError, match="low must be below count=2, got 5"):
        Outer(low=5)
    with pytest.raises(ConfigError, match=r"Inner\.rate must be in \[0, 1\]"):
        dataclasses.replace(Inner(), rate=-0.5)


def test_from_dict_paths_merging_and_cross_field_rules():
    outer = from_dict(Outer, {"inner": {"colour": "Green"}, "count": "3"})
    assert outer == Outer(inner=Inner(rate=0.25, colour="green"), count=3)   # default rate kept
    with pytest.raises(ConfigError, match=r"^inner\.rate must be in \[0, 1\], got 1\.5\.$"):
        from_dict(Outer, {"inner": {"rate": 1.5}})
    with pytest.raises(ConfigError, match=r"^low must be below count=3, got 3\.$"):
        from_dict(Outer, {"count": 3, "low": 3})
    with pytest.raises(ConfigError, match=r"Unknown config field\(s\) \['inner\.hue'\]; valid "
                                          r"fields of inner are \['colour', 'rate'\]"):
        from_dict(Outer, {"inner": {"hue": 1}})
    with pytest.raises(ConfigError, match="inner must be a mapping, got 3"):
        from_dict(Outer, {"inner": 3})


def test_float_fields_read_ratios_such_as_8_255():
    from acl_tf.configs.fields import parse_float

    for text, value in [("8/255", 8 / 255), ("8 / 255", 8 / 255), (" 0.031 ", 0.031),
                        ("1e-3/2", 5e-4), ("-1/4", -0.25)]:
        assert parse_float(text) == value, text
        assert coerce(text, float, "x") == value, text
    assert coerce("8/255", Annotated[float, Range(0, 1)], "attack.epsilon") == 8 / 255
    assert coerce(["0", "2/255"], tuple[float, ...], "sweep") == (0.0, 2 / 255)
    for bad in ("8/0", "8/255/2", "a/b", "/255", "8/"):
        with pytest.raises(ValueError):
            parse_float(bad)
        with pytest.raises(ConfigError, match="x must be a number"):
            coerce(bad, float, "x")
    with pytest.raises(ConfigError, match="must be in"):
        coerce("300/255", Annotated[float, Range(0, 1)], "attack.epsilon")
    # Ratios are for float fields only: an int field is no place for 8/255 (nor for 8/2), and a
    # config built in Python takes numbers, not text.
    with pytest.raises(ConfigError, match="steps must be an integer"):
        coerce("8/2", int, "steps")
    with pytest.raises(ConfigError, match="must be a number, got '8/255'"):
        check_value("8/255", float, "epsilon")
    assert coerce("runs/ds", Optional[str], "pretrained") == "runs/ds"   # strings stay strings
