"""Herald's backup format (pure: the caller does the file and database I/O).

A backup is one uncompressed tar archive named ``herald-backup-YYYYmmddTHHMMSSZ.tar``:

1. ``manifest.json`` (the first member): format version, Herald version,
   the schema (Alembic) revision the database was at, creation time, source
   backend, and per table its columns with their value kinds, row count,
   member name, size and SHA-256.
2. ``tables/<name>.jsonl.gz``: one gzip file per table, in dependency order
   (parents before children). Each line is a JSON array of one row's values
   in the manifest's column order, encoded by kind (below), so a row reads
   back identically on SQLite and PostgreSQL.

Value kinds and their JSON form (NULL is always ``null``):

=========  =============================================================
integer    a JSON integer (any size)
float      a JSON number (shortest repr, exact); ``"NaN"``, ``"Infinity"``,
           ``"-Infinity"`` for the non-finite values
boolean    ``true`` / ``false``
string     a JSON string (non-ASCII escaped, so lone surrogates survive)
datetime   ISO 8601 in UTC with offset, microseconds kept
           (``2024-05-01T12:00:00.000001+00:00``); a naive value is UTC
date       ISO 8601 calendar date (``2024-05-01``)
json       the JSON value itself (SQL NULL and a JSON ``null`` both read
           back as None, so both are written as ``null``)
bytes      base64 (standard alphabet, padded)
=========  =============================================================
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from herald.errors import InvalidInput

FORMAT_NAME = "herald-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
KINDS = ("integer", "float", "boolean", "string", "datetime", "date", "json", "bytes")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

Codec = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of a backed-up table and the kind its values are encoded as."""

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class TableEntry:
    """One table file of the archive, as the manifest records it."""

    name: str
    columns: tuple[ColumnSpec, ...]
    rows: int
    file: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What ``manifest.json`` says; ``tables`` is in restore (dependency) order."""

    herald_version: str
    schema_revision: str
    created_at: datetime
    backend: str
    tables: tuple[TableEntry, ...]
    format_version: int = FORMAT_VERSION


def backup_filename(created_at: datetime) -> str:
    """``herald-backup-YYYYmmddTHHMMSSZ.tar`` for a creation time (taken as UTC)."""
    return f"herald-backup-{_as_utc(created_at):%Y%m%dT%H%M%SZ}.tar"


def table_file(table: str) -> str:
    """Archive member name of a table's file."""
    return f"tables/{table}.jsonl.gz"


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _encode_float(value: Any) -> Any:
    number = float(value)
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def _decode_float(value: Any) -> float:
    if isinstance(value, str):
        return _NON_FINITE[value]
    if type(value) not in (int, float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _encode_datetime(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive values; Herald stores UTC
        return value.isoformat(timespec="microseconds") + "+00:00"
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def _decode_datetime(value: str) -> datetime:
    if type(value) is not str:
        raise TypeError(f"{value!r} is not a timestamp")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is UTC else _as_utc(parsed)


def _decode_date(value: str) -> date:
    if type(value) is not str:
        raise TypeError(f"{value!r} is not a date")
    return date.fromisoformat(value)


def _identity(value: Any) -> Any:
    return value


def _strict(kind: type) -> Codec:
    """A decoder accepting only JSON values of exactly ``kind`` (no "1" for 1, no 1 for True)."""

    def decode(value: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"{value!r} is not a {kind.__name__}")
        return value

    return decode


_ENCODERS: dict[str, Codec] = {
    "integer": int,
    "float": _encode_float,
    "boolean": bool,
    "string": str,
    "datetime": _encode_datetime,
    "date": date.isoformat,
    "json": _identity,
    "bytes": lambda v: base64.b64encode(bytes(v)).decode("ascii"),
}
# Kinds whose Python values JSON cannot carry as they are.
_CONVERTED = frozenset({"float", "datetime", "date", "bytes"})
_DECODERS: dict[str, Codec] = {
    "integer": _strict(int),
    "float": _decode_float,
    "boolean": _strict(bool),
    "string": _strict(str),
    "datetime": _decode_datetime,
    "date": _decode_date,
    "json": _identity,
    "bytes": lambda v: base64.b64decode(v, validate=True),
}


def encode_value(kind: str, value: Any) -> Any:
    """The JSON-ready form of ``value`` for a column of ``kind`` (None stays None)."""
    return None if value is None else _ENCODERS[kind](value)


def decode_value(kind: str, value: Any) -> Any:
    """The Python value of a JSON-decoded ``value`` of ``kind`` (None stays None)."""
    return None if value is None else _DECODERS[kind](value)


class RowCodec:
    """Encodes rows of one table to JSON lines and back, by the columns' kinds.

    Works a batch of rows at a time (one ``json.loads`` per batch) and
    converts only the values whose kind needs it: a backup or restore spends
    most of its time here.
    """

    def __init__(self, columns: Sequence[ColumnSpec]) -> None:
        for col in columns:
            if col.kind not in KINDS:
                raise InvalidInput(f"unknown value kind {col.kind!r} of column {col.name!r}")
        self.columns = tuple(columns)
        self._width = len(columns)
        kinds = [c.kind for c in columns]
        self._enc = [(i, _ENCODERS[k]) for i, k in enumerate(kinds) if k in _CONVERTED]
        self._dec = [(i, _DECODERS[k]) for i, k in enumerate(kinds) if k != "json"]
        self._dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

    def encode(self, row: Sequence[Any]) -> bytes:
        """One line (ending in ``\\n``) for a row given in column order."""
        return self.encode_many([row])

    def encode_many(self, rows: Iterable[Sequence[Any]]) -> bytes:
        """Lines (each ending in ``\\n``) for rows given in column order."""
        lines = []
        for row in rows:
            values = list(row)
            if len(values) != self._width:
                raise ValueError(f"a row of {len(values)} values for {self._width} columns")
            for i, convert in self._enc:
                if values[i] is not None:
                    values[i] = convert(values[i])
            lines.append(self._dumps(values))
        lines.append("")
        return "\n".join(lines).encode("ascii")

    def decode(self, line: bytes | str) -> tuple[Any, ...]:
        """The row of one line. Raises InvalidInput if the line is not a row of this table."""
        [row] = self.decode_many([line if isinstance(line, bytes) else line.encode()])
        return row

    def decode_many(self, lines: Sequence[bytes]) -> list[tuple[Any, ...]]:
        """The rows of some lines (without their ``\\n``).

        Raises InvalidInput if one is not a row of this table.
        """
        try:
            rows = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError as exc:
            raise InvalidInput(f"backup row is not valid JSON: {exc}") from exc
        if len(rows) != len(lines):
            raise InvalidInput("backup rows are not one JSON array per line")
        try:
            return [self._decode_values(values) for values in rows]
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidInput(f"backup row holds a value of the wrong kind: {exc}") from exc

    def _decode_values(self, values: Any) -> tuple[Any, ...]:
        if type(values) is not list or len(values) != self._width:
            raise InvalidInput(f"backup row does not have {self._width} values")
        for i, convert in self._dec:
            if values[i] is not None:
                values[i] = convert(values[i])
        return tuple(values)


def manifest_to_json(manifest: Manifest) -> bytes:
    """The bytes of ``manifest.json``."""
    data = {
        "format": FORMAT_NAME,
        "format_version": manifest.format_version,
        "herald_version": manifest.herald_version,
        "schema_revision": manifest.schema_revision,
        "created_at": _encode_datetime(manifest.created_at),
        "backend": manifest.backend,
        "tables": [
            {
                "name": t.name,
                "columns": [{"name": c.name, "kind": c.kind} for c in t.columns],
                "rows": t.rows,
                "file": t.file,
                "size": t.size,
                "sha256": t.sha256,
            }
            for t in manifest.tables
        ],
    }
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def parse_manifest(raw: bytes) -> Manifest:
    """Read and validate ``manifest.json``.

    Raises InvalidInput with a one-line reason when it is not JSON, not a
    Herald backup, of a format version this code cannot read, or malformed.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"backup manifest is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise InvalidInput("not a Herald backup: the manifest has no herald-backup format")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise InvalidInput(
            f"backup format version {version!r} is not supported (this Herald reads "
            f"version {FORMAT_VERSION})"
        )
    try:
        return _manifest_from(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"backup manifest is malformed: {exc!r}") from exc


def _manifest_from(data: dict[str, Any]) -> Manifest:
    tables = tuple(_table_from(t) for t in data["tables"])
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ValueError("a table is listed twice")
    revision = data["schema_revision"]
    if not isinstance(revision, str) or not revision:
        raise ValueError("schema_revision")
    return Manifest(
        herald_version=str(data["herald_version"]),
        schema_revision=revision,
        created_at=_decode_datetime(data["created_at"]),
        backend=str(data["backend"]),
        tables=tables,
        format_version=int(data["format_version"]),
    )


def _table_from(data: dict[str, Any]) -> TableEntry:
    name = data["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"table name {name!r}")
    columns = tuple(_column_from(c) for c in data["columns"])
    if not columns:
        raise ValueError(f"table {name!r} has no columns")
    rows, size, sha = data["rows"], data["size"], data["sha256"]
    if not isinstance(rows, int) or rows < 0 or not isinstance(size, int) or size < 0:
        raise ValueError(f"row count or size of table {name!r}")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ValueError(f"sha256 of table {name!r}")
    if data["file"] != table_file(name):
        raise ValueError(f"file of table {name!r}")
    return TableEntry(
        name=name, columns=columns, rows=rows, file=table_file(name), size=size, sha256=sha
    )


def _column_from(data: dict[str, Any]) -> ColumnSpec:
    name, kind = data["name"], data["kind"]
    if not isinstance(name, str) or not _NAME.match(name) or kind not in KINDS:
        raise ValueError(f"column {name!r} of kind {kind!r}")
    return ColumnSpec(name=name, kind=kind)
