"""Signed recording links: what stands in the `<slot>` of `https://pbx/<slot>/recording/<file>`.

A recording URL is written into every CRM record, where anyone who can read the call can copy
it. So the slot is never a credential: it is `<expires>.<signature>`, an HMAC-SHA256 over the
file name and the expiry with a key only pbxcrm holds, which opens that one file until then
and nothing else. The expiry is counted from the call's end (its start while it is still up),
never from the wall clock: the same call always gives the same link, so a retried delivery is
byte-for-byte the one before and the call tracker stays pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass, field

from crm.store.interface import CallStore

# The store's kv row holding the key (hex), shared by every instance on one store.
LINK_KEY_KV = "recording_link_key"
TEMPLATE_FIELDS = frozenset({"file", "call_id", "pbx_id", "signature"})
_SLOT = re.compile(r"^(?P<expires>[0-9]{1,12})\.(?P<signature>[A-Za-z0-9_-]{43})$")


def _signature(key: bytes, file: str, expires: int) -> str:
    message = f"{expires}\n{file}".encode("utf-8", "surrogateescape")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class RecordingLinkSigner:
    key: bytes = field(repr=False)
    valid_seconds: float

    def slot(self, file: str, issued_at: float) -> str:
        expires = int(issued_at + self.valid_seconds)
        return f"{expires}.{_signature(self.key, file, expires)}"

    def opens(self, slot: str, file: str, now: float) -> bool:
        """True when `slot` is this key's signature for `file` and has not expired."""
        match = _SLOT.fullmatch(slot)
        if match is None:
            return False
        expires = int(match["expires"])
        expected = _signature(self.key, file, expires)
        # Compared before the expiry check: the time taken says nothing about either.
        same = hmac.compare_digest(expected.encode(), match["signature"].encode())
        return same and now < expires


def recording_url_for(
    template: str,
    signer: RecordingLinkSigner | None,
    *,
    file: str,
    call_id: str,
    pbx_id: str,
    issued_at: float,
) -> str | None:
    """The template filled in; None when it asks for a signature and no key was handed in."""
    signature = ""
    if "{signature}" in template:
        if signer is None:
            return None
        signature = signer.slot(file, issued_at)
    return template.format(file=file, call_id=call_id, pbx_id=pbx_id, signature=signature)


def template_problem(template: str) -> str | None:
    """What is wrong with a `recording_url_template`, or None."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"not a valid template: {exc}"
    unknown = sorted(names - TEMPLATE_FIELDS)
    if unknown:
        allowed = ", ".join("{" + name + "}" for name in sorted(TEMPLATE_FIELDS))
        return f"unknown field {{{unknown[0]}}} (allowed: {allowed})"
    return None


def new_key() -> bytes:
    return secrets.token_bytes(32)


async def load_or_create_key(store: CallStore) -> bytes:
    """pbxcrm's own link key from the store, made on first use.

    Inserted only if absent, then read back: instances starting together on one shared store
    end up signing with the same key.
    """
    saved = await store.get_kv(LINK_KEY_KV)
    if not saved:
        await store.execute_write(
            [
                (
                    "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    (LINK_KEY_KV, new_key().hex()),
                )
            ]
        )
        saved = await store.get_kv(LINK_KEY_KV)
    try:
        key = bytes.fromhex(saved or "")
    except ValueError:
        key = b""
    if len(key) < 32:
        raise ValueError(
            f"store kv row {LINK_KEY_KV!r} is damaged; delete it and pbxcrm makes a new key "
            "(links already sent stop opening)"
        )
    return key
