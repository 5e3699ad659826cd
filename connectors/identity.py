"""Identifier normalisation and hashing for ad platforms: crmsync's own, one module.

Shared primitives first, then one section per platform (Meta, Google) with that platform's
rules, each citing the doc it follows. Every function takes a raw value and returns the
normalised string (not yet hashed) or raises ``Reject`` with the reason.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import date

import phonenumbers
from iso3166 import countries_by_alpha2

from ..sync.errors import Reject

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256(value: str) -> bool:
    """A value already hashed (64 hex characters) passes through unchanged."""
    return bool(_SHA256.match(value.strip().lower()))


def hash_normalised(value: str) -> str:
    """SHA-256 hex of an already normalised value; pre-hashed values pass through."""
    v = value.strip().lower()
    return v if is_sha256(v) else sha256_hex(v)


# ---- countries
# ISO 3166-1 alpha-2 from the ``iso3166`` package (one small pure-Python module, kept current
# with ISO's list). Not pycountry (8 MB, mostly translations this does not use), nor
# phonenumbers' regions (calling-code regions: they include AC and TA, which ISO only
# reserves, and lack AQ, BV, HM). ``UK`` is ISO's "exceptionally reserved" code for the
# United Kingdom, which both platforms take as GB. XK (Kosovo, a user-assigned code that the
# library and CLDR carry) is accepted.
_COUNTRY_ALIASES = {"UK": "GB"}


def iso_country(raw: str | None) -> str:
    """An assigned ISO 3166-1 alpha-2 code, upper case (``UK`` -> ``GB``); Reject otherwise."""
    v = (raw or "").strip().upper()
    v = _COUNTRY_ALIASES.get(v, v)
    if v not in countries_by_alpha2:
        raise Reject("country is not an assigned ISO 3166-1 alpha-2 code")
    return v


def _region_or_none(country: str | None) -> str | None:
    try:
        return iso_country(country) if country and country.strip() else None
    except Reject:
        return None


def e164(raw: str, country: str | None, region: str | None) -> str:
    """A phone number in E.164 (``+14155550123``), read in the contact's country when known,
    else in ``region``. Raises Reject when it is not a valid number."""
    text = (raw or "").strip()
    if not text:
        raise Reject("phone is empty")
    regions = [r for r in (_region_or_none(country), region) if r]
    for reg in regions or [None]:
        try:
            num = phonenumbers.parse(text, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    raise Reject("phone is not a valid number")


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: characters no plain address holds outside quotes: they mean a display name
#: (``John Doe <john@example.com>``), a list or a comment was written instead
_NOT_AN_ADDRESS = re.compile(r"[<>()\[\],;:\"\\]")


def basic_email(raw: str) -> str:
    """Trimmed, lower-cased email; Reject when it is not of the form local@domain.tld, or is
    written with a display name (``Name <address>``): refused rather than guessed at."""
    v = (raw or "").strip().lower()
    if _NOT_AN_ADDRESS.search(v):
        raise Reject("email is not a bare address (a display name, list or comment around it?)")
    if not _EMAIL.match(v):
        raise Reject("email is not a valid address")
    return v


# ---- Meta
# Meta Custom Audiences (customer-list audiences). Rules from the hashing table of the
# custom-audiences guide,
# https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences#hash,
# and the customer information parameters page,
# https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters:
# * EMAIL: trim, lower-case. Dots are kept (removing gmail dots is Google's rule, not Meta's).
# * PHONE: digits only, with the country code, no leading "+" or zeros ("16505551234").
# * FN / LN: lower-case, no punctuation; UTF-8 letters are kept ("josé" stays "josé", the SDK's
#   own normaliser would send "jos"); spaces removed.
# * CT: lower-case letters only, no punctuation, no spaces. ST: lower-case letters only (the
#   two-letter code for US states). ZIP: lower-case, no spaces or dashes; US: first 5 digits.
# * COUNTRY: ISO-3166-1 alpha-2, lower-case.
# * DOBY / DOBM / DOBD: "YYYY" / "MM" / "DD". GEN: "m" or "f".
# * EXTERN_ID: the advertiser's own id, trimmed, sent unhashed.
# Everything but EXTERN_ID is then SHA-256 hex; a value already hashed passes through.

_META_DOB = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ].*)?$")
_META_GENDER = {"m": "m", "male": "m", "man": "m", "f": "f", "female": "f", "woman": "f"}
_META_COUNTRY_NAMES = {"usa": "us", "unitedstates": "us", "unitedstatesofamerica": "us",
                       "uk": "gb", "unitedkingdom": "gb", "greatbritain": "gb"}


def _letters(raw: str | None) -> str:
    """Lower-case, NFC, letters only (any script): punctuation, digits and spaces removed."""
    text = unicodedata.normalize("NFC", (raw or "").strip().lower())
    return "".join(ch for ch in text if ch.isalpha())


def meta_email(raw: str) -> str:
    """Trimmed, lower-cased email (dots kept); Reject when not an address."""
    return basic_email(raw)


def meta_country(raw: str) -> str:
    """ISO-3166-1 alpha-2, lower-case (``us``; ``UK`` is ``gb``); a few common names are
    accepted; a code ISO has not assigned is refused."""
    v = _letters(raw)
    v = _META_COUNTRY_NAMES.get(v, v)
    if len(v) != 2 or not v.isascii():
        raise Reject("country is not a two-letter ISO-3166-1 code")
    return iso_country(v).lower()


def meta_phone(raw: str, country: str | None, region: str | None) -> str:
    """Digits with the country code and no "+": E.164 read in the contact's country when
    known, else ``region``."""
    try:
        cc = meta_country(country).upper() if country else None
    except Reject:
        cc = None
    return e164(raw, cc, region).lstrip("+")


def _meta_required(value: str, what: str) -> str:
    if not value:
        raise Reject(f"{what} has no letters")
    return value


def meta_name(raw: str, what: str = "name") -> str:
    """First or last name: lower-case UTF-8 letters, punctuation and spaces removed."""
    return _meta_required(_letters(raw), what)


def meta_city(raw: str) -> str:
    return _meta_required(_letters(raw), "city")


_US_STATES = {  # full name (letters only) -> two-letter ANSI code
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota":
    "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada":
    "nv", "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon":
    "or", "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota":
    "sd", "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
    "puertorico": "pr",
}


def meta_state(raw: str, country: str | None = None) -> str:
    """Lower-case letters only; a US state's full name becomes its two-letter ANSI code."""
    v = _meta_required(_letters(raw), "state")
    us = not country or _letters(country) in ("us", "usa", "unitedstates")
    return _US_STATES.get(v, v) if us else v


