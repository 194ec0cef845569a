"""Combine queue-proxy's families, the app's families and qpext's own series into one valid body.

Both sides arrive parsed and validated (qpext.families). queue-proxy's families come first, in its order,
with its sample lines unchanged; an app family with the same name is placed right after them when the
types agree, without its own ``# HELP``/``# TYPE`` lines, because a second ``# TYPE`` line for a name makes
the whole scrape invalid; when the types disagree the app family is dropped and counted. Everything else
from the app follows in the order the app listed it, so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qpext.families import Family, ParsedBody, Relabeller, parse_text

RESERVED_PREFIX = b"qpext_"


@dataclass
class Drops:
    """Families of one side left out of one response, by reason."""

    type_clash: int = 0
    malformed: int = 0
    reserved_name: int = 0

    def items(self) -> Iterable[tuple[str, int]]:
        return (
            ("type_clash", self.type_clash),
            ("malformed", self.malformed),
            ("reserved_name", self.reserved_name),
        )

    def __bool__(self) -> bool:
        return bool(self.type_clash or self.malformed or self.reserved_name)

    def add(self, other: Drops) -> None:
        """Add ``other``'s counts to these."""
        self.type_clash += other.type_clash
        self.malformed += other.malformed
        self.reserved_name += other.reserved_name


def _usable(body: ParsedBody, drops: Drops) -> list[Family]:
    """The families of a side that can be written, counting the ones that cannot."""
    drops.type_clash += body.clashes
    drops.malformed += 1 if body.stray_lines else 0
    usable = []
    for family in body.families.values():
        if family.discarded:
            continue
        if family.name.startswith(RESERVED_PREFIX):
            drops.reserved_name += 1
        elif family.malformed:
            drops.malformed += 1
        else:
            usable.append(family)
    return usable


def _header(family: Family, kind: bytes) -> list[bytes]:
    lines = [] if family.help is None else [b"# HELP " + family.name + b" " + family.help + b"\n"]
    lines.append(b"# TYPE " + family.name + b" " + kind + b"\n")
    return lines


def render(
    queue_proxy: ParsedBody | None, app: ParsedBody | None, qp_drops: Drops, app_drops: Drops
) -> list[bytes]:
    """The response body as a list of parts; the drops are filled in with what was left out."""
    app_families = {f.name: f for f in _usable(app, app_drops)} if app is not None else {}
    parts: list[bytes] = []
    if queue_proxy is not None:
        for family in _usable(queue_proxy, qp_drops):
            parts += _header(family, family.declared)
            parts += family.runs
            ours = app_families.pop(family.name, None)
            if ours is None:
                continue
            if family.declared in (ours.declared, ours.kind):
                parts += ours.runs
            else:
                app_drops.type_clash += 1
    for family in app_families.values():
        parts += _header(family, family.kind)
        parts += family.runs
    return parts


def merge_text(
    queue_proxy: bytes | None, app_text: bytes | None, relabeller: Relabeller, drops: Drops
) -> bytes:
    """Convenience for callers holding two text-format bodies; ``drops`` counts the app's families."""
    qp = parse_text(queue_proxy) if queue_proxy is not None else None
    app = parse_text(app_text, relabeller) if app_text is not None else None
    return b"".join(render(qp, app, Drops(), drops))
