"""Identifier rules from the platforms' formatting guides that a naive normaliser gets wrong.

Google: "Format user data", https://developers.google.com/data-manager/api/devguides/concepts/formatting
(prefix / suffix lists: Google's own formatter, googleads/data-manager-java UserDataFormatter).
Meta: customer information parameters,
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
(country: ISO 3166-1 alpha-2, lower case).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import datetime
from pathlib import Path

import pytest

from crmsync.connectors import identity as ident
from crmsync.connectors.base import Context
from crmsync.connectors.google import encode_identity
from crmsync.connectors.meta import CustomAudienceDestination, CustomAudienceOptions, MetaConnection
from crmsync.sync.errors import Reject
from crmsync.sync.mapping.model import DestinationConfig


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("raw", ["John Doe <john@example.com>", "<john@example.com>",
                                 '"Doe, John" john@example.com', "john@example.com (work)",
                                 "a@example.com, b@example.com", "a@example.com; b@example.com"])
def test_a_display_name_or_list_is_refused_not_mangled(raw: str) -> None:
    for normalise in (ident.google_email, ident.meta_email):
        with pytest.raises(Reject, match="not a bare address"):
            normalise(raw)


def test_google_refuses_the_display_name_instead_of_gluing_it() -> None:
    with pytest.raises(Reject, match="no usable identifier: email is not a bare address"):
        encode_identity({"email": "John Doe <john@example.com>"}, ["email"])


def test_decomposed_and_composed_accents_hash_alike() -> None:
    composed = unicodedata.normalize("NFC", "Renée")
    decomposed = unicodedata.normalize("NFD", "Renée")
    assert composed != decomposed
    assert ident.google_given_name(decomposed) == ident.google_given_name(composed) == "renée"
    assert ident.google_family_name("Ferna\u0301ndez") == "fernández"
    assert ident.meta_name(decomposed) == ident.meta_name(composed) == "renée"


@pytest.mark.parametrize(("raw", "given"), [
    ("Hon. Jane", "jane"), ("Rev Jane", "jane"), ("Prof. Dr. Jane", "jane"), ("Ms. Jane", "jane"),
    ("Mr. John Paul", "john paul"), ("Miss Jane", "jane"), ("Sir John", "john"),
])
def test_google_removes_the_listed_prefixes(raw: str, given: str) -> None:
    assert ident.google_given_name(raw) == given


@pytest.mark.parametrize(("raw", "family"), [
    ("Doe Jnr", "doe"), ("Doe Snr.", "doe"), ("Doe, Jr., DDS", "doe"), ("Doe VI", "doe"),
    ("Doe 3rd", "doe"), ("Doe II", "doe"), ("Doe PhD", "doe"), ("Doe CPA", "doe"),
    ("Doe", "doe"), ("V", "v"),  # a suffix alone is all there is: kept
])
def test_google_removes_the_listed_suffixes(raw: str, family: str) -> None:
    assert ident.google_family_name(raw) == family


@pytest.mark.parametrize(("raw", "google", "meta"), [
    ("UK", "GB", "gb"), ("uk", "GB", "gb"), (" gb ", "GB", "gb"), ("US", "US", "us"),
    ("de", "DE", "de"),
])
def test_uk_is_sent_as_gb(raw: str, google: str, meta: str) -> None:
    assert ident.google_region(raw) == google
    assert ident.meta_country(raw) == meta


@pytest.mark.parametrize("raw", ["ZZ", "EU", "AA", "QQ", "XX", "EN"])
def test_a_code_iso_has_not_assigned_is_refused(raw: str) -> None:
    with pytest.raises(Reject, match="not an assigned ISO 3166-1 alpha-2 code"):
        ident.google_region(raw)
    with pytest.raises(Reject, match="not an assigned ISO 3166-1 alpha-2 code"):
        ident.meta_country(raw)


def test_google_address_with_a_bad_country_is_no_identifier_and_email_still_goes() -> None:
    row = {"first_name": "Jane", "last_name": "Doe", "country": "ZZ", "zip": "94043"}
    wanted = ["email", "first_name", "last_name", "country", "zip"]
    with pytest.raises(Reject, match="no usable identifier: country is not an assigned"):
        encode_identity(row, wanted)
    ids = encode_identity({**row, "email": "jane@example.com"}, wanted)
    assert ids == [{"emailAddress": sha("jane@example.com")}]
    uk = encode_identity({**row, "country": "UK", "zip": "SW1A 1AA"}, wanted)
    assert uk[0]["address"]["regionCode"] == "GB"


def test_a_uk_phone_is_read_in_gb() -> None:
    assert ident.google_phone("020 7946 0018", "UK", "US") == "+442079460018"
    assert ident.meta_phone("020 7946 0018", "UK", "US") == "442079460018"


def _meta(identifiers: list[str]) -> CustomAudienceDestination:
    cfg = DestinationConfig(name="m", type="meta_custom_audience", segment="s",
                            connection="meta", identifiers=identifiers, audience="A")
    conn = MetaConnection(type="meta", access_token="t" * 20, ad_account_id="1")
    return CustomAudienceDestination(cfg, CustomAudienceOptions(audience="A"), conn,
                                     Context(now=datetime(2026, 1, 1), base_dir=Path(".")))


def test_meta_country_rule() -> None:
    d = _meta(["email", "country"])
    row = json.loads(d.encode({"email": "a@example.com", "country": "UK"}))
    assert row == [sha("a@example.com"), sha("gb")]
    # an unassigned code is not sent; the email still is
    row = json.loads(d.encode({"email": "a@example.com", "country": "ZZ"}))
    assert row == [sha("a@example.com"), ""]
    names = _meta(["first_name", "last_name", "country"])
    assert json.loads(names.encode({"first_name": "A", "last_name": "B", "country": "ZZ"}))[2] == ""
    with pytest.raises(Reject, match="country is not an assigned ISO 3166-1"):
        _meta(["country"]).encode({"country": "ZZ"})
