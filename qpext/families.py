"""Line-oriented reading of a text-format (0.0.4) exposition into metric families, and relabelling.

A model server can expose 100,000 sample lines; building an object per sample (as a full parser does)
costs microseconds per line, which is what makes KServe's Go qpext slow. Here only the ``# HELP`` and
``# TYPE`` lines are parsed in Python. Sample lines stay bytes and are consumed in runs: one regular
expression match, run in C, takes every following line that repeats the family's name and is a valid
sample, so validation and grouping cost one pass. A run whose lines all end their label set with ``"} ``
gets the serverless labels from a single ``bytes.replace``; other runs are relabelled line by line.

Validation matters because one bad line makes Prometheus reject the whole scrape, queue-proxy's series
included: a family with any line that is not a valid sample is dropped, and counted, rather than passed on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COUNTER = b"counter"
GAUGE = b"gauge"
HISTOGRAM = b"histogram"
SUMMARY = b"summary"
UNTYPED = b"untyped"
_KNOWN_TYPES = frozenset({COUNTER, GAUGE, HISTOGRAM, SUMMARY, UNTYPED})

_NAME = rb"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = rb"[a-zA-Z_][a-zA-Z0-9_]*"
# strconv.ParseFloat's decimal forms, which is what Prometheus applies to the value field.
_VALUE = (
    rb"(?:[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
    rb"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)|[nN][aA][nN])"
)
_PLAIN_VALUE = rb'"[^"\\\n]*"'
_ESCAPED_VALUE = rb'"(?:[^"\\\n]|\\[\\"n])*"'
_PLAIN_LABELS = (
    rb"\{" + _LABEL_NAME + b"=" + _PLAIN_VALUE + rb"(?:," + _LABEL_NAME + b"=" + _PLAIN_VALUE + rb")*\}"
)
_ANY_LABELS = (
    rb"\{(?:"
    + _LABEL_NAME
    + b"="
    + _ESCAPED_VALUE
    + rb"(?:,"
    + _LABEL_NAME
    + b"="
    + _ESCAPED_VALUE
    + rb")*,?)?\}"
)
# Run shapes, most specific first. In a LABELLED run (no escapes, one space, every line labelled) `"} `
# occurs only where a label set ends, so one replace relabels the whole run.
LABELLED, PLAIN, ANY = 0, 1, 2
_SHAPES = (
    (LABELLED, _PLAIN_LABELS + b" " + _VALUE + rb"(?: -?[0-9]+)?\n"),
    (PLAIN, rb"(?:" + _PLAIN_LABELS + rb")? " + _VALUE + rb"(?: -?[0-9]+)?\n"),
    (ANY, rb"(?:" + _ANY_LABELS + rb")?[ \t]+" + _VALUE + rb"(?:[ \t]+-?[0-9]+)?[ \t]*\n"),
)
_ANY_LINE = re.compile(_NAME + _SHAPES[2][1])
_NAME_RE = re.compile(_NAME)
_SAMPLE_NAME = re.compile(rb"[^{ \t\n]*")
_LABEL_PAIR = re.compile(rb"(" + _LABEL_NAME + rb")=(" + _ESCAPED_VALUE + rb")")
_HELP_TEXT = re.compile(rb"(?:[^\\]|\\[\\n])*")


def _runs(suffix: bytes, lazy: bool) -> tuple[tuple[int, re.Pattern[bytes]], ...]:
    """Patterns matching consecutive lines of one family: the first line names the family (group ``n``)
    and the rest must repeat that name, so one match both validates and groups a run."""
    head = rb"(?P<n>" + _NAME + (b"?" if lazy else b"") + b")" + suffix
    return tuple(
        (shape, re.compile(head + line + rb"(?:(?P=n)" + suffix + line + b")*")) for shape, line in _SHAPES
    )


_RUNS = {
    HISTOGRAM: _runs(rb"(?:_bucket|_sum|_count)", lazy=False),
    SUMMARY: _runs(rb"(?:_sum|_count)?", lazy=True),
    GAUGE: _runs(b"", lazy=False),
}


def escape_label_value(value: str) -> bytes:
    """A label value quoted for the text format."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'.encode()


