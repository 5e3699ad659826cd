"""Golden vectors for Google's normalisation (sync.identity, Google section).

Source: Data Manager API, "Format user data"
https://developers.google.com/data-manager/api/devguides/concepts/formatting
and the AddressInfo reference
https://developers.google.com/data-manager/api/reference/rest/v1/UserData
The examples marked "doc" are the guide's own.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmsync.connectors.google import encode_identity
from crmsync.connectors.identity import (
    google_email,
    google_family_name,
    google_given_name,
    google_phone,
    google_postal,
    google_region,
    hash_normalised,
)
from crmsync.sync.errors import Reject


@pytest.mark.parametrize(("raw", "normalised"), [
    # doc: gmail.com: dots before the @ removed, "+" and what follows removed
    ("cloudy.sanfrancisco+shopping@gmail.com", "cloudysanfrancisco@gmail.com"),
    # doc: other domains keep dots and plus signs, only lower-cased
    ("user.name+NYC@Example.com", "user.name+nyc@example.com"),
    # googlemail.com is treated like gmail.com
    ("Jane.Doe@GoogleMail.com", "janedoe@googlemail.com"),
    # leading, trailing and intermediate whitespace trimmed
    ("  jane doe@example.com \t", "janedoe@example.com"),
    # a subdomain of gmail.com is not gmail.com
    ("a.b@mail.gmail.com", "a.b@mail.gmail.com"),
])
def test_email_vectors(raw: str, normalised: str) -> None:
    assert google_email(raw) == normalised


@pytest.mark.parametrize("raw", ["", "   ", "no-at-sign", "a@b", "+x@gmail.com", "a@@b.com"])
def test_bad_emails_are_rejected(raw: str) -> None:
    with pytest.raises(Reject):
        google_email(raw)


def test_email_hash_golden() -> None:
    # SHA-256 hex of the doc's normalised example, computed once and written down
    assert hash_normalised(google_email("cloudy.sanfrancisco+shopping@gmail.com")) == (
        "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4")
    assert hash_normalised(google_email("user.name+NYC@Example.com")) == (
        "f109a2a632fbcea5fc82049f50beed3d8621bf9034399f437fb622222acccdac")


@pytest.mark.parametrize(("raw", "country", "region", "e164"), [
    ("(800)555-0100", None, "US", "+18005550100"),  # doc example
    (" +1 800 555 0100 ", None, None, "+18005550100"),
    ("020 7946 0018", "GB", "US", "+442079460018"),  # the contact's country wins
    ("030 901820", "DE", "US", "+4930901820"),
])
def test_phone_vectors(raw: str, country: str | None, region: str | None, e164: str) -> None:
    assert google_phone(raw, country, region) == e164


def test_phone_hash_golden() -> None:
    assert hash_normalised(google_phone("(800)555-0100", None, "US")) == (
        "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30")


@pytest.mark.parametrize("raw", ["", "12", "not a phone"])
def test_bad_phones_are_rejected(raw: str) -> None:
    with pytest.raises(Reject):
        google_phone(raw, None, "US")


@pytest.mark.parametrize(("raw", "given"), [
    ("  Jane ", "jane"), ("Mrs. Jane", "jane"), ("Dr Jane", "jane"), ("Zoë", "zoë"),
    ("Mary-Ann", "maryann"), ("Mrs", "mrs"),  # a title alone is kept: it is all there is
])
def test_given_name_vectors(raw: str, given: str) -> None:
    assert google_given_name(raw) == given


@pytest.mark.parametrize(("raw", "family"), [
    ("Doe", "doe"), ("Doe Jr.", "doe"), ("O'Neil", "oneil"), ("King III", "king"),
    ("van der Berg", "van der berg"),
])
def test_family_name_vectors(raw: str, family: str) -> None:
    assert google_family_name(raw) == family


def test_region_and_postal_code_are_plain() -> None:
    assert google_region(" us ") == "US"
    assert google_postal(" 94043 ", "US") == "94043"
    assert google_postal("94043-1234", "US") == "94043-1234"  # ZIP+4 improves matching
    assert google_postal("940431234", "US") == "94043-1234"
    assert google_postal("sw1a 1aa", "GB") == "SW1A 1AA"
    for bad in ("USA", "1", ""):
        with pytest.raises(Reject):
            google_region(bad)
    with pytest.raises(Reject):
        google_postal("9404", "US")


def test_encode_identity_golden_row() -> None:
    ids = encode_identity({"email": "Cloudy.SanFrancisco+shopping@gmail.com",
                           "phone": "(800)555-0100", "first_name": "Mrs. Jane",
                           "last_name": "Doe", "country": "us", "zip": "94043",
                           "phone_region": "US"},
                          ["email", "phone", "first_name", "last_name", "country", "zip"])
    assert ids == [
        {"emailAddress": "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"},
        {"phoneNumber": "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"},
        {"address": {
            "givenName": "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2",
            "familyName": "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f",
            "regionCode": "US", "postalCode": "94043"}},
    ]


def test_address_needs_all_four_parts_and_unwanted_fields_are_not_sent() -> None:
    ids = encode_identity({"email": "a@example.com", "first_name": "Jane", "last_name": "Doe",
                           "country": "US", "zip": None, "phone": "+18005550100"},
                          ["email", "first_name", "last_name", "country", "zip"])
    assert ids == [{"emailAddress": hashlib.sha256(b"a@example.com").hexdigest()}]


def test_prehashed_values_pass_through() -> None:
    h = "A" * 64
    assert encode_identity({"email": h}, ["email"]) == [{"emailAddress": "a" * 64}]


def test_nothing_usable_is_a_reject_with_reasons() -> None:
    with pytest.raises(Reject, match="no usable identifier: email is not a valid address"):
        encode_identity({"email": "nope", "phone": None}, ["email", "phone"])


@given(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True), st.sets(st.integers(1, 11)),
       st.from_regex(r"[a-z0-9.+-]{0,8}", fullmatch=True), st.sampled_from(["gmail.com", "googlemail.com"]))
def test_gmail_variants_hash_alike(local: str, dots: set[int], tag: str, domain: str) -> None:
    dotted = "".join(("." + ch) if i in dots else ch for i, ch in enumerate(local))
    variant = f"  {dotted.upper()}+{tag}@{domain.upper()} "
    assert google_email(variant) == google_email(f"{local}@{domain}") == f"{local}@{domain}"
