"""Combine queue-proxy's exposition, the app's families and qpext's own series into one valid body.

queue-proxy's text is kept byte for byte (only a missing final newline is added); it is scanned just far
enough to know where each of its families ends. An app family with the same name is spliced in right there
when the types agree, without its own ``# HELP``/``# TYPE`` lines, because a second ``# TYPE`` line for a
name makes the whole scrape invalid; when the types disagree the app family is dropped and counted.
Everything else from the app follows in the order the app listed it, so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from qpext.families import (
    UNTYPED,
    ParsedBody,
    Relabeller,
    parse_text,
    sample_names,
)

RESERVED_PREFIX = b"qpext_"


@dataclass
class Drops:
    """App families left out of one response, by reason."""

    type_clash: int = 0
    malformed: int = 0
    reserved_name: int = 0

    def items(self) -> Iterable[tuple[str, int]]:
        return ((f.name, getattr(self, f.name)) for f in fields(self))

    def add(self, other: Drops) -> None:
        """Add ``other``'s counts to these."""
        for reason, count in other.items():
            setattr(self, reason, getattr(self, reason) + count)


def index_families(body: bytes) -> dict[bytes, tuple[bytes, int]]:
    """For each family in a text-format body: its declared type and the offset just after its last line."""
    index: dict[bytes, tuple[bytes, int]] = {}
    owner: dict[bytes, bytes] = {}
    declared: dict[bytes, bytes] = {}
    pos = 0
    for line in body.splitlines(keepends=True):
        pos += len(line)
        parts = line.split(None, 3)
        if not parts:
            continue
        if parts[0] == b"#":
            if len(parts) >= 4 and parts[1] == b"TYPE":
                kind = parts[3].strip().lower()
                declared.setdefault(parts[2], kind)
                for sample in sample_names(parts[2], kind):
                    owner.setdefault(sample, parts[2])
            continue
        name = parts[0].split(b"{", 1)[0]
        family = owner.get(name, name)
        index[family] = (declared.get(family, UNTYPED), pos)
    return index


def render(
    queue_proxy: bytes | None,
    app: ParsedBody | None,
    relabeller: Relabeller,
    drops: Drops,
) -> list[bytes]:
    """The response body as a list of parts; ``drops`` is filled in with what was left out."""
    qp = queue_proxy or b""
    if qp and not qp.endswith(b"\n"):
        qp += b"\n"
    qp_families = index_families(qp) if qp and app is not None else {}
    spliced: dict[int, list[bytes]] = {}
    tail: list[bytes] = []
    if app is not None:
        drops.type_clash += app.clashes
        drops.malformed += 1 if app.stray_lines else 0
        for family in app.families.values():
            if family.discarded:
                continue
            if family.name.startswith(RESERVED_PREFIX):
                drops.reserved_name += 1
                continue
            if family.malformed:
                drops.malformed += 1
                continue
            lines = [relabeller.relabel(run, shape) for run, shape in family.runs]
            match = qp_families.get(family.name)
            if match is not None:
                qp_kind, end = match
                if qp_kind not in (family.declared, family.kind):
                    drops.type_clash += 1
                    continue
                spliced.setdefault(end, []).extend(lines)
                continue
            if family.help is not None:
                tail.append(b"# HELP " + family.name + b" " + family.help + b"\n")
            tail.append(b"# TYPE " + family.name + b" " + family.kind + b"\n")
            tail.extend(lines)
    parts: list[bytes] = []
    start = 0
    for end in sorted(spliced):
        parts.append(qp[start:end])
        parts.extend(spliced[end])
        start = end
    parts.append(qp[start:])
    parts.extend(tail)
    return parts


def merge_text(
    queue_proxy: bytes | None, app_text: bytes | None, relabeller: Relabeller, drops: Drops
) -> bytes:
    """Convenience for callers holding two text-format bodies."""
    parsed = parse_text(app_text) if app_text is not None else None
    return b"".join(render(queue_proxy, parsed, relabeller, drops))
