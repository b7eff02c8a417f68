"""crm.numbers: the per-dialect number formats, and that no input can make them raise."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm.numbers import NUMBER_STYLES, digits_only, format_number, normalize, number_variants

# Callers from the recorded Asterisk scenarios (tests/fixtures/asterisk/README.md).
RECORDED_CALLER = "+79031234567"
CLICK_TO_CALL_CLIENT = "89161234567"


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("e164", "+79031234567"),
        ("e164_no_plus", "79031234567"),
        ("national", "89031234567"),
        ("as_received", "+79031234567"),
        ("digits", "79031234567"),
    ],
)
def test_a_recorded_russian_caller_is_formatted_in_every_style(style, expected):
    assert format_number(RECORDED_CALLER, style, "RU") == expected


def test_a_russian_trunk_prefix_8_number_becomes_e164():
    assert format_number(CLICK_TO_CALL_CLIENT, "e164", "RU") == "+79161234567"


def test_fixdigital_sample_number_stays_in_its_national_form():
    # The questionnaire's sample sNumber is 033004799 (Israel).
    assert format_number("+97233004799", "national", "IL") == "033004799"
    assert format_number("033004799", "national", "IL") == "033004799"


def test_a_foreign_number_in_national_style_is_what_the_region_dials():
    assert format_number("+441234567890", "national", "RU") == "810441234567890"
    assert format_number("+79853334455", "national", "US") == "01179853334455"


def test_a_region_with_several_international_prefixes_dials_its_plain_one():
    # Israel lists 00 and carrier prefixes (012, 013 ...) with none preferred.
    assert format_number("+79853334455", "national", "IL") == "0079853334455"


@pytest.mark.parametrize("extension", ["7181", "101", "517", "*2", "s"])
@pytest.mark.parametrize("style", NUMBER_STYLES)
def test_extensions_and_short_codes_are_left_as_they_are(extension, style):
    if style == "digits":
        assert format_number(extension, style, "RU") == (digits_only(extension) or extension)
    else:
        assert format_number(extension, style, "RU") == extension


@pytest.mark.parametrize("garbage", ["", "<unknown>", "anonymous", "Unknown", "+", "++--"])
def test_caller_ids_that_are_not_numbers_come_back_unchanged(garbage):
    assert normalize(garbage, "RU") is None
    assert format_number(garbage, "e164", "RU") == garbage


def test_an_unknown_region_still_formats_international_numbers():
    assert format_number("+79031234567", "e164", "XX") == "+79031234567"
    assert format_number("89031234567", "e164", "XX") == "89031234567"


def test_number_variants_lists_the_stored_forms_most_canonical_first():
    assert number_variants(CLICK_TO_CALL_CLIENT, "RU") == [
        "+79161234567",
        "79161234567",
        "89161234567",
    ]
    assert number_variants("4951112233", "RU") == [
        "+74951112233",
        "74951112233",
        "84951112233",
        "4951112233",
    ]


def test_number_variants_of_an_extension_is_only_the_extension():
    assert number_variants("7181", "RU") == ["7181"]


def test_digits_only_drops_punctuation_and_non_ascii_digits():
    assert digits_only("+7 (903) 123-45-67") == "79031234567"
    assert digits_only("٣٣") == ""


REGIONS = st.sampled_from(["RU", "IL", "US", "GB", "IN", "", "XX", "ru", "001"])


@settings(max_examples=400, deadline=None)
@given(number=st.text(max_size=80), region=REGIONS)
def test_no_input_makes_the_number_helpers_raise(number, region):
    parsed = normalize(number, region)
    assert parsed is None or isinstance(parsed, phonenumbers.PhoneNumber)
    for style in NUMBER_STYLES:
        formatted = format_number(number, style, region)
        # The helpers swallow exceptions, so check the answer, not that nothing was raised.
        if style == "digits":
            assert formatted == (digits_only(number) or number)
        elif parsed is None or style == "as_received":
            assert formatted == number
        else:
            assert formatted and formatted.lstrip("+").isascii()
            assert formatted.lstrip("+").isdigit()
    variants = number_variants(number, region)
    assert len(variants) == len(set(variants))


@settings(max_examples=300, deadline=None)
@given(
    number=st.text(alphabet="+0123456789 -()", min_size=1, max_size=20),
    region=REGIONS,
)
def test_number_like_input_never_raises_and_e164_is_canonical(number, region):
    e164 = format_number(number, "e164", region)
    if normalize(number, region) is not None:
        assert e164.startswith("+")
        assert format_number(e164, "e164", region) == e164
    else:
        assert e164 == number
