"""Reading a subscriber CSV import one row at a time (pure: the caller does the I/O).

The caller opens the file in binary and hands over its text decoded as UTF-8
(``utf-8-sig``, so a BOM is dropped) with ``errors="surrogateescape"`` and
``newline=""``: undecodable bytes then arrive as lone surrogates
(U+DC80-U+DCFF), which lets one bad row be reported while the rest of the file
goes on. Nothing here holds more than one row, except the set of addresses
already seen (needed to refuse in-file duplicates): about 110 bytes per
distinct address.

Rules:

1. The first row is the header: names are trimmed and compared case-insensitively;
   ``email`` is required, ``name`` optional, every other named column becomes a
   string attribute (an empty cell is omitted). An unusable header raises
   InvalidInput before any row is read.
2. Each data row becomes a ``Row`` or a ``RowError`` (line number, email as
   given, reason). Errors never stop the reading.
3. The first occurrence of an address wins; later ones (also when differing
   only in case) are errors.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald.errors import InvalidInput

if TYPE_CHECKING:
    from _csv import Reader

MAX_EMAIL_CHARS = 320
MAX_NAME_CHARS = 255
MAX_ATTRIB_CHARS = 4096
MAX_COLUMNS = 256
# Longer "email as given" values are cut in the error report to keep it readable.
MAX_REPORT_CHARS = 500
# A spreadsheet evaluates a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
REPORT_COLUMNS = ("line", "email", "error")

Normaliser = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Header:
    """Where each piece of a data row is: column indexes into the row's fields."""

    width: int
    email_index: int
    name_index: int | None
    attrib_columns: tuple[tuple[int, str], ...]


@dataclass(frozen=True, slots=True)
class Row:
    """A good data row. ``name`` is None when the file gives none (keep the stored one)."""

    line: int
    given: str
    email: str
    name: str | None
    attribs: dict[str, str]


@dataclass(frozen=True, slots=True)
class RowError:
    """A refused data row: its first line number, the email cell as given, the reason."""

    line: int
    given: str
    error: str


def parse_header(fields: Sequence[str]) -> Header:
    """Read the header row. Raises InvalidInput if it is unusable (no email column, …)."""
    if any(not _is_clean_text(f) for f in fields):
        raise InvalidInput("the file is not a UTF-8 CSV file (its header row is not text)")
    if len(fields) > MAX_COLUMNS:
        raise InvalidInput(f"the file has {len(fields)} columns; at most {MAX_COLUMNS} are allowed")
    names = [f.strip().lower() for f in fields]
    seen: set[str] = set()
    for name in names:
        if name in seen and name:
            raise InvalidInput(f"the column {name!r} appears twice in the header row")
        seen.add(name)
    if "email" not in seen:
        raise InvalidInput("the file has no 'email' column in its header row")
    return Header(
        width=len(names),
        email_index=names.index("email"),
        name_index=names.index("name") if "name" in seen else None,
        # Unnamed columns (a trailing comma in the header, say) are ignored.
        attrib_columns=tuple(
            (i, n) for i, n in enumerate(names) if n and n not in ("email", "name")
        ),
    )


class RowChecker:
    """Turns the fields of one data row into a Row or a RowError.

    Side effect: remembers every good address, to refuse later duplicates.
    """

    def __init__(self, header: Header, normalise: Normaliser) -> None:
        self._header = header
        self._normalise = normalise
        self._seen: set[str] = set()

    def check(self, line: int, fields: list[str]) -> Row | RowError:
        """Checks in order: encoding, NUL, field count, lengths, address, duplicate."""
        h = self._header
        given = fields[h.email_index] if len(fields) > h.email_index else ""
        problem = _structural_problem(h, fields)
        if problem is not None:
            return RowError(line, given, problem)
        try:
            email = self._normalise(given.strip())
        except InvalidInput as exc:
            return RowError(line, given, exc.message)
        if email in self._seen:
            return RowError(line, given, "duplicate: the address appears earlier in the file")
        self._seen.add(email)
        name = fields[h.name_index].strip() if h.name_index is not None else ""
        attribs = {key: fields[i] for i, key in h.attrib_columns if fields[i]}
        return Row(line, given, email, name or None, attribs)


