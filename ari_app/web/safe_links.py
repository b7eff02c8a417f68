"""Which links from a CRM record may become clickable (the screen pop, 3CX's contact pop).

A CRM record may hold anything. Browsers are generous with what they take for a link: `//host`
and `/\\host` go to another site, tabs and newlines inside a URL are dropped before it is read
(`/\t/host` is `//host`), a backslash counts as a slash. So only two shapes pass: an absolute
http(s) URL with a host, or a path on pbxcrm's own site, and neither may hold a backslash,
whitespace or a control character.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_MAX_URL = 2048


def safe_web_link(url: object, *, allow_path: bool = True) -> str | None:
    """`url` when it is a plain web link (or, with `allow_path`, a path on this site)."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    if not url or len(url) > _MAX_URL or "\\" in url:
        return None
    if any(ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in url):
        return None
    if url.startswith("/"):
        return url if allow_path and not url.startswith("//") else None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if not url.lower().startswith(parts.scheme.lower() + "://"):
        return None  # `https:host` is read as a path by some, as a host by others
    return url
