"""Click-to-call fraud rules and the outcome state machine, driven by the recorded AMI frames."""

from __future__ import annotations

import pytest

from ari_app.originate.model import OriginateRejected, OriginateState
from ari_app.originate.record_log import StoreOriginateLog
from ari_app.originate.rules import check_destination
from ari_app.originate.service import OriginateService
from ari_app.originate.settings import FraudRules, OriginateSettings
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store
from tests.test_http_support import RecordedAmiBackend


def service(backend: RecordedAmiBackend, **fraud: object) -> OriginateService:
    settings = OriginateSettings(fraud=FraudRules.model_validate(fraud))
    return OriginateService(settings, backend, agent_pattern=r"^\d{2,5}$")


def test_a_russian_mobile_in_any_format_is_dialled_as_the_recorded_national_digits():
    rules = FraudRules()
    for raw in ("89161234567", "+79161234567", "+7 (916) 123-45-67", "79161234567"):
        checked = check_destination(raw, rules)
        assert checked.e164 == "+79161234567"
        assert checked.dial == "89161234567"  # Exten of the recorded Originate


def test_dial_format_and_prefix_come_from_config():
    rules = FraudRules(dial_format="e164_digits", dial_prefix="9")
    assert check_destination("89161234567", rules).dial == "979161234567"


def test_the_same_number_is_judged_by_the_rules_of_each_request():
    """What phonenumbers says of a number is remembered; the rules and the default region
    a request is judged by are not."""
    number = "2025550123"  # no country code: a Washington number for US, nothing for RU
    with pytest.raises(OriginateRejected, match="not a valid phone number"):
        check_destination(number, FraudRules())
    us = FraudRules(default_region="US", allowed_regions=["US"], dial_format="e164")
    assert check_destination(number, us).dial == "+12025550123"
    with pytest.raises(OriginateRejected, match="not a valid phone number"):
        check_destination(number, FraudRules())
    assert check_destination("89161234567", FraudRules()).dial == "89161234567"
    assert check_destination("89161234567", FraudRules(dial_format="e164")).dial == "+79161234567"
    with pytest.raises(OriginateRejected, match="range is blocked"):
        check_destination("89161234567", FraudRules(blocked_prefixes=["+7916"]))
    with pytest.raises(OriginateRejected, match="country RU is not allowed"):
        check_destination("89161234567", FraudRules(allowed_regions=["KZ"]))


@pytest.mark.parametrize(
    ("number", "status", "message"),
    [
        ("+78091234567", 403, "premium rate numbers are blocked"),
        ("+493012345678", 403, "destination country DE is not allowed"),
        # Same calling code as Russia, another country.
        ("+77012345678", 403, "destination country KZ is not allowed"),
        ("87012345678", 403, "destination country KZ is not allowed"),
        ("12", 422, "not a valid phone number"),
        ("9161234567; DROP TABLE calls", 422, "not a phone number"),
        ("", 422, "not a phone number"),
        ("+7916\r\nAction: Command", 422, "not a phone number"),
    ],
)
def test_a_dangerous_or_broken_destination_is_refused(number, status, message):
    with pytest.raises(OriginateRejected) as caught:
        check_destination(number, FraudRules())
    assert caught.value.field == "number"
    assert caught.value.status == status
    assert caught.value.message == message


def test_allowed_regions_and_number_types_are_decided_per_region():
    rules = FraudRules(
        allowed_regions=["RU", "KZ", "DE"],
        blocked_number_types_by_region={"KZ": []},
    )
    assert check_destination("+77012345678", rules).e164 == "+77012345678"
    assert check_destination("+493012345678", rules).e164 == "+493012345678"
    with pytest.raises(OriginateRejected, match="premium"):
        check_destination("+78091234567", rules)  # RU keeps the default list
    german_premium = "+499001234567"
    with pytest.raises(OriginateRejected, match="premium"):
        check_destination(german_premium, rules)
    only_shared_cost = FraudRules(
        allowed_regions=["DE"], blocked_number_types_by_region={"DE": ["SHARED_COST"]}
    )
    assert check_destination(german_premium, only_shared_cost).e164 == german_premium


def test_the_old_calling_code_key_is_refused_with_what_to_write_instead():
    with pytest.raises(ValueError) as caught:
        FraudRules.model_validate({"allowed_country_codes": [7]})
    message = str(caught.value)
    assert "allowed_regions" in message
    assert "+7 is RU, KZ" in message


def test_blocked_prefixes_refuse_a_range_phonenumbers_calls_ordinary():
    with pytest.raises(OriginateRejected):
        check_destination("+74951112233", FraudRules(blocked_prefixes=["+7495"]))