def _structural_problem(header: Header, fields: list[str]) -> str | None:
    joined = "".join(fields)
    if not _is_clean_unicode(joined):
        return "invalid UTF-8 encoding"
    if "\x00" in joined:
        return "NUL byte in the row"
    if len(fields) != header.width:
        return f"wrong number of fields: expected {header.width}, found {len(fields)}"
    if len(fields[header.email_index]) > MAX_EMAIL_CHARS:
        return f"field too long: email (at most {MAX_EMAIL_CHARS} characters)"
    if header.name_index is not None and len(fields[header.name_index]) > MAX_NAME_CHARS:
        return f"field too long: name (at most {MAX_NAME_CHARS} characters)"
    for i, key in header.attrib_columns:
        if len(fields[i]) > MAX_ATTRIB_CHARS:
            return f"field too long: {key} (at most {MAX_ATTRIB_CHARS} characters)"
    return None


def read_rows(text_lines: Iterable[str], *, normalise: Normaliser) -> Iterator[Row | RowError]:
    """Parse the header now, then return a lazy iterator over the data rows.

    ``text_lines`` is the decoded file (see the module docstring); ``normalise``
    maps an address to its stored form or raises InvalidInput. Blank lines are
    skipped. Raises InvalidInput at once if the file is empty or its header is
    unusable.
    """
    reader = csv.reader(text_lines, strict=False)
    try:
        first = next(reader, None)
    except csv.Error as exc:
        raise InvalidInput(f"the file is not a readable CSV file: {exc}") from exc
    if not first:
        raise InvalidInput("the file is empty: a header row with an 'email' column is needed")
    checker = RowChecker(parse_header(first), normalise)
    return _data_rows(reader, checker)


def _data_rows(reader: Reader, checker: RowChecker) -> Iterator[Row | RowError]:
    # A record may span several physical lines (quoted newlines): report where it starts.
    done = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The csv module resumes at the next line after an error.
            yield RowError(done + 1, "", _csv_error_text(exc))
            done = reader.line_num
            continue
        start, done = done + 1, reader.line_num
        if fields:
            yield checker.check(start, fields)


def _csv_error_text(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return "field too long"
    return f"malformed CSV: {exc}"


def merge_subscriber(
    row: Row, old_name: str, old_attribs: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """The (name, attribs) a row gives an existing subscriber, or None if nothing changes.

    Columns in the file overwrite those attribute keys; other keys are kept. A row
    without a name keeps the stored name.
    """
    name = old_name if row.name is None else row.name
    attribs = {**old_attribs, **row.attribs}
    if name == old_name and attribs == old_attribs:
        return None
    return name, attribs


def report_row(error: RowError) -> tuple[str, str, str]:
    """The error report line for a refused row, safe to open in a spreadsheet."""
    return (str(error.line), report_cell(error.given), report_cell(error.error))


def report_cell(value: str) -> str:
    """Make a cell safe for a spreadsheet and for UTF-8.

    Undecodable bytes and NULs become U+FFFD, long values are cut, and a value a
    spreadsheet would run as a formula is prefixed with a single quote.
    """
    try:
        text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no decoder produced; show it escaped
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    text = text.replace("\x00", "\ufffd")
    if len(text) > MAX_REPORT_CHARS:
        text = text[:MAX_REPORT_CHARS] + "…"
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _is_clean_text(value: str) -> bool:
    return "\x00" not in value and _is_clean_unicode(value)


def _is_clean_unicode(value: str) -> bool:
    """False if the text holds a lone surrogate, i.e. came from undecodable bytes."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