def serverless_labels(names: tuple[str, ...], values: tuple[str, ...]) -> bytes:
    """``name="value",...`` for the labels qpext adds to app samples, in the given order."""
    pairs = zip(names, values, strict=True)
    return b",".join(name.encode() + b"=" + escape_label_value(value) for name, value in pairs)


def sample_names(name: bytes, kind: bytes) -> tuple[bytes, ...]:
    """The sample names a family of this type owns in the text format."""
    if kind == HISTOGRAM:
        return (name + b"_bucket", name + b"_sum", name + b"_count")
    if kind == SUMMARY:
        return (name, name + b"_sum", name + b"_count")
    return (name,)


def effective_type(name: bytes, declared: bytes) -> bytes:
    """Untyped families become counters (``_total``, ``_created``) or gauges instead of being dropped."""
    if declared != UNTYPED:
        return declared
    return COUNTER if name.endswith((b"_total", b"_created")) else GAUGE


class Family:
    """One family: the bytes of its sample runs, each tagged with its shape."""

    __slots__ = ("declared", "discarded", "help", "malformed", "name", "runs")

    def __init__(self, name: bytes, declared: bytes, *, discarded: bool = False) -> None:
        self.name = name
        self.declared = declared
        self.help: bytes | None = None
        self.runs: list[tuple[bytes, int]] = []
        self.malformed = False
        self.discarded = discarded

    @property
    def kind(self) -> bytes:
        return effective_type(self.name, self.declared)


@dataclass
class ParsedBody:
    families: dict[bytes, Family]
    # Blocks of a family that reappeared with another type; they are dropped.
    clashes: int = 0
    # Lines that named no valid metric.
    stray_lines: int = 0


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.families: dict[bytes, Family] = {}
        self.owner: dict[bytes, Family] = {}
        self.clashes = 0
        self.stray_lines = 0

    def _claim(self, family: Family) -> None:
        for sample in sample_names(family.name, family.declared):
            self.owner.setdefault(sample, family)

    def _new(self, name: bytes, declared: bytes) -> Family:
        family = Family(name, declared)
        self.families[name] = family
        self._claim(family)
        return family

    def comment(self, line: bytes, current: Family | None) -> Family | None:
        keyword = line[:7]
        if keyword not in (b"# HELP ", b"# TYPE "):
            return current
        name, _, rest = line[7:].lstrip(b" \t").partition(b" ")
        if not _NAME_RE.fullmatch(name):
            return current
        rest = rest.strip()
        family = self.families.get(name)
        if keyword == b"# HELP ":
            if family is None:
                family = self._new(name, UNTYPED)
            if family.help is None:
                family.help = rest if _HELP_TEXT.fullmatch(rest) else rest.replace(b"\\", b"\\\\")
            return family
        kind = rest.lower() if rest.lower() in _KNOWN_TYPES else UNTYPED
        if family is None:
            return self._new(name, kind)
        if family.declared == kind:
            return family
        if not family.runs and family.declared == UNTYPED:
            for sample in sample_names(name, UNTYPED):
                if self.owner.get(sample) is family:
                    del self.owner[sample]
            family.declared = kind
            self._claim(family)
            return family
        self.clashes += 1
        return Family(name, kind, discarded=True)

    def _run(self, family: Family, pos: int) -> int:
        """Add the longest run of ``family``'s lines starting at ``pos``; the end offset, or -1."""
        body = self.body
        for shape, pattern in _RUNS.get(family.declared, _RUNS[GAUGE]):
            match = pattern.match(body, pos)
            if match is not None and match.group("n") == family.name:
                end = match.end()
                family.runs.append((body[pos:end], shape))
                return end
        return -1

    def samples(self, pos: int, current: Family | None) -> int:
        """Consume sample lines from ``pos``; return where the next unconsumed line starts."""
        if current is not None:
            end = self._run(current, pos)
            if end >= 0:
                return end
        body = self.body
        name = _SAMPLE_NAME.match(body, pos).group()  # type: ignore[union-attr]
        family = self.owner.get(name)
        if family is None and name not in self.families and _NAME_RE.fullmatch(name):
            family = self._new(name, UNTYPED)
        if family is not None and family is not current:
            end = self._run(family, pos)
            if end >= 0:
                return end
        # Not a valid line of the family it names: one line, handled on its own.
        line_end = body.find(b"\n", pos) + 1
        line = body[pos:line_end]
        if not line.strip():
            return line_end
        if family is None:
            family = self.families.get(name)
        if family is None:
            self.stray_lines += 1
        elif _ANY_LINE.fullmatch(line) and name in sample_names(family.name, family.declared):
            family.runs.append((line, ANY))
        else:
            family.malformed = True
        return line_end


