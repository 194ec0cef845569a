"""Which build-context paths a Dockerfile reads: the sources of its COPY and ADD instructions.

An image's content hash must cover exactly the context files that can end up in the image. Hashing the whole
context (the repository root for the manager and qpext) would rebuild every image whenever a test or a doc
changes; hashing a hand-written list would silently go stale when a Dockerfile gains a COPY. So the hash
follows the Dockerfile itself. Only the forms our Dockerfiles use are accepted, and anything this parser
cannot resolve statically (a variable in a source, a remote URL, a heredoc) is an error rather than a guess.
"""

from __future__ import annotations

import json
import re

_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?")
_CONTEXT_INSTRUCTIONS = ("COPY", "ADD")


class DockerfileError(ValueError):
    """The Dockerfile uses a form whose context inputs cannot be determined statically."""


def logical_lines(text: str) -> list[str]:
    """Instructions with line continuations joined; comment and blank lines dropped (also inside a
    continued instruction, as Docker does)."""
    lines: list[str] = []
    pending: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append(" ".join(part for part in pending if part))
        pending = []
    if pending:
        lines.append(" ".join(part for part in pending if part))
    return lines


def _arguments(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise DockerfileError(f"invalid JSON form: {rest}") from exc
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise DockerfileError(f"JSON form must be a list of strings: {rest}")
        return list(parsed)
    return rest.split()


def copied_sources(text: str) -> list[str]:
    """Context-relative sources of every COPY/ADD that reads the build context, in order, without
    duplicates. COPY --from=<stage or image> reads no context and is skipped."""
    sources: list[str] = []
    for line in logical_lines(text):
        instruction, _, rest = line.partition(" ")
        if instruction.upper() not in _CONTEXT_INSTRUCTIONS:
            continue
        if "<<" in rest:
            raise DockerfileError(f"heredocs are not supported: {line}")
        words = rest.split()
        flags: dict[str, str] = {}
        while words and words[0].startswith("--"):
            match = _FLAG.fullmatch(words.pop(0))
            if not match:
                raise DockerfileError(f"unrecognised flag in: {line}")
            flags[match.group(1)] = match.group(2) or ""
        if "from" in flags:
            continue
        arguments = _arguments(" ".join(words))
        if len(arguments) < 2:
            raise DockerfileError(f"{instruction} needs at least one source and a destination: {line}")
        for source in arguments[:-1]:
            if "$" in source:
                raise DockerfileError(f"variables in sources are not supported: {line}")
            if "://" in source:
                raise DockerfileError(f"remote sources cannot be built offline: {line}")
            if source not in sources:
                sources.append(source)
    return sources


def from_arguments(text: str) -> list[str]:
    """The build arguments FROM lines refer to (``FROM ${NAME}`` or ``FROM $NAME``), in order."""
    names: list[str] = []
    for line in logical_lines(text):
        instruction, _, rest = line.partition(" ")
        if instruction.upper() != "FROM":
            continue
        words = [word for word in rest.split() if not word.startswith("--")]
        match = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", words[0]) if words else None
        if match and match.group(1) not in names:
            names.append(match.group(1))
    return names
