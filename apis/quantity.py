"""Kubernetes resource quantities ("100Mi", "1", "100m", "1Gi", "5e3").

The `inferenceservice-config` ConfigMap carries CPU and memory sizes as strings that end up verbatim in the
resources of containers the pod webhook injects. KServe validates them with `resource.ParseQuantity` and,
in some code paths, `resource.MustParse`, which panics. We parse them once, when the config key is read, so
a typo becomes a one-line error naming the value instead of a rejected pod with an opaque message. The
grammar is apimachinery's: a signed decimal number followed by a binary-SI suffix (Ki..Ei), a decimal-SI
suffix (n, u, m, k, M, G, T, P, E) or a decimal exponent (e3, E-2).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import BeforeValidator

_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_QUANTITY_RE = re.compile(
    rf"^(?P<number>{_NUMBER})(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    """A string that is not a Kubernetes resource quantity."""


def parse_quantity(text: str) -> Decimal:
    """The numeric value of a quantity (bytes or cores); raises QuantityError if it does not parse."""
    if not isinstance(text, str):
        raise QuantityError(f'quantity must be a string such as "100Mi" or "1", got {type(text).__name__}')
    match = _QUANTITY_RE.match(text)
    if match is None:
        shown = repr(text) if text else "an empty string"
        raise QuantityError(
            f'{shown} is not a Kubernetes quantity (expected e.g. "100m", "1", "100Mi", "1Gi")'
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity: {exc}") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    if suffix:
        return number.scaleb(int(suffix[1:]))
    return number


def _validate_quantity(value: object) -> str:
    # JSON numbers (a common slip: "cpuLimit": 1) are accepted and kept as their string form.
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise QuantityError(f'quantity must be a string such as "100Mi" or "1", got {type(value).__name__}')
    text = value.strip()
    parse_quantity(text)
    return text


Quantity = Annotated[str, BeforeValidator(_validate_quantity)]
"""A pydantic field type: a quantity string, validated and kept as written (whitespace stripped)."""
