"""Keyed hashes of identifiers: how a person is found without keeping their identifiers.

The pii stage replaces what it finds with placeholders and keeps `HMAC(key, type:normalized
value)` in `silver.pii_index`; subject ids become such hashes in silver; a data subject request
computes the same hashes from the identifiers it is given. Both sides normalize alike (e-mails
lowercased, phone numbers in E.164, card and SSN digits, IBAN letters and digits, IPs
compressed), so another spelling of a value finds the same rows.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

import phonenumbers

SUBJECT_ID = "SUBJECT_ID"


def normalize_value(entity_type: str, value: str, phone_region: str = "US") -> str:
    """The canonical form a value is keyed by, so that other spellings of it find the same rows."""
    text = value.strip()
    if entity_type == "EMAIL_ADDRESS":
        return text.lower()
    if entity_type == "PHONE_NUMBER":
        return e164(text, phone_region)
    if entity_type in ("CREDIT_CARD", "US_SSN"):
        return re.sub(r"\D", "", text)
    if entity_type == "IBAN_CODE":
        return re.sub(r"[^0-9A-Za-z]", "", text).upper()
    if entity_type == "IP_ADDRESS":
        try:
            return ipaddress.ip_address(text).compressed
        except ValueError:
            return text.lower()
    return " ".join(text.casefold().split())


def e164(number: str, region: str = "US") -> str:
    """A phone number in E.164 (`+16465550199`); digits only where it cannot be parsed."""
    try:
        parsed = phonenumbers.parse(number, region)
        if phonenumbers.is_possible_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        pass
    digits = re.sub(r"\D", "", number)
    return ("+" if number.strip().startswith("+") else "") + digits


def value_hmac(key: bytes, entity_type: str, value: str, phone_region: str = "US") -> str:
    """HMAC-SHA256 of `type:normalized value` under the lakehouse's PII key, hex."""
    normalized = normalize_value(entity_type, value, phone_region)
    return hmac.new(key, f"{entity_type}:{normalized}".encode(), hashlib.sha256).hexdigest()


def subject_key(value: str) -> tuple[str, str]:
    """How a subject id is indexed: e-mail addresses and phone numbers as such, anything else as SUBJECT_ID."""
    text = value.strip()
    if EMAIL_SHAPE.fullmatch(text):
        return "EMAIL_ADDRESS", text
    if PHONE_SHAPE.fullmatch(text) and 7 <= sum(c.isdigit() for c in text) <= 15:
        return "PHONE_NUMBER", text
    return SUBJECT_ID, text


EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE_SHAPE = re.compile(r"\+?[\d\s().-]+")
