"""Click-to-call over HTTP: native, Creatio and FixDigital shapes, validation, fraud, audit."""

from __future__ import annotations

import logging

from ari_app.web.deps import HttpDeps
from tests.test_http_support import (
    CREATIO_TOKEN,
    CRM_TOKEN,
    FIX_PASSWORD,
    FIX_USER,
    RecordedAmiBackend,
    basic,
    bearer,
    make_service,
    make_settings,
    running,
)


def _deps(tmp_path, scenario="click_to_call_originate", **http):
    settings = make_settings(tmp_path, **http)
    backend = RecordedAmiBackend(scenario)
    service = make_service(settings, backend)
    return HttpDeps(settings=settings, originate_service=service), backend


async def test_native_originate_answers_202_with_an_id_and_reports_the_recorded_outcome(
    tmp_path,
):
    deps, backend = _deps(tmp_path)
    async with running(deps) as server:
        async with server.session.post(
            server.url("/api/v1/originate"),
            json={"extension": "101", "number": "89161234567"},
            headers=bearer(),
        ) as resp:
            assert resp.status == 202
            accepted = await resp.json()
        assert accepted["state"] == "ringing_agent"
        assert accepted["status_url"] == f"/api/v1/originate/{accepted['id']}"
        (action,) = backend.actions
        assert action["ActionID"] == accepted["id"]
        for frame in backend.outcome_frames(accepted["id"]):
            deps.originate_service.on_frame(frame)
        async with server.session.get(server.url(accepted["status_url"]), headers=bearer()) as resp:
            outcome = await resp.json()
        assert outcome["state"] == "connected"
        assert outcome["number"] == "+79161234567"
    await deps.originate_service.close()


async def test_another_client_cannot_read_someone_elses_originate(tmp_path):
    other = "other-token-0123456789abcdef"
    deps, _ = _deps(
        tmp_path,
        clients=[
            {"name": "crm", "token": CRM_TOKEN, "routes": ["originate"]},
            {"name": "other", "token": other, "routes": ["originate"]},
        ],
    )
    async with running(deps) as server:
        async with server.session.post(
            server.url("/api/v1/originate"),
            json={"extension": "101", "number": "89161234567"},
            headers=bearer(),
        ) as resp:
            originate_id = (await resp.json())["id"]
        async with server.session.get(
            server.url(f"/api/v1/originate/{originate_id}"), headers=bearer(other)
        ) as resp:
            assert resp.status == 404
    await deps.originate_service.close()


async def test_a_retried_request_with_the_same_idempotency_key_rings_once(tmp_path):
    deps, backend = _deps(tmp_path)
    async with running(deps) as server:
        ids = []
        for _ in range(3):
            async with server.session.post(
                server.url("/api/v1/originate"),
                json={"extension": "101", "number": "89161234567"},
                headers={**bearer(), "Idempotency-Key": "crm-req-1"},
            ) as resp:
                ids.append((await resp.json())["id"])
    assert len(set(ids)) == 1
    assert len(backend.actions) == 1
    await deps.originate_service.close()


async def test_bad_originate_bodies_get_400_or_422_naming_the_field(tmp_path):
    deps, backend = _deps(tmp_path)
    cases = [
        ("{not json", 400, None),
        ("[1, 2]", 400, None),
        ('{"number": "89161234567"}', 422, "extension"),
        ('{"extension": "101"}', 422, "number"),
        ('{"extension": "101", "number": "89161234567", "priority": 9}', 422, "priority"),
        ('{"extension": "101", "number": "hello"}', 422, "number"),
        ('{"extension": "trunk", "number": "89161234567"}', 403, "extension"),
        ('{"extension": "101", "number": "+78091234567"}', 403, "number"),
        ('{"extension": "101", "number": "+493012345678"}', 403, "number"),
    ]
    async with running(deps) as server:
        for body, status, field in cases:
            async with server.session.post(
                server.url("/api/v1/originate"),
                data=body,
                headers={**bearer(), "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == status, body
                answer = await resp.json()
            assert "error" in answer
            if field is not None:
                assert field in [f["field"] for f in answer["fields"]], body
    assert backend.actions == []


async def test_the_rate_limit_answers_429(tmp_path):
    deps, backend = _deps(
        tmp_path,
        clients=[
            {"name": "crm", "token": CRM_TOKEN, "originate_per_minute": 2, "routes": ["originate"]}
        ],
    )
    async with running(deps) as server:
        statuses = []
        for _ in range(3):
            async with server.session.post(
                server.url("/api/v1/originate"),
                json={"extension": "101", "number": "89161234567"},
                headers=bearer(),
            ) as resp:
                statuses.append(resp.status)
    assert statuses == [202, 202, 429]
    assert len(backend.actions) == 2
    await deps.originate_service.close()


async def test_creatio_makecall_sends_one_originate(tmp_path):
    deps, backend = _deps(tmp_path)
    async with running(deps) as server:
        url = server.url(f"/webapi/{CREATIO_TOKEN}/makecall?first=101&second=79991234567")
        async with server.session.get(url) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["success"] is True
        async with server.session.get(
            server.url(f"/webapi/{CREATIO_TOKEN}/makecall?first=101")
        ) as resp:
            assert resp.status == 422
            assert [f["field"] for f in (await resp.json())["fields"]] == ["second"]
    (action,) = backend.actions
    assert action["Exten"] == "89991234567"
    await deps.originate_service.close()


async def test_fixdigital_shape_with_basic_auth_or_credential_fields(tmp_path):
    deps, backend = _deps(tmp_path)
    async with running(deps) as server:
        async with server.session.get(
            server.url("/dialer/sodialer.php?sExt=101&sNumber=89161234567&ClientId=10"),
            headers=basic(),
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["success"] is True
            assert body["result"] == []
        async with server.session.post(
            server.url("/fixdigital/makecall"),
            data={
                "sExt": "101",
                "sNumber": "89161234567",
                "ClientId": "10",
                "username": FIX_USER,
                "password": FIX_PASSWORD,
            },
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["success"] is True
        async with server.session.get(
            server.url("/fixdigital/makecall?sExt=101&ClientId=10"), headers=basic()
        ) as resp:
            assert resp.status == 422
            body = await resp.json()
            assert body["success"] is False
            assert [f["field"] for f in body["fields"]] == ["sNumber"]
    assert len(backend.actions) == 2
    record = await deps.originate_service.get(backend.actions[0]["ActionID"])
    assert record.client_ref == "10"
    await deps.originate_service.close()


async def test_every_originate_writes_one_audit_line_without_secrets(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pbxcrm.audit")
    deps, _ = _deps(tmp_path)
    async with running(deps) as server:
        async with server.session.get(
            server.url(f"/webapi/{CREATIO_TOKEN}/makecall?first=101&second=89161234567")
        ) as resp:
            originate_id = (await resp.json())["id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "pbxcrm.audit"]
    assert lines == [
        f"originate id={originate_id} client=creatio source=creatio extension=101"
        " number=+79161234567"
    ]
    assert CREATIO_TOKEN not in caplog.text
    await deps.originate_service.close()
