"""Kubernetes resource quantities ("100Mi", "1", "100m", "1Gi", "5e3").

The `inferenceservice-config` ConfigMap carries CPU and memory sizes as strings that end up verbatim in the
resources of containers the pod webhook injects. KServe validates them with `resource.ParseQuantity` and,
in some code paths, `resource.MustParse`, which panics. We parse them once, when the config key is read, so
a typo becomes a one-line error naming the value instead of a rejected pod with an opaque message.

The grammar is apimachinery's `ParseQuantity`, including what it surprisingly accepts: an optional sign,
digits with an optional fraction (each part may be empty, so "." and "+" are zero), then a binary-SI suffix
(Ki..Ei), a decimal-SI suffix (n, u, m, k, M, G, T, P, E) or a decimal exponent (e3, E-2). Nothing else is
allowed, not even surrounding whitespace.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from typing import Annotated

from pydantic import BeforeValidator

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")
_DIGITS = frozenset("0123456789")
_INT32 = 2**32
_EXACT = Context(prec=100, Emax=MAX_EMAX, Emin=MIN_EMIN)


class QuantityError(ValueError):
    """A string that is not a Kubernetes resource quantity."""


def _digits_end(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _DIGITS:
        pos += 1
    return pos


def _split(text: str) -> tuple[bool, str, str, str] | None:
    """(positive, integer digits, fraction digits, suffix), or None when the text does not parse."""
    pos = 1 if text[:1] in ("+", "-") else 0
    positive = text[:1] != "-"
    number_end = _digits_end(text, pos)
    whole = text[pos:number_end]
    fraction = ""
    pos = number_end
    if pos < len(text) and text[pos] == ".":
        fraction_end = _digits_end(text, pos + 1)
        fraction = text[pos + 1 : fraction_end]
        pos = fraction_end
    suffix_start = pos
    while pos < len(text) and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < len(text) and text[pos] in "+-":
        pos += 1
    if _digits_end(text, pos) != len(text):
        return None
    return positive, whole, fraction, text[suffix_start:]


def _exponent(suffix: str) -> tuple[int, int] | None:
    """(base, exponent) of a suffix, or None for an unknown one."""
    if suffix in _DECIMAL:
        return 10, _DECIMAL[suffix]
    if suffix in _BINARY:
        return 2, _BINARY[suffix]
    if len(suffix) > 1 and suffix[0] in "eE":
        digits = suffix[1:].removeprefix("+").removeprefix("-")
        if digits and all(ch in _DIGITS for ch in digits) and abs(int(suffix[1:])) < 2**63:
            # Go keeps the exponent as an int32 (wrapping), so a huge one still parses.
            return 10, (int(suffix[1:]) + _INT32 // 2) % _INT32 - _INT32 // 2
    return None


def parse_quantity(text: str) -> Decimal:
    """The numeric value of a quantity (bytes or cores); raises QuantityError if it does not parse."""
    if not isinstance(text, str):
        raise QuantityError(f'quantity must be a string such as "100Mi" or "1", got {type(text).__name__}')
    parts = _split(text) if text else None
    scale = _exponent(parts[3]) if parts is not None else None
    if parts is None or scale is None:
        shown = repr(text) if text else "an empty string"
        raise QuantityError(
            f'{shown} is not a Kubernetes quantity (expected e.g. "100m", "1", "100Mi", "1Gi")'
        )
    positive, whole, fraction, _ = parts
    number = Decimal(f"{whole or '0'}.{fraction or '0'}")
    base, exponent = scale
    value = number * (Decimal(2) ** exponent) if base == 2 else number.scaleb(exponent, _EXACT)
    return value if positive else -value


def _validate_quantity(value: object) -> str:
    # JSON numbers (a common slip: "cpuLimit": 1) are accepted and kept as their string form.
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise QuantityError(f'quantity must be a string such as "100Mi" or "1", got {type(value).__name__}')
    parse_quantity(value)
    return value


Quantity = Annotated[str, BeforeValidator(_validate_quantity)]
"""A pydantic field type: a quantity string, validated and kept as written."""