def meta_zip(raw: str, country: str | None) -> str:
    """Lower-case without spaces or dashes; US (or unknown country with a US form): 5 digits."""
    v = re.sub(r"[\s-]", "", (raw or "").strip().lower())
    if not v:
        raise Reject("zip is empty")
    us = (country or "").strip().lower() in ("us", "usa", "united states")
    if us or (not country and re.fullmatch(r"\d{5}(\d{4})?", v)):
        if not re.fullmatch(r"\d{5}(\d{4})?", v):
            raise Reject("US zip is not 5 digits or ZIP+4")
        return v[:5]
    return v


def meta_dob(raw: str) -> tuple[str, str, str]:
    """ISO date -> ("YYYY", "MM", "DD"); Reject when not a real date."""
    m = _META_DOB.match((raw or "").strip())
    if not m:
        raise Reject("date of birth is not an ISO date")
    y, mo, d = (int(g) for g in m.groups())
    try:
        date(y, mo, d)
    except ValueError:
        raise Reject("date of birth is not a real date") from None
    return f"{y:04d}", f"{mo:02d}", f"{d:02d}"


def meta_gender(raw: str) -> str:
    v = _META_GENDER.get((raw or "").strip().lower())
    if v is None:
        raise Reject("gender is not m or f")
    return v


def meta_extern_id(raw: str) -> str:
    v = (raw or "").strip()
    if not v:
        raise Reject("external id is empty")
    return v


