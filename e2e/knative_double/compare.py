"""Comparing what the double wants with what the API server stores, so a steady state costs no writes.

The API server fills in defaults, drops the empty fields Go's `omitempty` leaves out, rewrites resource
quantities canonically (`1000m` becomes `1`) and repacks Endpoints subsets. Plain equality would see a
difference forever; `reconcilers.apply.is_subset` over these normal forms does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any


def prune(value: Any) -> Any:
    """`value` without the empty fields Go's `omitempty` drops from typed objects (empty strings, lists,
    maps, false, zero) inside mappings; list elements are kept, so lengths still compare."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            pruned = prune(item)
            if pruned in (None, "", [], {}, False):  # False also matches 0
                continue
            out[key] = pruned
        return out
    if isinstance(value, list):
        return [prune(item) for item in value]
    return value


_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def quantity(text: str) -> Decimal | None:
    """The value of a Kubernetes quantity (`500m`, `0.5`, `2Gi`, `1e3`), None if it is not one."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        return None
    number, exponent, suffix = match.groups()
    value = Decimal(number)
    if exponent:
        value *= Decimal(10) ** int(exponent[1:])
    if suffix:
        value *= _SUFFIX[suffix]
    return value


def _value_or_text(text: str) -> Decimal | str:
    value = quantity(text)
    return text if value is None else value


def with_quantities(value: Any, under_resources: bool = False) -> Any:
    """`value` with the quantities of `resources.requests/limits` as numbers: the API server rewrites them
    canonically (`1000m` is stored as `1`), which must not look like a difference."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if under_resources and key in ("requests", "limits") and isinstance(item, Mapping):
                out[key] = {k: _value_or_text(str(v)) for k, v in item.items()}
            else:
                out[key] = with_quantities(item, key == "resources")
        return out
    if isinstance(value, list):
        return [with_quantities(item) for item in value]
    return value


def endpoint_set(subsets: Iterable[Mapping[str, Any]]) -> set[tuple[Any, ...]]:
    """Endpoints subsets as a set of (readiness, ip, pod, port name, port): the API server repacks subsets."""
    out: set[tuple[Any, ...]] = set()
    for subset in subsets:
        ports = [(p.get("name", ""), p.get("port")) for p in subset.get("ports") or []] or [("", None)]
        for ready, key in ((True, "addresses"), (False, "notReadyAddresses")):
            for address in subset.get(key) or []:
                pod = (address.get("targetRef") or {}).get("name", "")
                for name, port in ports:
                    out.add((ready, address.get("ip"), pod, name, port))
    return out
