"""Line-oriented, incremental reading of a text-format (0.0.4) exposition into metric families.

A model server can expose 100,000 sample lines; building an object per sample (as a full parser does)
costs microseconds per line and tens of bytes of memory per byte of input, which is what makes KServe's Go
qpext slow and memory-hungry. Here only the ``# HELP`` and ``# TYPE`` lines are parsed in Python. Sample
lines stay bytes and are consumed in runs: one regular expression match, run in C, takes every following
line that repeats the family's name and is a valid sample, so validation and grouping cost one pass. A run
whose lines all end their label set with ``"} `` gets the serverless labels from a single
``bytes.replace``; other runs are relabelled line by line. The body is read as it arrives and each run is
stored as it will be written, so the memory a scrape needs is its output plus one chunk of input.

Validation matters because one bad line makes Prometheus reject the whole scrape, both sides' series
included: a family with any line that is not a valid sample, or with text that is not UTF-8, is dropped,
and counted, rather than passed on. Both sides are read this way.
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
# Possessive quantifiers (*+, ++, ?+) never give back what they matched: nothing that follows them could
# use it, and not keeping backtracking state makes matching about 1.4x faster.
_LABEL_NAME = rb"[a-zA-Z_][a-zA-Z0-9_]*+"
# strconv.ParseFloat's decimal forms, which is what Prometheus applies to the value field; the common
# unsigned number comes first, behind a single branch.
_NUMBER = rb"(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][-+]?+[0-9]++)?+"
_INF = rb"[iI][nN][fF](?:[iI][nN][iI][tT][yY])?+"
_VALUE = rb"(?:" + _NUMBER + rb"|[-+](?:" + _NUMBER + rb"|" + _INF + rb")|" + _INF + rb"|[nN][aA][nN])"
_TIMESTAMP = rb"(?: -?[0-9]++)?+"
_PLAIN_VALUE = rb'"[^"\\\n]*+"'
_ESCAPED_VALUE = rb'"(?:[^"\\\n]++|\\[\\"n])*+"'
_PLAIN_LABELS = (
    rb"\{" + _LABEL_NAME + b"=" + _PLAIN_VALUE + rb"(?:," + _LABEL_NAME + b"=" + _PLAIN_VALUE + rb")*+\}"
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
    + rb")*+,?+)?+\}"
)
# Run shapes, most specific first. In a LABELLED run (no escapes, one space, every line labelled) `"} `
# occurs only where a label set ends, so one replace relabels the whole run.
LABELLED, PLAIN, ANY = 0, 1, 2
_SHAPES = (
    (LABELLED, _PLAIN_LABELS + b" " + _VALUE + _TIMESTAMP + rb"\n"),
    (PLAIN, rb"(?:" + _PLAIN_LABELS + rb")?+ " + _VALUE + _TIMESTAMP + rb"\n"),
    (ANY, rb"(?:" + _ANY_LABELS + rb")?+[ \t]++" + _VALUE + rb"(?:[ \t]++-?[0-9]++)?+[ \t]*+\n"),
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
        (shape, re.compile(head + line + rb"(?:(?P=n)" + suffix + line + b")*+")) for shape, line in _SHAPES
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


def _parse_comment(line: bytes) -> tuple[bool, bytes, bytes]:
    """(is HELP, family name or b"" when the line is just a comment, escaped help text or type)."""
    keyword = line[:7]
    if keyword not in (b"# HELP ", b"# TYPE "):
        return False, b"", b""
    name, _, rest = line[7:].lstrip(b" \t").partition(b" ")
    if not _NAME_RE.fullmatch(name):
        return False, b"", b""
    rest = rest.strip()
    if keyword == b"# HELP ":
        return True, name, rest if _HELP_TEXT.fullmatch(rest) else rest.replace(b"\\", b"\\\\")
    return False, name, rest.lower() if rest.lower() in _KNOWN_TYPES else UNTYPED


# HELP and TYPE lines repeat verbatim from scrape to scrape: each is parsed once.
_COMMENTS: dict[bytes, tuple[bool, bytes, bytes]] = {}
_MAX_COMMENTS = 20_000


class Family:
    """One family: its sample runs as they will be written (relabelled when the side is the app's)."""

    __slots__ = ("declared", "discarded", "help", "malformed", "name", "runs")

    def __init__(self, name: bytes, declared: bytes, *, discarded: bool = False) -> None:
        self.name = name
        self.declared = declared
        self.help: bytes | None = None
        self.runs: list[bytes] = []
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


class Parser:
    """Reads an exposition block by block as it arrives, so only the output is held, never the whole input.

    ``feed`` takes any chunk of the body; complete lines are parsed at once and the runs they form are
    stored already relabelled (when a relabeller is given), so the input is dropped chunk by chunk.
    ``close`` ends the body. Text that is not UTF-8 marks the family it belongs to malformed: Prometheus
    rejects a whole scrape for one such label value or help text.
    """

    def __init__(self, relabeller: Relabeller | None = None) -> None:
        self._relabeller = relabeller
        self.families: dict[bytes, Family] = {}
        self._owner: dict[bytes, Family] = {}
        self._current: Family | None = None
        # The start of a line whose end has not arrived yet, in pieces (joined once, when it does).
        self._pending: list[bytes] = []
        self.clashes = 0
        self.stray_lines = 0

    def feed(self, chunk: bytes) -> None:
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            self._pending.append(chunk)
            return
        complete = chunk if cut == len(chunk) else chunk[:cut]
        if self._pending:
            complete = b"".join([*self._pending, complete])
            self._pending = []
        if cut < len(chunk):
            self._pending.append(chunk[cut:])
        self._block(complete)

    def close(self) -> ParsedBody:
        if self._pending:
            rest = b"".join(self._pending)
            self._pending = []
            self._block(rest + b"\n")
        for family in self.families.values():
            # A family with no samples is left out; with a bad line it is still counted as malformed.
            if not family.runs and not family.malformed:
                family.discarded = True
        return ParsedBody(self.families, self.clashes, self.stray_lines)

    def _block(self, block: bytes) -> None:
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        if block.isascii():
            self._parse(block)
            return
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            self._with_invalid_utf8(block)
        else:
            self._parse(block)

    def _with_invalid_utf8(self, block: bytes) -> None:
        """Parse the valid stretches of a block line by line around its lines that are not UTF-8."""
        start = pos = 0
        while pos < len(block):
            end = block.index(b"\n", pos) + 1
            try:
                block[pos:end].decode("utf-8")
            except UnicodeDecodeError:
                if start < pos:
                    self._parse(block[start:pos])
                self._invalid(block[pos:end])
                start = end
            pos = end
        if start < pos:
            self._parse(block[start:pos])

    def _invalid(self, line: bytes) -> None:
        if line.startswith((b"# HELP ", b"# TYPE ")):
            name = line[7:].lstrip(b" \t").split(None, 1)[0] if line[7:].strip() else b""
        elif line.startswith(b"#"):
            return
        else:
            name = _SAMPLE_NAME.match(line).group()  # type: ignore[union-attr]
        family = self._owner.get(name) or self.families.get(name)
        if family is None and _NAME_RE.fullmatch(name):
            family = self._new(name, UNTYPED)
        if family is None:
            self.stray_lines += 1
        else:
            family.malformed = True

    def _parse(self, body: bytes) -> None:
        current = self._current
        pos, size = 0, len(body)
        while pos < size:
            first = body[pos]
            if first == 0x23:  # '#'
                end = body.index(b"\n", pos)
                current = self._comment(body[pos:end], current)
                pos = end + 1
            elif first == 0x0A:  # blank line
                pos += 1
            else:
                pos = self._samples(body, pos, current)
        self._current = current

    def _claim(self, family: Family) -> None:
        if family.declared in (HISTOGRAM, SUMMARY):
            for sample in sample_names(family.name, family.declared):
                self._owner.setdefault(sample, family)
        else:
            self._owner.setdefault(family.name, family)

    def _new(self, name: bytes, declared: bytes) -> Family:
        family = Family(name, declared)
        self.families[name] = family
        self._claim(family)
        return family

    def _comment(self, line: bytes, current: Family | None) -> Family | None:
        parsed = _COMMENTS.get(line)
        if parsed is None:
            parsed = _parse_comment(line)
            if len(_COMMENTS) >= _MAX_COMMENTS:
                _COMMENTS.clear()
            _COMMENTS[line] = parsed
        is_help, name, rest = parsed
        if not name:
            return current
        family = self.families.get(name)
        if is_help:
            if family is None:
                family = self._new(name, UNTYPED)
            if family.help is None:
                family.help = rest
            return family
        kind = rest
        if family is None:
            return self._new(name, kind)
        if family.declared == kind:
            return family
        if not family.runs and family.declared == UNTYPED:
            for sample in sample_names(name, UNTYPED):
                if self._owner.get(sample) is family:
                    del self._owner[sample]
            family.declared = kind
            self._claim(family)
            return family
        self.clashes += 1
        return Family(name, kind, discarded=True)

    def _add_run(self, family: Family, run: bytes, shape: int) -> None:
        relabeller = self._relabeller
        family.runs.append(run if relabeller is None else relabeller.relabel(run, shape))

    def _run(self, family: Family, body: bytes, pos: int) -> int:
        """Add the longest run of ``family``'s lines starting at ``pos``; the end offset, or -1."""
        if not body.startswith(family.name, pos):
            return -1
        for shape, pattern in _RUNS.get(family.declared, _RUNS[GAUGE]):
            match = pattern.match(body, pos)
            if match is not None and match.group(1) == family.name:
                end = match.end()
                self._add_run(family, body[pos:end], shape)
                return end
        return -1

    def _samples(self, body: bytes, pos: int, current: Family | None) -> int:
        """Consume sample lines from ``pos``; return where the next unconsumed line starts."""
        if current is not None:
            end = self._run(current, body, pos)
            if end >= 0:
                return end
        name = _SAMPLE_NAME.match(body, pos).group()  # type: ignore[union-attr]
        family = self._owner.get(name)
        if family is None and name not in self.families and _NAME_RE.fullmatch(name):
            family = self._new(name, UNTYPED)
        if family is not None and family is not current:
            end = self._run(family, body, pos)
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
            self._add_run(family, line, ANY)
        else:
            family.malformed = True
        return line_end


def parse_text(body: bytes, relabeller: Relabeller | None = None) -> ParsedBody:
    """Parse a whole text-format body (see Parser)."""
    parser = Parser(relabeller)
    parser.feed(body)
    return parser.close()


class Relabeller:
    """Appends the serverless labels to sample lines; an app label of the same name keeps its value under
    ``exported_<name>`` (Prometheus' own convention for clashing target labels) unless the values agree."""

    def __init__(self, names: tuple[str, ...], values: tuple[str, ...]) -> None:
        pairs = zip(names, values, strict=True)
        self._pairs = [(name.encode(), escape_label_value(value)) for name, value in pairs]
        self._labels = serverless_labels(names, values)
        self._labelled = b'",' + self._labels + b"} "
        self._markers = tuple(name.encode() + b'="' for name in names)
        # The markers' common ending (`_name="` for Knative's labels): one search rules most runs out.
        common = self._markers[0] if self._markers else b"\0"
        for marker in self._markers[1:]:
            while not marker.endswith(common):
                common = common[1:]
        self._common = common

    def may_clash(self, run: bytes) -> bool:
        """Whether any line of ``run`` might already carry one of our label names."""
        return self._common in run and any(marker in run for marker in self._markers)

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