async def test_an_extension_not_matching_the_agent_pattern_is_refused_before_the_pbx():
    backend = RecordedAmiBackend("click_to_call_originate")
    svc = service(backend)
    for extension in ("trunk", "1", "101@trunk", "101\r\nAction: Command", "PJSIP/101"):
        with pytest.raises(OriginateRejected) as caught:
            await svc.submit(extension, "89161234567", client="crm")
        assert caught.value.field == "extension"
    assert backend.actions == []


async def test_the_originate_action_has_the_recorded_shape():
    backend = RecordedAmiBackend("click_to_call_originate")
    record = await service(backend).submit("101", "+79161234567", client="crm")
    (action,) = backend.actions
    assert action == {
        "Action": "Originate",
        "ActionID": record.id,
        "Channel": "PJSIP/101",
        "Context": "from-internal",
        "Exten": "89161234567",
        "Priority": "1",
        "CallerID": '"Click-to-call 89161234567" <101>',
        "Timeout": "30000",
        "Async": "true",
        "Variable": f"CRM_CALL_ID={record.id}",
    }
    assert record.state is OriginateState.RINGING_AGENT


async def test_recorded_answer_by_the_agent_ends_connected_with_the_agent_channel():
    backend = RecordedAmiBackend("click_to_call_originate")
    svc = service(backend)
    record = await svc.submit("101", "89161234567", client="crm")
    for frame in backend.outcome_frames(record.id):
        svc.on_frame(frame)
    await svc.flush()
    assert record.state is OriginateState.CONNECTED
    assert record.reason is None
    assert record.uniqueid == "1795418031.8"
    await svc.close()


async def test_recorded_agent_no_answer_is_linked_only_by_the_channel_variable():
    backend = RecordedAmiBackend("click_to_call_agent_no_answer")
    svc = service(backend)
    record = await svc.submit("101", "89161234567", client="crm")
    frames = backend.outcome_frames(record.id)
    response = next(f for f in frames if f["Event"] == "OriginateResponse")
    assert response["Uniqueid"] == "<unknown>"
    for frame in frames:
        svc.on_frame(frame)
    await svc.flush()
    assert record.state is OriginateState.AGENT_NO_ANSWER
    assert record.reason == "agent did not answer"
    assert record.uniqueid == "1795420573.2"  # from VarSet CRM_CALL_ID, not the response
    await svc.close()


async def test_a_duplicate_or_late_outcome_never_changes_a_final_state():
    backend = RecordedAmiBackend("click_to_call_agent_no_answer")
    svc = service(backend)
    record = await svc.submit("101", "89161234567", client="crm")
    svc.on_originate_response(record.id, "Failure", "3", "<unknown>")
    svc.on_originate_response(record.id, "Success", "4", "1.1")
    assert record.state is OriginateState.AGENT_NO_ANSWER
    await svc.close()


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        ("0", OriginateState.FAILED),
        ("1", OriginateState.FAILED),
        ("5", OriginateState.AGENT_BUSY),
        ("8", OriginateState.FAILED),
        ("42", OriginateState.FAILED),
    ],
)
async def test_failure_reasons_from_the_asterisk_docs_map_to_states(reason, state):
    """Not recorded: Reasons other than 3 and 4 follow AST_CONTROL_* (Asterisk frame.h)."""
    svc = service(RecordedAmiBackend("click_to_call_agent_no_answer"))
    record = await svc.submit("101", "89161234567", client="crm")
    svc.on_originate_response(record.id, "Failure", reason, "<unknown>")
    assert record.state is state
    assert record.reason
    await svc.close()


async def test_the_same_idempotency_key_never_rings_the_agent_twice():
    backend = RecordedAmiBackend("click_to_call_originate")
    svc = service(backend)
    first = await svc.submit("101", "89161234567", client="crm", idempotency_key="k1")
    again = await svc.submit("101", "89161234567", client="crm", idempotency_key="k1")
    other = await svc.submit("101", "89161234567", client="other", idempotency_key="k1")
    assert first is again
    assert other.id != first.id
    assert [a["ActionID"] for a in backend.actions] == [first.id, other.id]
    await svc.close()


async def test_only_the_newest_finished_requests_stay_in_memory_and_keep_their_key():
    backend = RecordedAmiBackend("click_to_call_originate")
    settings = OriginateSettings(fraud=FraudRules())
    svc = OriginateService(settings, backend, agent_pattern=r"^\d{2,5}$", keep_finished=5)

    async def submit(key: str):
        return await svc.submit(
            "101", "89161234567", client="crm", idempotency_key=key, per_minute=100
        )

    records = []
    for n in range(20):
        record = await submit(f"k{n}")
        svc.on_originate_response(record.id, "Success", "4", f"1.{n}")
        records.append(record)
    in_flight = await submit("live")
    await svc.flush()
    assert svc.records_in_memory == 6  # 5 finished + the one still ringing
    # The newest finished one still answers a retry with its own record: no second ring.
    assert await submit("k19") is records[-1]
    assert await submit("live") is in_flight
    assert len(backend.actions) == 21
    # An old one is no longer in memory (the store answers for it in `pbxcrm run`).
    assert await svc.get(records[0].id) is None
    await svc.close()


