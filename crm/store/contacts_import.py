"""Local contacts from a CSV file: the writer of the store's `contacts` table, which the screen
pop's caller card and the 3CX lookup read after the configured `[[lookup]]` sources.

The file has a header row; `number` is required, `name`, `company`, `owner_extension` and `url`
are optional (other columns are ignored). A row is added or replaces the contact with the same
number digits. Rows that cannot be used are reported by line and skipped; the rest still go in.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

COLUMNS = ("number", "name", "company", "owner_extension", "url")


class ContactWriter(Protocol):
    async def upsert_contact(
        self,
        number: str,
        *,
        name: str | None = None,
        company: str | None = None,
        owner_extension: str | None = None,
        url: str | None = None,
    ) -> str: ...


@dataclass
class ImportResult:
    imported: int = 0
    problems: list[str] = field(default_factory=list)  # "line 7: ..." per skipped row


class ContactFileError(ValueError):
    """The file as a whole cannot be read as contacts (no header, no `number` column)."""


def _value(row: dict[str, str | None], column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return value or None


async def import_contacts(store: ContactWriter, lines: Iterable[str]) -> ImportResult:
    reader = csv.DictReader(lines)
    header = [name.strip() for name in reader.fieldnames or []]
    if "number" not in header:
        raise ContactFileError(
            f"the first line must name the columns, with at least `number` (got {header or 'none'})"
        )
    reader.fieldnames = header
    result = ImportResult()
    for row in reader:
        line = reader.line_num
        number = _value(row, "number") or ""
        owner = _value(row, "owner_extension")
        if owner is not None and not (owner.isascii() and owner.isdigit()):
            result.problems.append(f"line {line}: owner_extension {owner!r} is not digits")
            continue
        try:
            await store.upsert_contact(
                number,
                name=_value(row, "name"),
                company=_value(row, "company"),
                owner_extension=owner,
                url=_value(row, "url"),
            )
        except ValueError:  # the store keys contacts by the number's digits
            result.problems.append(f"line {line}: number {number!r} has no digits")
            continue
        result.imported += 1
    return result
