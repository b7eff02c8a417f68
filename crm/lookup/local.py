"""Local contacts: an inline list in config and/or a CSV file, matched in every number form."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from crm.lookup.base import (
    LookupConfig,
    LookupRequest,
    LookupResult,
    LookupSource,
    LookupStatus,
    register_lookup,
)
from crm.numbers import number_variants

log = logging.getLogger(__name__)


class Contact(BaseModel):
    model_config = ConfigDict(extra="allow")  # extra CSV columns travel in the record

    number: str
    name: str | None = None
    company: str | None = None
    owner_extension: str | None = None
    url: str | None = None


class LocalLookupConfig(LookupConfig):
    type: str = "local"
    contacts: list[Contact] = Field(default_factory=list)
    csv_path: str | None = None  # header row: number,name,company,owner_extension,url,...


def read_contacts_csv(path: Path) -> list[Contact]:
    """Rows without a number are skipped with a log line naming the row, never silently."""
    contacts: list[Contact] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row_number, row in enumerate(csv.DictReader(handle), start=2):
            clean = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not clean.get("number"):
                log.warning("%s:%d: contact row without a number, skipped", path, row_number)
                continue
            contacts.append(Contact.model_validate({k: v or None for k, v in clean.items()}))
    return contacts


@register_lookup("local", LocalLookupConfig)
class LocalLookup(LookupSource):
    config: LocalLookupConfig

    def __init__(self, config: LookupConfig, http: aiohttp.ClientSession) -> None:
        super().__init__(config, http)
        assert isinstance(config, LocalLookupConfig)
        contacts = list(config.contacts)
        if config.csv_path:
            try:
                contacts += read_contacts_csv(Path(config.csv_path))
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                raise ValueError(f"cannot read contacts CSV {config.csv_path}: {exc}") from None
        self._index: dict[str, list[Contact]] = {}
        for contact in contacts:
            for variant in number_variants(contact.number, config.default_region):
                bucket = self._index.setdefault(variant, [])
                if contact not in bucket:
                    bucket.append(contact)

    async def lookup(self, request: LookupRequest) -> LookupResult:
        found: list[Contact] = []
        for variant in number_variants(request.number, self.config.default_region):
            for contact in self._index.get(variant, []):
                if contact not in found:
                    found.append(contact)
        if not found:
            return LookupResult(status=LookupStatus.NOTFOUND, source=self.name)
        if len(found) > 1:
            return LookupResult(
                status=LookupStatus.MULTIPLE,
                source=self.name,
                record=[c.model_dump(exclude_none=True) for c in found],
            )
        contact = found[0]
        return LookupResult(
            status=LookupStatus.FOUND,
            source=self.name,
            contact_name=contact.name,
            company=contact.company,
            owner_extension=contact.owner_extension,
            contact_url=contact.url,
            record=contact.model_dump(exclude_none=True),
        )
