"""Id lists from a user: ``read_ids_file`` (a path), ``parse_ids_bytes`` (an upload: UTF-8, or UTF-16 with a BOM)
or ``parse_ids_text`` (pasted text), each given the name the user knows the input by; an error names it and the
line. Caps, checked before parsing: ``MAX_IDS_BYTES`` of text, ``MAX_IDS`` ids, ``MAX_ID_DIGITS`` digits per id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from core.errors import shown

from .requests import _INT, MAX_ID_DIGITS, ForgetRequestError

MAX_IDS_BYTES = 16 * 2**20  # an id file or pasted text: 16 MiB holds well over a million ids
MAX_IDS = 2_000_000  # more ids than any built-in training set has samples

_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_SEPARATORS = re.compile(r"[,;\s]+")
_LINES = re.compile(r"\r\n|\r|\n")
_DELIMITERS = (",", ";", "\t", "|")
_ID_COLUMNS = ("id", "ids", "sample_id", "index")


def _unquote(token: str) -> str:
    return token.strip().strip("\"'").strip()


def _add(out: IdList, value: int, line: int) -> None:
    if len(out) >= MAX_IDS:
        raise ForgetRequestError(source=out.source, where=f"line {line}",
                                 found=f"more than {MAX_IDS:,} ids", expected=f"at most {MAX_IDS:,} ids",
                                 fix="forget fewer samples, or whole classes with a class request")
    out.append(value)
    out.lines.append(line)


def _parse_int(token: str, line: int, source: str = "") -> int:
    where = f"line {line}"
    digits = token.lstrip("+-")
    if _INT.fullmatch(token) and len(digits) > MAX_ID_DIGITS:
        raise ForgetRequestError(source=source, where=where,
                                 found=f"'{token[:12]}…' is a {len(digits):,}-digit number, far beyond any "
                                       "training id",
                                 expected=f"an id of at most {MAX_ID_DIGITS} digits (a row of the training set)",
                                 fix="check that the column holds training ids, not hashes or timestamps")
    if _INT.fullmatch(token):
        return int(token)
    if _NUMBER.fullmatch(token):
        raise ForgetRequestError(source=source, where=where, found=f"{shown(token)} is a decimal number",
                                 expected="whole-number training ids such as 0, 17, 2048",
                                 fix="list the ids of the samples (rows of the training set), without decimals")
    raise ForgetRequestError(source=source, where=where, found=f"{shown(token)} is not an integer id",
                             expected="whole-number training ids separated by commas, spaces or new lines",
                             fix="remove the text, or give the CSV a header line naming its id column")


def _too_big(source: str, size: int) -> ForgetRequestError:
    return ForgetRequestError(source=source, found=f"{size:,} bytes",
                              expected=f"an id list of at most {MAX_IDS_BYTES:,} bytes",
                              fix="forget fewer samples, or whole classes with a class request")


def _not_text(source: str, data: bytes, exc: UnicodeDecodeError, encoding: str) -> ForgetRequestError:
    line = data.count(b"\n", 0, exc.start) + 1
    return ForgetRequestError(source=source, where=f"line {line}",
                              found=f"byte 0x{data[exc.start]:02x} is not {encoding} text",
                              expected="a UTF-8 text file of training ids",
                              fix="save the file as UTF-8 (in Excel: CSV UTF-8), or paste the ids instead")


class IdList(list):
    """Ids parsed from a user's text: a plain list of ints that also knows the text's name (``source``) and
    the line each id came from (``lines``), so that ``request_ids`` can point at the offending line."""

    def __init__(self, ids: Iterable[int] = (), lines: Iterable[int] = (), source: str = "") -> None:
        super().__init__(ids)
        self.lines = list(lines)
        self.source = source

    def line_of(self, value: int) -> int | None:
        """The first line that holds ``value``."""
        for v, line in zip(self, self.lines):
            if v == value:
                return line
        return None


def read_ids_file(path: str | Path, source_name: str | None = None) -> IdList:
    """Ids from a CSV/TXT file on disk (see ``parse_ids_bytes``); ``source_name`` is what messages call it."""
    path = Path(path)
    where = source_name or path.name
    try:
        size = path.stat().st_size
        if size > MAX_IDS_BYTES:
            raise _too_big(where, size)
        data = path.read_bytes()
    except OSError as exc:
        raise ForgetRequestError(source=where, found=f"cannot be read ({exc.strerror or exc})",
                                 expected="a readable CSV or TXT file of training ids",
                                 fix="check the path and the file's permissions") from exc
    return parse_ids_bytes(data, where)


def parse_ids_bytes(data: bytes, source_name: str) -> IdList:
    """Ids from an uploaded file's bytes: UTF-8 (with or without a BOM) or UTF-16 with a BOM, at most
    ``MAX_IDS_BYTES``; then ``parse_ids_text``. ``source_name`` is the user's file name, for messages."""
    if len(data) > MAX_IDS_BYTES:
        raise _too_big(source_name, len(data))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # what Excel's "Unicode text" writes
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise _not_text(source_name, data, exc, "UTF-16") from exc
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_text(source_name, data, exc, "UTF-8") from exc
    return parse_ids_text(text, source_name)


