"""Phone number formatting shared by every dialect, lookup and history match.

Each CRM wants numbers its own way (Salesforce as received, jtel E.164 without `+`,
FixDigital the national digits its sample shows). Everything here is total: bad input is
returned as received, never an exception, because a garbage caller ID must not cost a
CRM delivery.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

import phonenumbers

NumberStyle = Literal["e164", "e164_no_plus", "national", "as_received", "digits"]
NUMBER_STYLES: tuple[NumberStyle, ...] = (
    "e164",
    "e164_no_plus",
    "national",
    "as_received",
    "digits",
)

# Not \D: that keeps Arabic-Indic and other Unicode digits, and CRMs want ASCII.
_NON_DIGITS = re.compile(r"[^0-9]")
# Longer than any E.164 number plus generous punctuation: beyond this it is not a number,
# and phonenumbers' own limit would only reject it more slowly.
_MAX_INPUT = 64


def digits_only(value: str) -> str:
    """The ASCII digits of `value`, in order (so `+7 (903) 123` -> `7903123`)."""
    return _NON_DIGITS.sub("", value or "")


def normalize(number: str, region: str) -> phonenumbers.PhoneNumber | None:
    """Parse `number` as dialled in `region`; None for extensions, short codes and garbage.

    Only numbers phonenumbers calls *possible* are accepted: an extension like `7181`
    parses in some regions but must stay an extension.
    """
    if not isinstance(number, str):
        return None
    text = number.strip()
    if not text or len(text) > _MAX_INPUT or not digits_only(text):
        return None
    try:
        parsed = phonenumbers.parse(text, (region or "").upper() or None)
    except Exception:  # phonenumbers raises NumberParseException and, on odd input, others
        return None
    try:
        if not phonenumbers.is_possible_number(parsed):
            return None
    except Exception:
        return None
    return parsed


# Pure and asked again for every call from the same caller (lookup formats, cache keys):
# phonenumbers' parsing was 8% of a FastAGI caller_check on a lookup-cache hit.
@lru_cache(maxsize=8192)
def format_number(number: str, style: NumberStyle, region: str) -> str:
    """`number` in the CRM's `style`; input that is not a phone number comes back unchanged.

    `national` is what a person in `region` dials, digits only (`89031234567` in RU,
    `033004799` in IL); for a foreign number that includes the international prefix.
    `digits` strips punctuation but does not parse.
    """
    if number is None:
        return ""
    if style == "as_received":
        return number
    if style == "digits":
        return digits_only(number) or number
    parsed = normalize(number, region)
    if parsed is None:
        return number
    try:
        if style == "e164":
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        if style == "e164_no_plus":
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164).lstrip(
                "+"
            )
        if style == "national":
            home = (region or "").upper()
            if parsed.country_code == phonenumbers.country_code_for_region(home):
                local = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
            else:
                local = _dialled_from(parsed, home)
            return digits_only(local) or number
    except Exception:
        return number
    return number


def _dialled_from(parsed: phonenumbers.PhoneNumber, home: str) -> str:
    """A foreign number as dialled from `home`, e.g. RU's "8~10 44 ..." (the ~ is a pause).

    phonenumbers writes "+" for a region with several international prefixes and no
    preferred one (IL: 00, 012, 013, ...), which a digits-only CRM field would lose; the
    region's plain prefix is used there instead.
    """
    text = phonenumbers.format_out_of_country_calling_number(parsed, home or "ZZ")
    if not text.startswith("+"):
        return text
    prefix = international_prefix(home)
    if not prefix:
        return text
    return prefix + text[1:]


@lru_cache(maxsize=256)
def international_prefix(region: str) -> str:
    """The shortest digits that match `region`'s international prefix ("00" for IL); "" if none.

    Shortest, then lowest: for regions whose prefix includes a carrier code that is the
    first carrier the numbering plan lists, which is what the region's own metadata allows.
    """
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region or "")
    if metadata is None or not metadata.international_prefix:
        return ""
    if metadata.preferred_international_prefix:
        return digits_only(metadata.preferred_international_prefix)
    pattern = re.compile(metadata.international_prefix)
    for length in range(1, 6):
        for value in range(10**length):
            candidate = str(value).zfill(length)
            if pattern.fullmatch(candidate):
                return candidate
    return ""


def number_variants(number: str, region: str) -> list[str]:
    """The forms a CRM may have stored a number in, most canonical first, no duplicates.

    E.164, E.164 without `+`, national digits, then the number as received.
    """
    if not isinstance(number, str):
        return []
    candidates = [
        format_number(number, "e164", region),
        format_number(number, "e164_no_plus", region),
        format_number(number, "national", region),
        number.strip(),
    ]
    seen: set[str] = set()
    variants: list[str] = []
    for candidate in candidates:
        if candidate and candidate not in seen:
            seen.add(candidate)
            variants.append(candidate)
    return variants
