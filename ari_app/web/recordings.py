"""MixMonitor recordings from `[calls] recording_dir`, with range requests.

Two URL shapes: Creatio's `/{token}/recording/<file>` (the token is the credential) and
`/api/v1/recordings/<file>` with a header token or basic auth. A file name is accepted only if
every path segment is a plain name (no `..`, no leading dot, no absolute path) and, after
resolving symlinks, it is still inside the recording folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from aiohttp import web

from ari_app.web.deps import DEPS_KEY, HttpDeps
from ari_app.web.errors import json_error
from ari_app.web.routing import RouteSpec
from crm.recordings.errors import RecordingError, RecordingNotReady

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".gsm": "audio/x-gsm",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
    ".sln": "audio/L16",
    ".ulaw": "audio/basic",
    ".alaw": "audio/x-alaw-basic",
}
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")


def resolve_recording(root: Path, name: str) -> Path | None:
    """The file inside `root` that `name` names, or None (never a path outside `root`)."""
    if not name or len(name) > 1024:
        return None
    segments = name.split("/")
    if any(not _SEGMENT.fullmatch(s) or ".." in s for s in segments):
        return None
    if Path(segments[-1]).suffix.lower() not in CONTENT_TYPES:
        return None
    try:
        base = root.resolve(strict=True)
        path = base.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


async def find_recording(deps: HttpDeps, name: str) -> Path | None:
    """The file a link names: on disk, or converted now (waiting for a conversion already
    running). A recording whose conversion failed is served as MixMonitor wrote it, so a
    link the CRM was given never leads to nothing while the original exists."""
    root = Path(deps.settings.calls.recording_dir)
    library = deps.recordings
    if library is None:
        return resolve_recording(root, name)
    path = resolve_recording(library.folder, name) or resolve_recording(root, name)
    if path is not None or not library.converts(name):
        return path
    try:
        await library.ready(name)
    except RecordingError as exc:
        source = library.source_of(name)
        log.warning("recording %s: %s; serving the original", name, exc)
        if source is None:
            return None
        return resolve_recording(root, source.relative_to(library.source_dir).as_posix())
    return resolve_recording(library.folder, name)


async def serve_recording(request: web.Request) -> web.StreamResponse:
    try:
        path = await find_recording(request.app[DEPS_KEY], request.match_info["file"])
    except RecordingNotReady:
        busy = json_error(503, "recording still being converted")
        busy.headers["Retry-After"] = "5"
        return busy
    if path is None:
        # Missing, outside the folder or a forbidden name: one answer, so nothing is probed.
        return json_error(404, "not found")
    headers = {
        "Content-Type": CONTENT_TYPES[path.suffix.lower()],
        "Content-Disposition": f'inline; filename="{path.name}"',
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
    }
    return web.FileResponse(path, headers=headers)


_RESPONSES = {
    200: "The recording",
    206: "Part of it (Range)",
    404: "No such recording",
    503: "Still being converted to the served format (Retry-After)",
}
_TYPES = tuple(sorted(set(CONTENT_TYPES.values())))

ROUTES = [
    RouteSpec(
        "GET",
        "/api/v1/recordings/{file}",
        serve_recording,
        "recordings",
        "Download a call recording (header token or basic auth; supports Range)",
        responses=_RESPONSES,
        content_types=_TYPES,
        tags=("recordings",),
    ),
    RouteSpec(
        "GET",
        "/{token}/recording/{file}",
        serve_recording,
        "recordings",
        "Download a call recording, Creatio URL shape (token in the path; supports Range)",
        responses=_RESPONSES,
        content_types=_TYPES,
        tags=("recordings", "vendor"),
    ),
]
