"""Parameters declared beside their constraints, validated by one mechanism (scikit-learn's
``_param_validation``): LAGNH's config (:mod:`lagnh_pyg.config`, each dataclass field carries
its constraint) and every baseline's parameters (:class:`lagnh_pyg.baselines.base.Param`) are
checked here, with the same one-line errors; ``key=value`` texts (``--set``, ``--grid``) are
split here and YAML files read here.

A constraint checks a value and returns it typed, or raises :class:`~lagnh_pyg.errors.InputError`
naming the parameter, what it must be and the value given::

    Integer(low=1).check("graph.k", 0)        # InputError: graph.k must be at least 1, got 0
    Options("gcn", "row").check("model.normalization", "sym")
    Real(positive=True, auto=True, text=True).check("itq parameter reg", "auto")  # -> "auto"

Numbers given as text (a baseline's ``--set reg=1e-5``) are read when the constraint says
``text=True``; LAGNH's config reads ``--set`` values as YAML, so its numbers arrive typed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError


class Constraint:
    """What a parameter may be: :meth:`check` returns the value typed or raises InputError."""

    def check(self, where: str, value: Any) -> Any:
        raise NotImplementedError

    def fail(self, where: str, what: str, value: Any) -> InputError:
        return InputError(f"{where} must be {what}, got {value!r}")


@dataclass(frozen=True)
class _Number(Constraint):
    """An int or a float within bounds. ``low``: inclusive minimum ("at least"); ``positive``:
    > 0; ``high`` with ``high_open``: the interval [low, high) ("lie in"); ``auto``: the string
    ``auto`` is also allowed; ``text``: numbers may be given as text; ``finite``: no inf/nan."""

    low: float | None = None
    high: float | None = None
    high_open: bool = False
    positive: bool = False
    auto: bool = False
    text: bool = False
    finite: bool = True
    integer = False

    def check(self, where: str, value: Any) -> Any:
        if self.auto and isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        number = self._number(value)
        if number is None:
            what = "an integer" if self.integer else "a number"
            raise self.fail(where, what + (" or 'auto'" if self.auto else ""), value)
        if self.finite and not math.isfinite(number):
            raise self.fail(where, "finite", value)
        if self.positive and number <= 0:
            raise self.fail(where, "positive", value)
        if self.high is not None:
            if not (self.low is None or number >= self.low) or not (number < self.high if self.high_open else
                                                                     number <= self.high):
                raise self.fail(where, f"lie in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}", value)
        elif self.low is not None and number < self.low:
            raise self.fail(where, f"at least {self.low:g}", value)
        return number

    def _number(self, value: Any) -> float | int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            if not self.text and self.integer:
                return None
            try:
                value = float(value)
            except ValueError:
                return None
        if self.integer:
            if isinstance(value, int):
                return value
            if self.text and isinstance(value, float) and value.is_integer():
                return int(value)
            return None
        return float(value) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class Integer(_Number):
    """An integer (``text=True``: also ``"5"`` and ``5.0``)."""

    integer = True


@dataclass(frozen=True)
class Real(_Number):
    """A number, returned as a float (strings that read as numbers are accepted: YAML reads
    ``1e-3`` as a string)."""


class Options(Constraint):
    """One of the given strings."""

    def __init__(self, *choices: str, text: bool = False) -> None:
        self.choices, self.text = tuple(choices), text

    def check(self, where: str, value: Any) -> str:
        if self.text:
            value = str(value)
        elif not isinstance(value, str):
            raise self.fail(where, "a string", value)
        if value not in self.choices:
            raise self.fail(where, f"one of {', '.join(self.choices)}", value)
        return value

    def __repr__(self) -> str:
        return f"Options{self.choices}"


class Boolean(Constraint):
    """True or false."""

    def check(self, where: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value


class IntegerList(Constraint):
    """A non-empty list of integers, each positive or one of ``special`` (e.g. -1: all)."""

    def __init__(self, what: str, special: tuple[int, ...] = ()) -> None:
        self.what, self.special = what, special

    def check(self, where: str, value: Any) -> list:
        if not isinstance(value, list) or not value or any(
                isinstance(v, bool) or not isinstance(v, int) or (v <= 0 and v not in self.special) for v in value):
            raise self.fail(where, self.what, value)
        return list(value)


# -- key=value texts and YAML files --------------------------------------------------------------
def split_assignment(text: str, option: str = "--set", example: str = "train.epochs=50") -> tuple[str, str]:
    """``"train.epochs=50"`` -> ``("train.epochs", "50")`` (both stripped); anything without a
    key and an ``=`` is bad input naming ``option`` and an ``example``."""
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip():
        raise InputError(f"{option} expects key=value (e.g. {example}), got {text!r}")
    return key.strip(), value.strip()


def split_assignments(items: Iterable[str] | None, option: str = "--set", example: str = "train.epochs=50"
                      ) -> dict[str, str]:
    """:func:`split_assignment` of each item, as a dict (a later key wins)."""
    return dict(split_assignment(item, option, example) for item in items or ())


def load_yaml(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """A YAML file (``what`` names it in errors: missing or invalid is bad input; ``hint`` ends
    the missing file's line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist{hint}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:  # PyYAML builds nested lists recursively
        raise InputError(f"{what} {path} is nested too deeply to be a config") from None
