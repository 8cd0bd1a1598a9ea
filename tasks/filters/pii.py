"""PII redaction: e-mail addresses, IP addresses and phone numbers become placeholders.

An *edit step* (see tasks/filters/base.py): it rewrites ``text`` and counts what it replaced;
it never rejects a document. Matching runs in Arrow's RE2 kernels over the whole batch (no
per-document Python), so it costs little next to the quality filters.

Patterns (deliberately conservative: a missed number is better than a mangled date):

- e-mail: ``local@domain.tld`` with an alphabetic TLD of 2+ letters;
- IPv4: four dot-separated 0-255 octets as a whole token; IPv6: the full eight-group form and
  ``::``-compressed forms with at least three groups;
- phone: North-American ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567`` shapes, and
  international numbers that start with ``+`` and a country code (``+44 20 7946 0958``).

Score columns: ``pii_emails``, ``pii_ips``, ``pii_phones`` (int32: replacements per doc).
"""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters.base import FilterConfig, score_schema
from tasks.identity import SCORED

NAME = "pii"
SCORE_VERSION = 1

EMAIL = r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}\b"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = rf"\b(?:{_H}:){{7}}{_H}\b|\b(?:{_H}:){{1,6}}:(?:{_H}:){{0,5}}{_H}\b"
IP = f"{_IPV4}|{_IPV6}"
PHONE = (r"(?:\(\d{3}\)\s?|\b\d{3}[\-.\s])\d{3}[\-.]\d{4}\b"
         r"|\+\d{1,3}[\s.\-]?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]\d{2,4}){1,4}\b")

SCORE_SCHEMA = score_schema(NAME, emails=pa.int32(), ips=pa.int32(), phones=pa.int32())


class Config(FilterConfig):
    """What to redact and the placeholders; all change the text (score parameters)."""


    emails: Annotated[bool, SCORED] = Field(True, description="redact e-mail addresses (score)")
    ips: Annotated[bool, SCORED] = Field(True, description="redact IPv4/IPv6 addresses (score)")
    phones: Annotated[bool, SCORED] = Field(True, description="redact phone numbers (score)")
    email_placeholder: Annotated[str, SCORED] = Field(
        "<EMAIL>", description="replaces an e-mail address (score)")
    ip_placeholder: Annotated[str, SCORED] = Field(
        "<IP>", description="replaces an IP address (score)")
    phone_placeholder: Annotated[str, SCORED] = Field(
        "<PHONE>", description="replaces a phone number (score)")


def edit(table: pa.Table, config: FilterConfig) -> tuple[pa.Array, pa.Table]:
    """(redacted text, counts), one row per input row."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.edit needs a {__name__}.Config, got {type(config).__name__}")
    text = table.column("text")
    counts = []
    # e-mails first: their domains must not be taken for IPs, nor digits in them for phones
    for on, pattern, placeholder in (
        (config.emails, EMAIL, config.email_placeholder),
        (config.ips, IP, config.ip_placeholder),
        (config.phones, PHONE, config.phone_placeholder),
    ):
        if on:
            n = pc.count_substring_regex(text, pattern)
            text = pc.replace_substring_regex(text, pattern, placeholder)
        else:
            n = pa.nulls(len(table), pa.int32())
        counts.append(pc.cast(pc.fill_null(n, 0), pa.int32()))
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    scores = pa.Table.from_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
                                   for c in counts], schema=SCORE_SCHEMA)
    return pc.cast(text, pa.large_string()), scores


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    return edit(table, config)[1]


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    return {}  # redaction never rejects
