"""Who is calling, for 3CX: the configured lookup sources first, then the local contacts table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from ari_app.web.deps import HttpDeps
from ari_app.web.safe_links import safe_web_link
from crm.lookup.base import LookupRequest, LookupResult, LookupStatus
from crm.numbers import digits_only, number_variants

log = logging.getLogger("pbxcrm.3cx")


@dataclass(frozen=True, slots=True)
class Caller:
    id: str
    number: str
    name: str | None = None
    company: str | None = None
    url: str | None = None
    email: str | None = None
    owner_extension: str | None = None
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        first, _, last = (self.name or "").strip().partition(" ")
        return {
            "id": self.id,
            "name": self.name or "",
            "firstName": first,
            "lastName": last.strip(),
            "company": self.company or "",
            "email": self.email or "",
            "phone": self.number,
            # 3CX shows it as a link in its client: only an absolute web address.
            "url": safe_web_link(self.url, allow_path=False) or "",
            "ownerExtension": self.owner_extension or "",
            "source": self.source,
        }


def region_of(deps: HttpDeps) -> str:
    http = deps.settings.http
    return http.threecx.default_region or http.originate.fraud.default_region


def _text(record: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    return None


def _from_record(record: dict[str, Any], number: str, source: str) -> Caller:
    return Caller(
        id=_text(record, "id", "Id", "ID", "contact_id") or digits_only(number),
        number=_text(record, "number", "phone") or number,
        name=_text(record, "name", "contact_name", "Name"),
        company=_text(record, "company", "Company"),
        url=_text(record, "url", "contact_url", "ContactUrl"),
        email=_text(record, "email", "Email"),
        owner_extension=_text(record, "owner_extension"),
        source=source,
    )


def _from_result(result: LookupResult, number: str) -> list[Caller]:
    if result.status == LookupStatus.MULTIPLE and isinstance(result.record, list):
        return [
            _from_record(item, number, result.source)
            for item in result.record
            if isinstance(item, dict)
        ]
    record = result.record if isinstance(result.record, dict) else {}
    caller = _from_record(record, number, result.source)
    return [
        replace(
            caller,
            name=result.contact_name or caller.name,
            company=result.company or caller.company,
            url=result.contact_url or caller.url,
            owner_extension=result.owner_extension or caller.owner_extension,
        )
    ]


async def find_callers(deps: HttpDeps, number: str) -> list[Caller]:
    """Every contact the number belongs to; [] when nobody knows it.

    A lookup source that fails is logged and skipped: the local contacts still answer.
    """
    if deps.lookup is not None:
        try:
            result: LookupResult = await deps.lookup.lookup(LookupRequest(number=number))
        except Exception:  # a broken source must not turn a known caller into a 500
            log.exception("3cx lookup: lookup sources failed for a caller")
        else:
            if result.status in (LookupStatus.FOUND, LookupStatus.MULTIPLE):
                return _from_result(result, number)
            if result.status == LookupStatus.ERROR:
                log.warning("3cx lookup: sources answered with errors: %s", result.error)
    store = deps.store
    if store is None:
        return []
    for variant in number_variants(number, region_of(deps)):
        contact = await store.get_contact(variant)
        if contact is not None:
            caller = Caller(
                id=contact.number_digits,
                number=contact.number,
                name=contact.name,
                company=contact.company,
                url=contact.url,
                owner_extension=contact.owner_extension,
                source="contacts",
            )
            return [caller]
    return []
