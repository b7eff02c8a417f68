"""A declarative request that carries the recording file itself, not only its link.

    [crm.requests.completed]
    url = "https://crm.example.com/api/calls/{call_id}/recording"
    form = { call_id = "{call_id}", phone = "{number|e164}" }   # the other multipart fields
    headers = { Idempotency-Key = "{idempotency_key}" }
    [crm.requests.completed.upload]
    mode = "multipart"          # or "raw": the file is the whole body
    file_field = "file"
    filename = "{call_id}.mp3"  # default: the served file's name

The file is the one the CRM's link names (the converted MP3 when `[recordings] format =
"mp3"`), waited for if it is still being converted. A call without a recording is not sent by
such a request. A recording that is missing, empty or failed to convert ends the delivery as
a dead letter whose error says so; one still converting is retried like a CRM that is down.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, field_validator

from crm.dialects.base import DeliveryError
from crm.dialects.call_fields import check_template
from crm.model import Call
from crm.recordings.errors import RecordingError, RecordingNotReady

_TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".wav16": "audio/wav"}


class RecordingFiles(Protocol):
    """What an upload needs from crm.recordings.library.RecordingLibrary."""

    def served_name(self, original: str) -> str: ...

    async def ready(self, served: str, wait: float | None = None) -> object: ...


class UploadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["multipart", "raw"] = "multipart"
    file_field: str = "file"  # the multipart field holding the file
    filename: str | None = None  # template; default: the served file's name
    content_type: str | None = None  # default: from the file's suffix

    @field_validator("filename")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return check_template(value) if value is not None else None

    @field_validator("file_field")
    @classmethod
    def _field(cls, value: str) -> str:
        if not value or any(c in value for c in '"\r\n'):
            raise ValueError("a multipart field name cannot be empty or hold quotes/newlines")
        return value


class _Collect:
    """aiohttp's multipart writer writes into this, so the body is bytes that can be sent
    again (a refreshed login retries the request once; the outbox retries it later)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))


async def read_recording(
    files: RecordingFiles | None, call: Call, crm: str, wait: float
) -> tuple[str, bytes]:
    """The served file name and its bytes; a DeliveryError saying why when there are none.

    Waits at most `wait` for a conversion still running: the outbox gives the whole delivery
    the adapter's `timeout_seconds`, and the upload itself needs the rest."""
    if files is None:  # guarded at config load; kept for adapters built by hand
        raise DeliveryError(f"{crm}: uploads need a [recordings] section", retryable=False)
    assert call.recording_file is not None
    served = files.served_name(call.recording_file)
    if call.recording_error is not None:
        raise DeliveryError(f"{crm}: no file to upload: {call.recording_error}", retryable=False)
    try:
        path = await files.ready(served, wait)
        data = await asyncio.to_thread(_read, path)
    except RecordingNotReady as exc:
        raise DeliveryError(f"{crm}: {exc}", retryable=True) from None
    except RecordingError as exc:
        raise DeliveryError(f"{crm}: no file to upload: {exc}", retryable=False) from None
    return served, data


def _read(path: object) -> bytes:
    with open(str(path), "rb") as handle:
        return handle.read()


def safe_filename(name: str) -> str:
    """A file name fit for a Content-Disposition header (a template may fill in anything)."""
    cleaned = "".join("_" if c in '"\\\r\n/' else c for c in name).strip()
    return cleaned or "recording"


def content_type_of(spec: UploadSpec, served: str) -> str:
    suffix = "." + served.rsplit(".", 1)[-1].lower() if "." in served else ""
    return spec.content_type or _TYPES.get(suffix, "application/octet-stream")


async def multipart_body(
    spec: UploadSpec,
    fields: list[tuple[str, str]],
    filename: str,
    content_type: str,
    data: bytes,
) -> tuple[bytes, str]:
    """The multipart/form-data body (the form fields, then the file) and its Content-Type."""
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields:
        part = writer.append(value)
        part.set_content_disposition("form-data", name=name)
    part = writer.append(data, {"Content-Type": content_type})
    part.set_content_disposition("form-data", name=spec.file_field, filename=filename)
    sink = _Collect()
    await writer.write(sink)  # type: ignore[arg-type]
    return b"".join(sink.chunks), writer.content_type
