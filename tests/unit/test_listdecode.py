"""`decode_list` hands over each item as it is decoded and returns the rest, as `json.loads` reads them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manager.listdecode import decode_list


def decoded(text: str) -> tuple[list[Any], dict[str, Any]]:
    items: list[Any] = []
    rest = decode_list(text, items.append)
    return items, rest


@pytest.mark.parametrize(
    ("text", "items", "rest"),
    [
        ('{"kind":"L","metadata":{"resourceVersion":"7"},"items":[{"a":1},{"b":[2]}]}',
         [{"a": 1}, {"b": [2]}], {"kind": "L", "metadata": {"resourceVersion": "7"}}),
        ('{"items":[],"metadata":{}}', [], {"metadata": {}}),
        ('{"items":null}', [], {"items": None}),
        ("{}", [], {}),
        (' \n{ "items" : [ {"x" : "]}"} , {} ] , "metadata" : { "continue" : "t" } } \r\n', [{"x": "]}"}, {}],
         {"metadata": {"continue": "t"}}),
        ('{"metadata":{"a":"\\u00e9\\n"},"items":[{"s":"caf\\u00e9"}]}',
         [{"s": "café"}], {"metadata": {"a": "é\n"}}),
    ],
)  # fmt: skip
def test_items_are_handed_over_and_the_rest_returned(
    text: str, items: list[Any], rest: dict[str, Any]
) -> None:
    assert decoded(text) == (items, rest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"items":[1]}',
        '{"items":[{}]',
        '{"items":[{}],}',
        '{"items":[{},]}',
        '{"a":1 "b":2}',
        '{"a":1}x',
        "{1:2}",
        '{"items":[{}]} {}',
    ],
)
def test_malformed_lists_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        decoded(text)


def test_items_arrive_one_at_a_time_before_the_rest_is_read() -> None:
    order: list[str] = []
    text = '{"items":[{"n":1},{"n":2}],"metadata":{"resourceVersion":"9"}}'
    rest = decode_list(text, lambda item: order.append(f"item {item['n']}"))
    order.append(f"rest {rest['metadata']['resourceVersion']}")
    assert order == ["item 1", "item 2", "rest 9"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    items=st.lists(st.dictionaries(st.text(), JSON, max_size=5), max_size=6),
    rest=st.dictionaries(st.text().filter(lambda k: k != "items"), JSON, max_size=4),
    indent=st.sampled_from([None, 1]),
)
def test_the_same_as_json_loads(
    items: list[dict[str, Any]], rest: dict[str, Any], indent: int | None
) -> None:
    text = json.dumps({**rest, "items": items}, indent=indent)
    assert decoded(text) == (items, rest)
