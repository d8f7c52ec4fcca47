"""Field typing of the configs: the types a field may declare, how a value is checked against
them, and the shared base class that checks every field when a config is built.

A field declares what it accepts in its annotation:

* ``int``, ``float``, ``bool``, ``str``, ``Optional[...]``, ``tuple[X, ...]`` / ``tuple[X, Y]``,
  a nested config dataclass;
* ``typing.Literal[...]`` for a choice of names (matched case-insensitively, stored lower-case),
  optionally ``Annotated[Literal[...], Choice("ACL variant")]`` to say what the names are;
* ``Annotated[int | float, Range(...)]`` for a numeric range (floats must also be finite);
* ``DataSource`` / ``FilePath`` (``Annotated[str, Location(...)]``) for a path that the loader
  resolves against the current directory and the config file's folder
  (:func:`acl_tf.core.paths.resolve_location`).

Two modes read the same annotations. :func:`coerce` (``loose``) is what the loader applies to
values read from YAML, JSON or ``--set``: it also accepts numbers written as strings
(YAML 1.1 reads ``1e-3`` as a string), ratios such as ``8/255`` for float fields
(:func:`parse_float`; YAML reads ``8/255`` as a string) and integral floats for int fields.
:func:`check_value`
(strict) is what :class:`ConfigBase` applies when a config is constructed in Python. Either way
a bad value is a :class:`~acl_tf.core.errors.ConfigError` naming the field, the value and what
would be valid.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from typing import Annotated, Any, Literal, Optional, Union

from acl_tf.core.errors import ConfigError

__all__ = ["Choice", "ConfigBase", "DataSource", "FilePath", "Fraction", "Location", "NonNegative",
           "NonNegativeFloat", "NonNegativeInt", "Positive", "PositiveFloat", "PositiveInt",
           "Probability", "Range", "Seed", "check_choice", "check_field", "check_value",
           "choice_names", "coerce", "field_types", "from_dict", "location_of", "parse_float",
           "to_dict"]


# -- Declarations --------------------------------------------------------------------------------
def _number(x) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclasses.dataclass(frozen=True)
class Range:
    """Numeric range of a field: ``low <= value <= high`` (``<`` where open; None: unbounded)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open
                                      else value > self.high):
            return False
        return True

    def describe(self) -> str:
        """``in [0, 1]``, ``in (0, 1)``, ``>= 1``, ``> 0``, ``<= 5``."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{_number(self.low)}, "
                    f"{_number(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return "any number"

    def check(self, value, where: str) -> None:
        if not self.contains(value):
            raise ConfigError(f"{where} must be {self.describe()}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Choice:
    """What the names of a ``Literal`` are (``Annotated[Literal[...], Choice("ACL variant")]``):
    a bad name then reads ``Unknown ACL variant 'x' ...``. ``note`` explains the names."""

    label: str
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Location:
    """A field naming files: relative paths are resolved when a config is loaded from YAML, JSON
    or ``--set`` (:func:`acl_tf.configs.loader.load_config`). With ``dataset``, a bare name that
    is no file is a TFDS dataset name and ``sample:NAME`` is a sample shipped with acl-tf."""

    dataset: bool = False


Positive = Range(0, low_open=True)
NonNegative = Range(0)
Fraction = Range(0, 1)

PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, NonNegative]
PositiveFloat = Annotated[float, Positive]
NonNegativeFloat = Annotated[float, NonNegative]
Probability = Annotated[float, Fraction]
Seed = Annotated[int, Range(0, 2**31 - 1)]     # numpy, Keras and TF stateless seeds all take it
DataSource = Annotated[str, Location(dataset=True)]   # TFDS name, sample:NAME or TFRecord path(s)
FilePath = Annotated[str, Location()]


# -- Reading annotations -------------------------------------------------------------------------
_HINTS: dict = {}


def field_types(cls) -> dict:
    """``{field name: annotation}`` of dataclass ``cls``, ``Annotated`` extras included."""
    if cls not in _HINTS:
        names = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls, include_extras=True)
        _HINTS[cls] = {k: v for k, v in hints.items() if k in names}
    return _HINTS[cls]


def _split_annotated(tp):
    """``Annotated[T, *extras]`` -> (T, extras); anything else -> (tp, ())."""
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        return base, tuple(extras)
    return tp, ()


def choice_names(tp) -> tuple:
    """The names of a choice type: ``Literal[...]`` or ``Annotated[Literal[...], ...]``."""
    base, _ = _split_annotated(tp)
    if typing.get_origin(base) is not Literal:
        raise TypeError(f"{tp!r} is not a Literal choice type.")
    return typing.get_args(base)


def location_of(tp) -> Optional[Location]:
    """The :class:`Location` of a field type (``FilePath``, ``Optional[DataSource]``, ...)."""
    base, extras = _split_annotated(tp)
    found = next((e for e in extras if isinstance(e, Location)), None)
    if found is None and typing.get_origin(base) in (Union, types.UnionType):
        found = next((loc for arg in typing.get_args(base) if (loc := location_of(arg))), None)
    return found


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# -- Checking values -----------------------------------------------------------------------------
def _to_int(value, where: str, loose: bool) -> int:
    if _is_int(value):
        return int(value)
    if loose:
        number = value
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    number = None
        if _is_real(number) and math.isfinite(number) and float(number).is_integer():
            return int(number)
    raise ConfigError(f"{where} must be an integer, got {value!r}.")


def parse_float(text: str) -> float:
    """A float written as text: a number (``"0.031"``, ``"1e-3"``) or a ratio of two numbers
    (``"8/255"``, ``"8 / 255"``), as epsilons and step sizes in pixel units are usually written.
    Raises ValueError for anything else (a zero denominator included)."""
    numerator, slash, denominator = str(text).partition("/")
    if not slash:
        return float(numerator)
    if "/" in denominator:
        raise ValueError(f"not a number or a ratio a/b: {text!r}")
    if float(denominator) == 0:
        raise ValueError(f"zero denominator: {text!r}")
    return float(numerator) / float(denominator)


def _to_float(value, where: str, loose: bool) -> float:
    number = None
    if _is_real(value):
        number = float(value)
    elif loose and isinstance(value, str):
        try:
            number = parse_float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"{where} must be a number, got {value!r}.")
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}.")
    return number


def _to_choice(value, names: tuple, where: str, choice: Optional[Choice], loose: bool):
    if all(isinstance(n, str) for n in names):
        found = value.strip().lower() if isinstance(value, str) else None
    elif all(_is_int(n) for n in names):
        try:
            found = _to_int(value, where, loose)
        except ConfigError:
            found = None
    else:   # pragma: no cover - no config mixes kinds of names
        found = value
    if found in names:
        return names[names.index(found)]
    note = f" ({choice.note})" if choice and choice.note else ""
    if choice:
        raise ConfigError(f"Unknown {choice.label} {value!r} for {where}; expected one of "
                          f"{names}{note}.")
    raise ConfigError(f"{where} must be one of {names}, got {value!r}.")


def _convert(value: Any, tp, where: str, loose: bool):
    base, extras = _split_annotated(tp)
    origin = typing.get_origin(base)
    if origin is Literal:
        choice = next((e for e in extras if isinstance(e, Choice)), None)
        return _to_choice(value, typing.get_args(base), where, choice, loose)
    if extras:
        value = _convert(value, base, where, loose)
        for extra in extras:
            if isinstance(extra, Range):
                extra.check(value, where)
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(base)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for arg in options:
            try:
                return _convert(value, arg, where, loose)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if dataclasses.is_dataclass(base):
        if isinstance(value, base):
            return value
        if loose and isinstance(value, dict):
            return from_dict(base, value, prefix=f"{where}.")
        raise ConfigError(f"{where} must be a {'mapping' if loose else base.__name__}, "
                          f"got {value!r}.")
    if origin is tuple:
        args = typing.get_args(base)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]", loose)
                         for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where} needs {len(args)} values, got {list(value)!r}.")
        return tuple(_convert(v, a, f"{where}[{i}]", loose)
                     for i, (v, a) in enumerate(zip(value, args)))
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if base is int:
        return _to_int(value, where, loose)
    if base is float:
        return _to_float(value, where, loose)
    if base is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}.")
    return value


def coerce(value: Any, tp, where: str):
    """``value`` read from a file or an override, converted to annotation ``tp`` (numbers
    written as strings, integral floats for ints, dicts for nested configs), or a ConfigError
    naming ``where``."""
    return _convert(value, tp, where, loose=True)


def check_value(value: Any, tp, where: str):
    """``value`` checked against annotation ``tp`` as given in Python (no parsing of strings):
    returns it normalised (lower-cased choice, tuple for a list, float for an int)."""
    return _convert(value, tp, where, loose=False)


def check_field(cls, name: str, value: Any, where: Optional[str] = None):
    """``value`` checked against the annotation of field ``name`` of config class ``cls``, for
    library functions that take the field's value as a plain argument."""
    return check_value(value, field_types(cls)[name], where or name)


