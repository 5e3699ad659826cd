"""Golden vectors for Meta's normalisation (connectors/identity.py, section "---- Meta").

Each vector cites the rule it follows:
  HASH  = https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences#hash
  CIP   = https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
  HELP  = https://www.facebook.com/business/help/2082575038703844 (customer-list formatting)
  PLAT  = shared/PLATFORMS.md "Known vectors" (sha256 of "smith" and "us")
"""

from __future__ import annotations

import pytest

from crmsync.connectors import identity as ident
from crmsync.sync.errors import Reject

SMITH = "6627835f988e2c5e50533d491163072d3f4f41f5c8b04630150debb3722ca2dd"  # PLAT
US = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"  # PLAT

# (function, args, normalised, rule)
VECTORS = [
    # EMAIL: trim and lower-case (HASH, CIP); Meta keeps gmail dots (not Google's rule) (HASH)
    (ident.meta_email, ("  John.Smith@Gmail.COM ",), "john.smith@gmail.com", "HASH email"),
    (ident.meta_email, ("a+tag@example.co.uk",), "a+tag@example.co.uk", "HASH email"),
    # PHONE: digits only, with the country code, no "+" or leading zeros (HASH, CIP, HELP)
    (ident.meta_phone, ("(650) 555-1234", None, "US"), "16505551234", "HASH phone"),
    (ident.meta_phone, ("+1 650-555-1234", None, "GB"), "16505551234", "CIP phone"),
    (ident.meta_phone, ("020 7946 0018", "GB", "US"), "442079460018", "HELP phone: country code"),
    (ident.meta_phone, ("020 7946 0018", "United Kingdom", "US"), "442079460018", "HELP phone"),
    (ident.meta_phone, ("06 12 34 56 78", "fr", "US"), "33612345678", "CIP: no leading zero"),
    # FN / LN: lower-case, no punctuation, UTF-8 letters kept (HASH; PLATFORMS: not the SDK's a-z)
    (ident.meta_name, ("Smith",), "smith", "PLAT/HASH name"),
    (ident.meta_name, ("  SMITH. ",), "smith", "HASH name: punctuation removed"),
    (ident.meta_name, ("José",), "josé", "HASH name: UTF-8 letters kept"),
    (ident.meta_name, ("O'Brien-Smith",), "obriensmith", "HASH name: apostrophe, hyphen"),
    (ident.meta_name, ("Zoë",), "zoë", "HASH name: UTF-8"),
    (ident.meta_name, ("Jose\u0301",), "josé", "HASH name: NFC of a decomposed accent"),
    # CT: lower-case, no punctuation, no spaces (CIP ct)
    (ident.meta_city, ("San Francisco",), "sanfrancisco", "CIP ct"),
    (ident.meta_city, ("Saint-Étienne",), "saintétienne", "CIP ct, UTF-8"),
    # ST: lower-case two-letter code (CIP st)
    (ident.meta_state, ("CA",), "ca", "CIP st"),
    (ident.meta_state, ("New York", "US"), "ny", "CIP st: 2-character ANSI code for US"),
    (ident.meta_state, ("Bavaria", "DE"), "bavaria", "CIP st: elsewhere lower-case letters"),
    # ZIP: lower-case, no spaces or dash; US first 5 digits (HASH zip, CIP zp)
    (ident.meta_zip, ("94105-1234", "US"), "94105", "HASH zip: US 5 digits"),
    (ident.meta_zip, ("94105", None), "94105", "HASH zip"),
    (ident.meta_zip, ("SW1A 1AA", "GB"), "sw1a1aa", "CIP zp: lower-case, no spaces"),
    # COUNTRY: ISO-3166-1 alpha-2 lower-case (HASH country, CIP)
    (ident.meta_country, ("US",), "us", "PLAT/HASH country"),
    (ident.meta_country, (" us ",), "us", "HASH country"),
    (ident.meta_country, ("United Kingdom",), "gb", "HASH country: ISO alpha-2"),
    # GEN: m or f (HASH gen)
    (ident.meta_gender, ("Female",), "f", "HASH gen"),
    (ident.meta_gender, ("M",), "m", "HASH gen"),
    # EXTERN_ID: as is, trimmed, not hashed (HASH extern_id)
    (ident.meta_extern_id, (" CRM-42 ",), "CRM-42", "HASH extern_id"),
]


@pytest.mark.parametrize(("fn", "args", "expected", "rule"), VECTORS,
                         ids=[f"{v[0].__name__}:{v[2]}" for v in VECTORS])
def test_meta_normalisation_vectors(fn, args, expected, rule):
    assert fn(*args) == expected, rule


def test_known_hashes_from_platforms_doc():
    assert ident.hash_normalised(ident.meta_name("Smith")) == SMITH
    assert ident.hash_normalised(ident.meta_country("US")) == US


def test_date_of_birth_splits_into_doby_dobm_dobd():
    # HASH: DOBY "YYYY", DOBM "MM" (01-12), DOBD "DD" (01-31)
    assert ident.meta_dob("1980-3-7") == ("1980", "03", "07")
    assert ident.meta_dob("1980-03-07T00:00:00Z") == ("1980", "03", "07")


def test_prehashed_values_pass_through():
    assert ident.hash_normalised(SMITH.upper()) == SMITH


@pytest.mark.parametrize(("fn", "args", "reason"), [
    (ident.meta_email, ("john.smith.example.com",), "email is not a valid address"),
    (ident.meta_phone, ("12", None, "US"), "phone is not a valid number"),
    (ident.meta_phone, ("not a phone", None, "US"), "phone is not a valid number"),
    (ident.meta_name, ("--",), "name has no letters"),
    (ident.meta_zip, ("9410", "US"), "US zip is not 5 digits or ZIP+4"),
    (ident.meta_country, ("Atlantis",), "country is not a two-letter ISO-3166-1 code"),
    (ident.meta_dob, ("1980-02-30",), "date of birth is not a real date"),
    (ident.meta_gender, ("x",), "gender is not m or f"),
])
def test_invalid_identifiers_reject_with_reason(fn, args, reason):
    with pytest.raises(Reject) as err:
        fn(*args)
    assert err.value.reason == reason


def test_meta_module_imports_without_the_sdk():
    """`crmsync validate` must work without the optional extra installed."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['facebook_business'] = None; "
            "import crmsync.connectors.meta as m; print(m.CustomAudienceDestination.value)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "identity", out.stderr


try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    @given(st.text(min_size=1, max_size=30))
    def test_meta_name_is_idempotent_letters_only(raw):
        try:
            v = ident.meta_name(raw)
        except Reject:
            return
        assert all(ch.isalpha() for ch in v)
        assert ident.meta_name(v) == v

    @given(st.emails())
    def test_meta_email_is_idempotent(raw):
        v = ident.meta_email(raw)
        assert v == v.strip().lower() and ident.meta_email(v) == v