def parse_text(body: bytes) -> ParsedBody:
    """Group a validated text-format body into families, in order of first appearance."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    if body and not body.endswith(b"\n"):
        body += b"\n"
    reader = _Reader(body)
    current: Family | None = None
    pos, size = 0, len(body)
    while pos < size:
        first = body[pos]
        if first == 0x23:  # '#'
            end = body.index(b"\n", pos)
            current = reader.comment(body[pos:end], current)
            pos = end + 1
        elif first == 0x0A:  # blank line
            pos += 1
        else:
            pos = reader.samples(pos, current)
    for family in reader.families.values():
        if not family.runs:
            family.discarded = True
    return ParsedBody(reader.families, reader.clashes, reader.stray_lines)


class Relabeller:
    """Appends the serverless labels to sample lines; an app label of the same name keeps its value under
    ``exported_<name>`` (Prometheus' own convention for clashing target labels) unless the values agree."""

    def __init__(self, names: tuple[str, ...], values: tuple[str, ...]) -> None:
        pairs = zip(names, values, strict=True)
        self._pairs = [(name.encode(), escape_label_value(value)) for name, value in pairs]
        self._labels = serverless_labels(names, values)
        self._labelled = b'",' + self._labels + b"} "
        self._markers = tuple(name.encode() + b'="' for name in names)

    def may_clash(self, run: bytes) -> bool:
        """Whether any line of ``run`` might already carry one of our label names."""
        return any(marker in run for marker in self._markers)

    def relabel(self, run: bytes, shape: int) -> bytes:
        """The run (validated lines, each ending in a newline) with the labels added to every line."""
        if self.may_clash(run):
            add = self._add_careful
        elif shape == LABELLED:
            return run.replace(b'"} ', self._labelled)
        else:
            add = self._add
        return b"\n".join([add(line) for line in run.split(b"\n")[:-1]]) + b"\n"

    def add(self, line: bytes) -> bytes:
        """One validated sample line (without its newline) with the labels added."""
        return self._add_careful(line) if self.may_clash(line) else self._add(line)

    def _add(self, line: bytes) -> bytes:
        end = line.rfind(b"}")
        if end < 0:
            cut = min(i for i in (line.find(b" "), line.find(b"\t")) if i >= 0)
            return line[:cut] + b"{" + self._labels + b"}" + line[cut:]
        if line[end - 1] in b"{,":
            return line[:end] + self._labels + line[end:]
        return line[:end] + b"," + self._labels + line[end:]

    def _add_careful(self, line: bytes) -> bytes:
        start = line.find(b"{")
        end = line.rfind(b"}")
        if start < 0 or not self.may_clash(line):
            return self._add(line)
        present = {m.group(1): m.group(2) for m in _LABEL_PAIR.finditer(line, start, end)}
        labels = []
        for name, value in present.items():
            ours = self._ours(name)
            if ours is None:
                labels.append(name + b"=" + value)
            elif ours != value:
                exported = b"exported_" + name
                while exported in present:
                    exported = b"exported_" + exported
                labels.append(exported + b"=" + value)
        labels += [name + b"=" + value for name, value in self._pairs]
        return line[:start] + b"{" + b",".join(labels) + line[end:]

    def _ours(self, name: bytes) -> bytes | None:
        for ours, value in self._pairs:
            if ours == name:
                return value
        return None