def check_choice(tp, value: Any, where: str = "value"):
    """The lower-cased name ``value`` of choice type ``tp``, or a ConfigError listing the names."""
    return check_value(value, tp, where)


# -- Base class ----------------------------------------------------------------------------------
class ConfigBase:
    """Base of every config dataclass: on construction each field is checked against its
    annotation (type, choice, range) and normalised, then :meth:`validate` checks the rules that
    tie fields together. So library code can trust any config object, however it was built."""

    def __post_init__(self):
        owner = type(self).__name__
        for name, tp in field_types(type(self)).items():
            value = getattr(self, name)
            checked = check_value(value, tp, f"{owner}.{name}")
            if checked is not value:
                object.__setattr__(self, name, checked)
        self.validate()

    def validate(self) -> None:
        """Cross-field rules; raise ConfigError. Single fields are checked by their type."""


# -- Dicts <-> configs ---------------------------------------------------------------------------
def _has_defaults(cls) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls))


def from_dict(cls, values: dict, prefix: str = ""):
    """Builds dataclass ``cls`` from a (partial) dict of plain values (as read from YAML/JSON);
    missing fields keep their defaults, a nested section given as a dict updates the default
    section. Every value is coerced to its field's annotation (:func:`coerce`)."""
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        section = prefix.rstrip(".") or cls.__name__
        raise ConfigError(f"Unknown config field(s) {[prefix + u for u in unknown]}; "
                          f"valid fields of {section} are {sorted(types_)}.")
    kwargs = {}
    for name, value in values.items():
        tp = types_[name]
        if dataclasses.is_dataclass(_split_annotated(tp)[0]) and isinstance(value, dict):
            default = getattr(cls(), name) if _has_defaults(cls) else None
            base = to_dict(default) if default is not None else {}
            value = {**base, **value}
        kwargs[name] = coerce(value, tp, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if not prefix:
            raise
        # A cross-field rule of a nested section: give its field(s) their dotted path.
        message = str(err)
        if message.split(" ", 1)[0].split("[", 1)[0] in types_:
            raise ConfigError(prefix + message) from None
        if message.startswith(prefix):
            raise
        raise ConfigError(f"{prefix.rstrip('.')}: {message}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"Invalid {prefix.rstrip('.') or cls.__name__}: {err}") from err


def to_dict(config) -> dict:
    """The config as plain JSON-able Python (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
