"""Where a config mistake sits: the TOML line of a key path and the block it belongs to.

pydantic reports a mistake by path (`crm.3.auth_mode`); an admin needs the line in the file
and which `[[crm]]` block that is. TOML attaches `[crm.auth]` to the last `[[crm]]` above it,
so the path of every table header is resolved the same way here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

Path = tuple[str | int, ...]

_KEY_PART = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*')


def _split_key(text: str) -> list[str] | None:
    """`a."b.c".d` -> ["a", "b.c", "d"]; None when `text` is not a TOML key."""
    parts: list[str] = []
    position = 0
    while True:
        match = _KEY_PART.match(text, position)
        if match is None or match.end() == position:
            return None
        parts.append(next(group for group in match.groups() if group is not None))
        position = match.end()
        if position == len(text):
            return parts
        if text[position] != ".":
            return None
        position += 1


def _key_of(line: str) -> list[str] | None:
    """The key of a `key = value` line (quoted `=` inside the key is allowed)."""
    in_quote = ""
    for index, char in enumerate(line):
        if in_quote:
            if char == in_quote:
                in_quote = ""
        elif char in "\"'":
            in_quote = char
        elif char == "=":
            return _split_key(line[:index])
    return None


class TomlLines:
    """The line of every table header and key of a TOML text, by resolved path.

    Array items are indexed as the parsed document indexes them: the 4th `[[crm]]` is
    `("crm", 3)`, and a later `[crm.auth]` is `("crm", 3, "auth")`.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        array_counts: dict[Path, int] = {}
        table: Path = ()
        multiline = ""
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if multiline:
                if line.count(multiline) % 2 == 1:
                    multiline = ""
                continue
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                is_array = line.startswith("[[")
                inner = line[2:].split("]]", 1)[0] if is_array else line[1:].split("]", 1)[0]
                names = _split_key(inner)
                if names is None:
                    continue
                if is_array:
                    # The array itself is not resolved to an item: this header adds one.
                    table = (*self._resolve(names[:-1], array_counts), names[-1])
                    array_counts[table] = array_counts.get(table, -1) + 1
                    self.lines.setdefault(table, number)  # the array itself: its first item
                    table = (*table, array_counts[table])
                else:
                    table = self._resolve(names, array_counts)
                self.lines.setdefault(table, number)
                continue
            names = _key_of(line)
            if names is None:
                continue
            key_path = (*table, *names)
            self.lines.setdefault(key_path, number)
            for delimiter in ('"""', "'''"):
                if line.count(delimiter) % 2 == 1:
                    multiline = delimiter

    @staticmethod
    def _resolve(names: Sequence[str], array_counts: Mapping[Path, int]) -> Path:
        """A header's path with the current index of every array of tables it passes."""
        path: Path = ()
        for name in names:
            path = (*path, name)
            if path in array_counts:
                path = (*path, array_counts[path])
        return path

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of `loc`, or of the nearest enclosing key or table that has one."""
        path: Path = tuple(part for part in loc if not _is_validator_tag(part))
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _is_validator_tag(part: str | int) -> bool:
    # pydantic adds steps like "function-after[_check(), dict[str, any]]" for union members.
    return isinstance(part, str) and "[" in part


def describe_location(loc: Sequence[str | int], document: Any) -> str:
    """`crm[3] "creatio-anon": auth_mode` for loc ("crm", 3, "auth_mode").

    The first array index names its block by the block's `name` (else its `type`), because
    that is what the admin wrote; deeper indexes read `[i]`.
    """
    head: list[str] = []
    tail: list[str] = []
    node: Any = document
    block_named = False
    for part in loc:
        if _is_validator_tag(part):
            continue
        target = tail if block_named else head
        if isinstance(part, int):
            if target:
                target[-1] += f"[{part}]"
            else:
                target.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if not block_named:
                label = _block_label(node)
                if label:
                    head[-1] += f" {label}"
                block_named = True
            continue
        target.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    where = ".".join(head)
    if tail:
        return f"{where}: {'.'.join(tail)}"
    return where or "(top level)"


def _block_label(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    name = block.get("name") or block.get("type")
    return f'"{name}"' if isinstance(name, str) and name else ""