async def test_a_timed_out_action_is_not_resent_and_still_follows_its_outcome():
    backend = RecordedAmiBackend("click_to_call_originate")
    backend.fail_with = TimeoutError()
    svc = service(backend)
    record = await svc.submit("101", "89161234567", client="crm")
    assert record.state is OriginateState.PENDING
    assert len(backend.actions) == 1
    for frame in backend.outcome_frames(record.id):
        svc.on_frame(frame)
    assert record.state is OriginateState.CONNECTED
    assert len(backend.actions) == 1
    await svc.close()


async def test_the_rate_limit_counts_per_client():
    backend = RecordedAmiBackend("click_to_call_originate")
    svc = service(backend)
    for _ in range(2):
        await svc.submit("101", "89161234567", client="crm", per_minute=2)
    with pytest.raises(OriginateRejected) as caught:
        await svc.submit("101", "89161234567", client="crm", per_minute=2)
    assert caught.value.status == 429
    await svc.submit("101", "89161234567", client="other", per_minute=2)
    assert len(backend.actions) == 3
    await svc.close()


def test_check_config_names_the_file_and_section_of_the_old_key(tmp_path):
    from ari_app.app.settings import ConfigError, load_settings

    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        '[http.originate.fraud]\ndefault_region = "RU"\nallowed_country_codes = [7]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert text.startswith(f"{config}:3: http.originate.fraud.allowed_country_codes:")
    assert "allowed_regions" in text and "+7 is RU, KZ" in text


# Arabic-Indic, Extended Arabic-Indic, mathematical bold and full-width forms of 101 / 7500.
NON_ASCII_DIGITS = [
    "\u0661\u0660\u0661",
    "\u06f1\u06f0\u06f1",
    "\U0001d7cf\U0001d7ce\U0001d7cf",
    "\uff11\uff10\uff11",
]


@pytest.mark.parametrize("extension", NON_ASCII_DIGITS)
async def test_an_extension_in_non_ascii_digits_is_refused_before_the_pbx(extension):
    backend = RecordedAmiBackend("click_to_call_originate")
    with pytest.raises(OriginateRejected) as caught:
        await service(backend).submit(extension, "89161234567", client="crm")
    assert caught.value.field == "extension"
    assert backend.actions == []


@pytest.mark.parametrize(
    "number",
    [
        "\u0668\u0669\u0661\u0666\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
        "+\U0001d7d5\U0001d7d7\U0001d7d6",
    ],
)
def test_a_number_in_non_ascii_digits_is_not_a_phone_number(number):
    with pytest.raises(OriginateRejected, match="not a phone number"):
        check_destination(number, FraudRules())


def test_extension_ranges_and_3cx_durations_take_ascii_digits_only():
    from ari_app.pbx.extension_owner import parse_extension_range
    from ari_app.threecx.journal import parse_duration

    assert parse_extension_range("100-199").matches("101")
    for extension in NON_ASCII_DIGITS:
        assert not parse_extension_range("100-199").matches(extension)
    with pytest.raises(ValueError):
        parse_extension_range("\u0661\u0660\u0660-\u0661\u0669\u0669")
    assert parse_duration("00:01:05") == 65
    for duration in ("\u0660\u0660:\u0660\u0661:\u0660\u0665", "\u0666\u0665"):
        with pytest.raises(ValueError):
            parse_duration(duration)


async def test_finals_evicted_while_their_state_is_being_saved_still_reach_the_store(
    tmp_path, caplog
):
    """Many requests finishing in one loop turn, more than `keep_finished`: a record let go
    before its final state was written must still get that state into the store (reads of
    an evicted record come from there), and nothing may be inserted twice."""
    store = await Store.open(StoreSettings(path=str(tmp_path / "calls.db")))
    backend = RecordedAmiBackend("click_to_call_originate")
    svc = OriginateService(
        OriginateSettings(fraud=FraudRules()),
        backend,
        agent_pattern=r"^\d{2,5}$",
        log_store=StoreOriginateLog(store),
        keep_finished=1,
    )
    try:
        records = [
            await svc.submit("101", "89161234567", client="crm", per_minute=100) for _ in range(6)
        ]
        for n, record in enumerate(records):  # all in one loop turn: no save has run yet
            svc.on_originate_response(record.id, "Success", "4", f"1.{n}")
        await svc.flush()
        states = [(await store.get_originate(r.id)).state for r in records]
        assert states == ["connected"] * len(records)
        assert svc.records_in_memory == 1
        assert "could not save originate state" not in caplog.text
        assert await svc.get(records[0].id) is not None  # read back from the store
    finally:
        await svc.close()
        await store.close()
