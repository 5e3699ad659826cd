"""Identifier normalisation and hashing for ad platforms: crmsync's own, one module.

Shared primitives first, then one section per platform (Meta, Google) with that platform's
rules, each citing the doc it follows. Every function takes a raw value and returns the
normalised string (not yet hashed) or raises ``Reject`` with the reason.
"""

from __future__ import annotations

import hashlib
import re

import phonenumbers

from .errors import Reject

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256(value: str) -> bool:
    """A value already hashed (64 hex characters) passes through unchanged."""
    return bool(_SHA256.match(value.strip().lower()))


def hash_normalised(value: str) -> str:
    """SHA-256 hex of an already normalised value; pre-hashed values pass through."""
    v = value.strip().lower()
    return v if is_sha256(v) else sha256_hex(value)


def e164(raw: str, country: str | None, region: str | None) -> str:
    """A phone number in E.164 (``+14155550123``), read in the contact's country when known,
    else in ``region``. Raises Reject when it is not a valid number."""
    text = (raw or "").strip()
    if not text:
        raise Reject("phone is empty")
    regions = [r for r in ((country or "").strip().upper()[:2] or None, region) if r]
    for reg in regions or [None]:
        try:
            num = phonenumbers.parse(text, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    raise Reject("phone is not a valid number")


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def basic_email(raw: str) -> str:
    """Trimmed, lower-cased email; Reject when it is not of the form local@domain.tld."""
    v = (raw or "").strip().lower()
    if not _EMAIL.match(v):
        raise Reject("email is not a valid address")
    return v
