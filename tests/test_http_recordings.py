"""Recordings: both URL shapes, content types, ranges, and no way out of the folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ari_app.calls.recording_links import RecordingLinkSigner
from ari_app.web.deps import HttpDeps
from tests.test_http_support import bearer, make_settings, running

WAV = b"RIFF" + bytes(range(256)) * 4


@pytest.fixture
def settings(tmp_path):
    settings = make_settings(tmp_path)
    folder = Path(settings.calls.recording_dir)
    (folder / "1795418967.2.wav").write_bytes(WAV)
    (folder / "220426104747_331-1-1.mp3").write_bytes(b"ID3" + b"\x00" * 100)
    (folder / "2026" / "11").mkdir(parents=True)
    (folder / "2026" / "11" / "x.gsm").write_bytes(b"\xd8" * 33)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not yours")
    os.symlink(secret, folder / "escape.wav")
    (folder / "notes.txt").write_text("no")
    return settings


async def test_a_recording_is_served_with_its_content_type_by_header_token(settings):
    async with running(HttpDeps(settings=settings)) as server:
        async with server.session.get(
            server.url("/api/v1/recordings/1795418967.2.wav"), headers=bearer()
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "audio/wav"
            assert await resp.read() == WAV
        async with server.session.get(
            server.url("/api/v1/recordings/2026/11/x.gsm"), headers=bearer()
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "audio/x-gsm"


async def test_the_creatio_url_shape_serves_mp3_with_a_signed_slot(settings):
    signer = RecordingLinkSigner(b"s" * 32, 3600)
    slot = signer.slot("220426104747_331-1-1.mp3", time.time())
    deps = HttpDeps(settings=settings, recording_links=signer)
    async with running(deps) as server:
        url = server.url(f"/{slot}/recording/220426104747_331-1-1.mp3")
        async with server.session.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "audio/mpeg"
        async with server.session.get(url.replace(slot, "y" * 30)) as resp:
            assert resp.status == 401


async def test_range_requests_get_206_and_just_the_bytes_asked_for(settings):
    async with running(HttpDeps(settings=settings)) as server:
        async with server.session.get(
            server.url("/api/v1/recordings/1795418967.2.wav"),
            headers={**bearer(), "Range": "bytes=4-11"},
        ) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 4-11/{len(WAV)}"
            assert await resp.read() == WAV[4:12]


@pytest.mark.parametrize(
    "path",
    [
        "..%2Fsecret.wav",
        "%2e%2e%2Fsecret.wav",
        "%2e%2e/secret.wav",
        "2026/..%2F..%2Fsecret.wav",
        "%2Fetc%2Fpasswd",
        "%2F%2Fetc%2Fpasswd.wav",
        "escape.wav",  # a symlink pointing out of the folder
        "notes.txt",  # not a recording type
        ".hidden.wav",
        "missing.wav",
        "..%5Csecret.wav",
        "x.wav%00.txt",
    ],
)
async def test_nothing_outside_the_folder_or_not_a_recording_is_served(settings, path):
    async with running(HttpDeps(settings=settings)) as server:
        async with server.session.get(
            server.url("/api/v1/recordings/") + path, headers=bearer()
        ) as resp:
            assert resp.status == 404, path
            assert await resp.json() == {"error": "not found"}
