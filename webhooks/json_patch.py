"""The JSON Patch of a mutated pod: `jsonpatch.make_patch`'s operations, without diffing the whole pod.

Why: `jsonpatch.make_patch` was about 1 ms of the 1.9 ms of CPU a `/mutate-pods` admission cost, so one
process saturated near 500 pods/s (issue 13). It matches list items up by serialising every item of every
list it meets (sorted, twice) and searches the added and removed values for moves. The injectors' edits
are far narrower than that: they add object members, append named items to lists (volumes, mounts, env,
ports, containers), and overwrite values in place (`merge_env`, `set_existing_env`); they never insert into
the middle of a list and rarely remove anything. For such an edit this module produces the very operations
`make_patch` would, same order, same paths, same values, by walking only the subtrees that differ:

- objects: members only the mutated object has are `add`ed in its order, then the common members are
  compared in the original's order; a differing scalar (compared as its JSON text, so `1` and `true` differ)
  or a change of type is a `replace`;
- lists: compared item by item and the mutated list's extra items `add`ed at their indices. That is what
  `make_patch` does for a list whose items only change in place or are appended, provided no item matches
  an equal item at another index (it matches lists up with `difflib`), so such a match is checked for;
- subtrees that compare equal (`==`) are skipped without a look inside.

Everything else, a removed member, a shorter list, a list item changed into another type or another scalar,
an item equal to one at another index, long lists that would make that check slow, anything that is not
plain JSON, gets the full `jsonpatch.make_patch` of the whole document: its moves pair removed and added
values anywhere in the document, and only the full diff finds those. So for JSON documents that meet the
condition below, the result is `make_patch`'s (tests/unit/test_json_patch.py compares them on generated
documents and on generated pods sent through the injectors), and the fast path is only faster.

Skipping `==` subtrees relies on `==` meaning "same JSON" between two values at the same place of the
original and the mutated pod. Python's `==` also equates `1`, `1.0` and `True`, so this holds because the
mutated pod is a typed copy (`copy_json`) of the original that the injectors change only by writing
strings, new objects and lists, and values built from the configuration, never a number or boolean over an
equal number or boolean of another type. The pod property test fails if an injector starts doing that
(its generated pods hold such values).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

__all__ = ["copy_json", "make_patch"]

Operation = dict[str, Any]

_SCALARS = frozenset({str, int, float, bool, type(None)})
_MAX_ITEM_COMPARISONS = 10_000
"""Past this many item comparisons (changed part of the old list x of the new one) the full diff decides."""


class _FullDiff(Exception):
    """The fast path cannot vouch for `make_patch`'s exact answer; the full diff decides."""


def copy_json(value: Any) -> Any:
    """A deep copy of a decoded JSON value (dicts, lists, scalars), 4x faster than `copy.deepcopy`.

    Types are kept exactly (a float stays a float, a bool a bool); anything that is not plain JSON is
    deep-copied by `copy.deepcopy`.
    """
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _SCALARS else copy_json(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else copy_json(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


def make_patch(original: Any, mutated: Any) -> list[Operation]:
    """`jsonpatch.make_patch(original, mutated).patch`, computed from the subtrees that differ."""
    if type(original) is dict and type(mutated) is dict:
        operations: list[Operation] = []
        try:
            _compare_dicts(operations, "", original, mutated)
        except _FullDiff:
            pass
        else:
            return operations
    full: list[Operation] = jsonpatch.make_patch(original, mutated).patch
    return full


def _member(path: str, key: object) -> str:
    if type(key) is not str:
        raise _FullDiff  # no path names it; make_patch raises its TypeError if it differs
    if "~" in key or "/" in key:
        key = key.replace("~", "~0").replace("/", "~1")
    return f"{path}/{key}"


def _same_scalar(old: Any, new: Any) -> bool:
    """Equal as JSON text (what make_patch compares): `1`, `1.0` and `true` differ, so do `0.0` and `-0.0`."""
    if type(old) is type(new) and type(old) is not float:
        return bool(old == new)
    return json.dumps(old) == json.dumps(new)


def _compare_dicts(operations: list[Operation], path: str, old: dict[Any, Any], new: dict[Any, Any]) -> None:
    if len(old) > len(new) or any(key not in new for key in old):
        raise _FullDiff  # a removed member: it may be a move
    if len(new) > len(old):
        for key, value in new.items():
            if key not in old:
                operations.append({"op": "add", "path": _member(path, key), "value": value})
    for key, old_value in old.items():
        new_value = new[key]
        if old_value is new_value:
            continue
        old_kind, new_kind = type(old_value), type(new_value)
        if old_kind in _SCALARS and new_kind in _SCALARS:
            if not _same_scalar(old_value, new_value):
                operations.append({"op": "replace", "path": _member(path, key), "value": new_value})
        elif old_value == new_value:
            continue
        elif old_kind is dict and new_kind is dict:
            _compare_dicts(operations, _member(path, key), old_value, new_value)
        elif old_kind is list and new_kind is list:
            _compare_lists(operations, _member(path, key), old_value, new_value)
        elif (old_kind in _SCALARS or old_kind is dict or old_kind is list) and (
            new_kind in _SCALARS or new_kind is dict or new_kind is list
        ):
            operations.append({"op": "replace", "path": _member(path, key), "value": new_value})
        else:
            raise _FullDiff


def _compare_lists(operations: list[Operation], path: str, old: list[Any], new: list[Any]) -> None:
    length = len(old)
    if len(new) < length:
        raise _FullDiff  # removed items
    start = 0
    while start < length and old[start] == new[start]:
        start += 1
    # make_patch pairs items up with difflib after the common prefix; with no equal items at different
    # indices from there on, its pairing is the positional one.
    rest = old[start:]
    if len(rest) * (len(new) - start) > _MAX_ITEM_COMPARISONS:
        raise _FullDiff
    for index in range(start, len(new)):
        item = new[index]
        matches = rest.count(item)
        if matches and not (matches == 1 and index < length and old[index] == item):
            raise _FullDiff
    for index in range(start, length):
        old_item, new_item = old[index], new[index]
        if old_item == new_item:
            continue
        old_kind, new_kind = type(old_item), type(new_item)
        if old_kind is dict and new_kind is dict:
            _compare_dicts(operations, f"{path}/{index}", old_item, new_item)
        elif old_kind is list and new_kind is list:
            _compare_lists(operations, f"{path}/{index}", old_item, new_item)
        else:
            raise _FullDiff  # make_patch removes and adds the item: it may be a move
    for index in range(length, len(new)):
        operations.append({"op": "add", "path": f"{path}/{index}", "value": new[index]})
