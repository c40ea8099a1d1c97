"""Decode a source file's bytes: UTF-8, UTF-16/32 with a byte-order mark, or Latin-1 (Windows-1252).

Files written on Windows are often UTF-16 (with a BOM) or Latin-1; both are text and are converted
to UTF-8, the encoding is recorded so the manifest can count the conversions. Bytes that are none of
these (binary data, or a CJK code page that would decode as Latin-1 mojibake) are refused.
"""

from __future__ import annotations

import codecs
import re

from codetune.collect.filters import is_binary

BINARY_SNIFF = 8192
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
# Latin-1 text has accented letters alone among ASCII ("café", "Größe"); a multi-byte code page
# read as Latin-1 makes runs of symbols ("ÄãºÃ¼").
_LATIN_MIN_LETTERS = 0.6
_LATIN_MAX_MEAN_RUN = 2.0


def _plausible_latin(text: str) -> bool:
    runs = _NON_ASCII_RUN.findall(text)
    chars = "".join(runs)
    if not chars or any("\x80" <= c <= "\x9f" for c in chars):
        return False
    letters = sum(1 for c in chars if c.isalpha())
    return letters >= _LATIN_MIN_LETTERS * len(chars) and len(chars) / len(runs) <= _LATIN_MAX_MEAN_RUN


def decode_source(data: bytes) -> tuple[str | None, str]:
    """(text, encoding) of a file's bytes; text None with the reason (``binary`` or ``undecodable``)
    when it is not text."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)  # the codec reads and drops the BOM
            except UnicodeDecodeError:
                return None, "undecodable"
            text = text.removeprefix("\ufeff")
            if is_binary(text[:BINARY_SNIFF].encode("utf-8")):
                return None, "binary"
            return text, encoding
    if is_binary(data[:BINARY_SNIFF]):
        return None, "binary"
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None, "undecodable"
    return (text, "latin-1") if _plausible_latin(text) else (None, "undecodable")
