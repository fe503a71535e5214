"""The backup format: values round-trip exactly, manifests are validated."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.domain.backupformat import (
    ColumnSpec,
    Manifest,
    RowCodec,
    TableEntry,
    backup_filename,
    decode_value,
    encode_value,
    manifest_to_json,
    parse_manifest,
    table_file,
)
from herald.errors import InvalidInput

COLUMNS = (
    ColumnSpec("id", "integer"),
    ColumnSpec("rate", "float"),
    ColumnSpec("enabled", "boolean"),
    ColumnSpec("name", "string"),
    ColumnSpec("at", "datetime"),
    ColumnSpec("attribs", "json"),
    ColumnSpec("blob", "bytes"),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # not JSON; PostgreSQL refuses them
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
rows = st.tuples(
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none() | st.floats(),
    st.none() | st.booleans(),
    st.none() | st.text(),  # lone surrogates included
    st.none() | st.datetimes(timezones=st.just(UTC)),
    json_values,
    st.none() | st.binary(),
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@given(rows)
def test_it_round_trips_every_kind_of_value_exactly(row: tuple[Any, ...]) -> None:
    codec = RowCodec(COLUMNS)
    line = codec.encode(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = codec.decode(line)
    assert all(_same(a, b) for a, b in zip(row, back, strict=True)), (row, back)


@given(st.none() | st.dates())
def test_it_round_trips_calendar_dates(day: date | None) -> None:
    codec = RowCodec((ColumnSpec("day", "date"),))
    assert codec.decode(codec.encode((day,))) == (day,)


def test_it_writes_a_date_as_iso_and_refuses_anything_else() -> None:
    assert encode_value("date", date(2024, 2, 29)) == "2024-02-29"
    codec = RowCodec((ColumnSpec("day", "date"),))
    for line in (b"[20240229]\n", b'["yesterday"]\n'):
        with pytest.raises(InvalidInput, match="wrong kind"):
            codec.decode(line)


def test_it_stores_datetimes_in_utc_and_reads_a_naive_one_as_utc() -> None:
    oslo = timezone(timedelta(hours=2))
    aware = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=oslo)
    assert encode_value("datetime", aware) == "2024-02-29T21:59:59.999999+00:00"
    naive = datetime(2024, 1, 1, 12, 0, 0)
    assert encode_value("datetime", naive) == "2024-01-01T12:00:00.000000+00:00"
    assert decode_value("datetime", "2024-01-01T12:00:00.000000+00:00") == naive.replace(tzinfo=UTC)


def test_it_keeps_large_integers_and_non_finite_floats() -> None:
    codec = RowCodec((ColumnSpec("n", "integer"), ColumnSpec("f", "float")))
    for n, f in [(2**63 - 1, math.inf), (-(2**63), -math.inf), (2**53 + 1, 0.1 + 0.2)]:
        assert codec.decode(codec.encode((n, f))) == (n, f)
    assert math.isnan(codec.decode(codec.encode((1, math.nan)))[1])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[1, 2.5, true", "not valid JSON"),
        (b'{"id": 1}', "does not have 7 values"),
        (b'["1", null, null, null, null, null, null]', "wrong kind"),
        (b"[1, null, 1, null, null, null, null]", "wrong kind"),
        (b'[1, null, null, null, "yesterday", null, null]', "wrong kind"),
        (b'[1, null, null, null, null, null, "not base64!"]', "wrong kind"),
        (b'[1, "lots", null, null, null, null, null]', "wrong kind"),
    ],
)
def test_it_refuses_a_row_that_does_not_fit_its_columns(line: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        RowCodec(COLUMNS).decode(line)


def _manifest() -> Manifest:
    entry = TableEntry(
        name="subscribers",
        columns=COLUMNS,
        rows=3,
        file=table_file("subscribers"),
        size=120,
        sha256="ab" * 32,
    )
    return Manifest(
        herald_version="0.1.0",
        schema_revision="0005",
        created_at=datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC),
        backend="sqlite",
        tables=(entry,),
    )


def test_it_writes_and_reads_back_a_manifest() -> None:
    manifest = _manifest()
    assert parse_manifest(manifest_to_json(manifest)) == manifest
    assert backup_filename(manifest.created_at) == "herald-backup-20240501T120000Z.tar"


def _edited(change: Any) -> bytes:
    data = json.loads(manifest_to_json(_manifest()))
    change(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (json.dumps({"format": "tarball"}).encode(), "not a Herald backup"),
        (_edited(lambda d: d.update(format_version=2)), "version 2 is not supported"),
        (_edited(lambda d: d["tables"][0].update(sha256="xyz")), "sha256"),
        (_edited(lambda d: d["tables"][0].update(file="../../etc/passwd")), "file of table"),
        (_edited(lambda d: d["tables"][0].update(rows=-1)), "row count"),
        (_edited(lambda d: d["tables"][0].update(name="drop table")), "table name"),
        (_edited(lambda d: d["tables"][0]["columns"][0].update(kind="money")), "kind"),
        (_edited(lambda d: d["tables"].append(d["tables"][0])), "listed twice"),
        (_edited(lambda d: d.pop("schema_revision")), "malformed"),
    ],
)
def test_it_refuses_a_manifest_it_cannot_trust(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_manifest(raw)


def test_it_keeps_the_table_order_of_the_manifest() -> None:
    first = _manifest().tables[0]
    second = replace(first, name="lists", file=table_file("lists"))
    manifest = replace(_manifest(), tables=(second, first))
    assert [t.name for t in parse_manifest(manifest_to_json(manifest)).tables] == [
        "lists",
        "subscribers",
    ]
