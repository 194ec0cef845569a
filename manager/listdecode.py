"""Decode a List response one item at a time.

A first list of a large collection comes from the API server's watch cache in one unpaged response (as
client-go asks for it), and decoding it whole with `json.loads` builds every item's dicts before the first
is stored. At 30,000 Services that is several hundred MiB of small objects at once, and CPython keeps an
arena for as long as any object in it survives, so the informer's peak became the process' RSS for good
(measured in docs/benchmarks.md). Here only the text is held whole (one large allocation, returned to the
system when freed) while each item is decoded, handed over and dropped before the next, so the peak of small
objects is one item.

The List must be a JSON object; its `items` member an array (or null). Anything else is a `ValueError`,
as from `json.loads`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def decode_list(text: str, on_item: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Call `on_item` with each element of the top-level object's `items`, in order, as it is decoded;
    return the other members (`metadata`, `kind`, ...)."""
    rest: dict[str, Any] = {}
    pos = _skip(text, 0)
    pos = _expect(text, pos, "{")
    if not text.startswith("}", pos):
        while True:
            key, pos = _value(text, pos)
            if not isinstance(key, str):
                raise ValueError(f"expected a member name at {pos}")
            pos = _expect(text, pos, ":")
            if key == "items" and text.startswith("[", pos):
                pos = _items(text, pos, on_item)
            else:
                rest[key], pos = _value(text, pos)
            if text.startswith("}", pos):
                break
            pos = _expect(text, pos, ",")
    if _skip(text, pos + 1) != len(text):
        raise ValueError(f"extra data at {pos + 1}")
    return rest


def _items(text: str, pos: int, on_item: Callable[[dict[str, Any]], None]) -> int:
    pos = _expect(text, pos, "[")
    if text.startswith("]", pos):
        return _skip(text, pos + 1)
    while True:
        item, pos = _value(text, pos)
        if not isinstance(item, dict):
            raise ValueError(f"a list item is not an object at {pos}")
        on_item(item)
        del item
        if text.startswith("]", pos):
            return _skip(text, pos + 1)
        pos = _expect(text, pos, ",")


def _value(text: str, pos: int) -> tuple[Any, int]:
    value, end = _DECODER.raw_decode(text, pos)
    return value, _skip(text, end)


def _expect(text: str, pos: int, char: str) -> int:
    if not text.startswith(char, pos):
        raise ValueError(f"expected {char!r} at {pos}")
    return _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()