def parse_ids_text(text: str, source_name: str = "the pasted ids") -> IdList:
    """Ids from pasted text or a file's text, with ``source_name`` naming it in messages.

    Accepts whole numbers separated by commas, semicolons, whitespace or newlines, or a CSV whose first line
    is a header (no number in it, some letter): the ``id`` column is used if there is one, else the first
    column. Order and duplicates are kept (``request_ids`` drops and counts duplicates). A token that is not a
    whole number, a decimal, or a number of more than ``MAX_ID_DIGITS`` digits raises with its line.
    """
    if len(text) > MAX_IDS_BYTES:
        raise _too_big(source_name, len(text))
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ForgetRequestError(source=source_name, where=f"line {line}", found="binary data (a NUL byte)",
                                 expected="a text file of training ids",
                                 fix="upload the CSV or TXT file that lists the ids, not a binary file")
    lines = _LINES.split(text.lstrip("\ufeff"))
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    out = IdList(source=source_name)
    if first is None:
        return out
    delimiter = max(_DELIMITERS, key=lines[first].count)
    header = [_unquote(f) for f in lines[first].split(delimiter)]
    is_header = (not any(_NUMBER.fullmatch(f) for f in header)
                 and any(c.isalpha() for c in lines[first]))
    if is_header and len(header) > 1:
        lower = [h.lower() for h in header]
        column = next((lower.index(name) for name in _ID_COLUMNS if name in lower), 0)
        for number, line in enumerate(lines[first + 1:], start=first + 2):
            if not line.strip():
                continue
            fields = line.split(delimiter)
            if column >= len(fields):
                raise ForgetRequestError(
                    source=source_name, where=f"line {number}",
                    found=f"{shown(line.strip())} has no column {header[column]!r} (column {column + 1})",
                    expected=f"{len(header)} fields separated by {delimiter!r}, as in the header line",
                    fix="give every line a value in the id column")
            _add(out, _parse_int(_unquote(fields[column]), number, source_name), number)
    else:
        start = first + 1 if is_header else 0
        for number, line in enumerate(lines[start:], start=start + 1):
            for tok in _SEPARATORS.split(line):
                if _unquote(tok):
                    _add(out, _parse_int(_unquote(tok), number, source_name), number)
    if is_header and not out:
        raise ForgetRequestError(source=source_name, where=f"line {first + 1}",
                                 found=f"a header line {shown(lines[first].strip())} and no ids below it",
                                 expected="training ids (whole numbers) below the header",
                                 fix="add the ids, one per line, or remove the header line")
    return out