# ---- Google
# Google Customer Match through the Data Manager API. Rules from the formatting guide,
# https://developers.google.com/data-manager/api/devguides/concepts/formatting, and the
# AddressInfo reference, https://developers.google.com/data-manager/api/reference/rest/v1/UserData:
# * email_address: lower-case; trim leading, trailing *and intermediate* whitespace; for
#   gmail.com / googlemail.com only, remove every "." before the @ and drop a "+" and all that
#   follows it in the local part (other domains keep dots and plus signs); SHA-256.
# * phone_number: E.164 with "+" and the country code, digits only after it; SHA-256.
# * given_name / family_name: lower-case, no prefixes (Mrs.) or suffixes (Jr.), no
#   punctuation, trimmed; SHA-256. The guide names only these two as examples; the lists
#   below are those of Google's own Data Manager formatter (googleads/data-manager-java,
#   UserDataFormatter: prefixes mr, mrs, ms, dr; suffixes jr, sr, 2nd, 3rd, ii, iii, iv, v,
#   vi, cpa, dc, dds, vm, jd, md, phd), plus the common British and honorific forms (miss,
#   mx, prof, sir, hon, rev, jnr, snr, esq) and roman numerals up to x. Names are NFC first,
#   so a decomposed accent (``e`` + U+0301) is the same letter as the composed one.
# * region_code: ISO-3166-1 alpha-2, trimmed, NOT hashed; UK is sent as GB; a code ISO has
#   not assigned is refused (``iso_country``).
# * postal_code: trimmed, NOT hashed; US: 5 digits or 5 digits plus a 4-digit extension;
#   other countries: no extension.
# An address is matched as a whole: given name, family name, region and postal code are all
# required (AddressInfo reference).

_GOOGLE_MAIL_DOMAINS = ("gmail.com", "googlemail.com")
_NAME_PREFIXES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "hon",
                            "rev"})
_NAME_SUFFIXES = frozenset({"jr", "sr", "jnr", "snr", "2nd", "3rd", "ii", "iii", "iv", "v",
                            "vi", "vii", "viii", "ix", "x", "cpa", "dc", "dds", "vm", "jd",
                            "md", "phd", "esq"})
_US_ZIP = re.compile(r"^(\d{5})(?:[-\s]?(\d{4}))?$")


def google_email(raw: str) -> str:
    """Email per Google's guide (see the section header); Reject when not an address (a
    display name is refused before whitespace is removed, never glued to the address)."""
    text = (raw or "").strip()
    if _NOT_AN_ADDRESS.search(text):
        raise Reject("email is not a bare address (a display name, list or comment around it?)")
    v = basic_email(re.sub(r"\s+", "", text))
    local, _, domain = v.rpartition("@")
    if domain in _GOOGLE_MAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            raise Reject("email is not a valid address")
    return f"{local}@{domain}"


def google_phone(raw: str, country: str | None, region: str | None) -> str:
    """E.164, read in the contact's country when known, else ``region``."""
    return e164(raw, country, region)


def _name_words(raw: str) -> list[str]:
    text = unicodedata.normalize("NFC", raw or "").lower()
    return re.sub(r"[^\w\s]|_", "", text).split()


def google_given_name(raw: str) -> str:
    """Lower-case first name without punctuation or a leading title (Mrs., Dr.)."""
    words = _name_words(raw)
    while len(words) > 1 and words[0] in _NAME_PREFIXES:
        words.pop(0)
    if not words:
        raise Reject("first name is empty")
    return " ".join(words)


def google_family_name(raw: str) -> str:
    """Lower-case last name without punctuation or a trailing suffix (Jr., III)."""
    words = _name_words(raw)
    while len(words) > 1 and words[-1] in _NAME_SUFFIXES:
        words.pop()
    if not words:
        raise Reject("last name is empty")
    return " ".join(words)


def google_region(raw: str) -> str:
    """ISO-3166-1 alpha-2 region code (upper case, ``UK`` -> ``GB``), sent unhashed."""
    return iso_country(raw)


def google_postal(raw: str, region: str) -> str:
    """Postal code, sent unhashed: US 5 digits or ZIP+4 (``12345-6789``); elsewhere the code
    trimmed, inner spaces collapsed and upper-cased (``SW1A 1AA``)."""
    v = " ".join((raw or "").split())
    if not v:
        raise Reject("postal code is empty")
    if region == "US":
        m = _US_ZIP.match(v)
        if not m:
            raise Reject("US postal code is not 5 digits or ZIP+4")
        return f"{m.group(1)}-{m.group(2)}" if m.group(2) else m.group(1)
    return v.upper()
