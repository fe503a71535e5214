from __future__ import annotations

import io

import pytest

from herald.domain.csvimport import (
    Row,
    RowError,
    merge_subscriber,
    read_rows,
    report_cell,
    report_row,
)
from herald.errors import InvalidInput


def _normalise(raw: str) -> str:
    """A stand-in for the real address normaliser: enough to tell good from bad."""
    if raw.count("@") != 1 or " " in raw:
        raise InvalidInput("not an address")
    return raw.lower()


def _decoded(data: bytes) -> io.TextIOWrapper:
    """The text stream the import service hands over."""
    return io.TextIOWrapper(
        io.BytesIO(data), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )


def _read(data: bytes) -> list[Row | RowError]:
    return list(read_rows(_decoded(data), normalise=_normalise))


def test_it_reads_email_name_and_other_columns_as_attributes() -> None:
    rows = _read(b" Email ,NAME,City,Plan\nAnn@Example.com,Ann,Paris,\n")
    assert rows == [Row(2, "Ann@Example.com", "ann@example.com", "Ann", {"city": "Paris"})]


def test_it_drops_a_bom_and_skips_blank_lines() -> None:
    rows = _read(b"\xef\xbb\xbfemail\r\n\r\na@x.org\r\n")
    assert rows == [Row(3, "a@x.org", "a@x.org", None, {})]


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"name,city\nAnn,Paris\n", b"email,\xff\xfe\n", b"email,name,email\n"],
)
def test_it_refuses_a_file_without_a_usable_header(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        read_rows(_decoded(data), normalise=_normalise)


def test_it_reports_bad_rows_and_reads_on() -> None:
    data = (
        b"email,name\n"
        b"caf\xe9@x.org,Latin-1\n"
        b"nul@x.org,a\x00b\n"
        b"few@x.org\n"
        b"not-an-address,x\n"
        b"Dup@x.org,first\n"
        b"dup@X.ORG,second\n"
        b"good@x.org,ok\n"
    )
    rows = _read(data)
    errors = {r.line: r.error for r in rows if isinstance(r, RowError)}
    assert errors == {
        2: "invalid UTF-8 encoding",
        3: "NUL byte in the row",
        4: "wrong number of fields: expected 2, found 1",
        5: "not an address",
        7: "duplicate: the address appears earlier in the file",
    }
    assert [(r.line, r.email, r.name) for r in rows if isinstance(r, Row)] == [
        (6, "dup@x.org", "first"),
        (8, "good@x.org", "ok"),
    ]


def test_it_refuses_overlong_fields_and_counts_lines_of_multiline_records() -> None:
    long_name = "n" * 256
    data = f'email,name,note\n"a@x.org",{long_name},x\nb@x.org,B,"two\nlines"\nc@x.org,C,\n'
    rows = _read(data.encode())
    assert isinstance(rows[0], RowError)
    assert rows[0].error.startswith("field too long: name")
    assert [(r.line, r.email) for r in rows[1:] if isinstance(r, Row)] == [
        (3, "b@x.org"),
        (5, "c@x.org"),
    ]


def test_it_survives_a_field_beyond_the_csv_limit() -> None:
    data = b"email,name\nbig@x.org," + b"x" * 200_000 + b"\nok@x.org,ok\n"
    rows = _read(data)
    assert rows[0] == RowError(2, "", "field too long")
    assert rows[1] == Row(3, "ok@x.org", "ok@x.org", "ok", {})


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_it_escapes_formula_cells_in_the_report(value: str) -> None:
    assert report_cell(value) == "'" + value


def test_it_writes_undecodable_and_nul_characters_as_replacement_characters() -> None:
    given = b"caf\xe9\x00".decode("utf-8", "surrogateescape")
    assert report_row(RowError(4, given, "invalid UTF-8 encoding")) == (
        "4",
        "caf\ufffd\ufffd",
        "invalid UTF-8 encoding",
    )


def test_it_merges_attributes_and_keeps_the_stored_name_when_none_given() -> None:
    row = Row(2, "a@x.org", "a@x.org", None, {"city": "Lyon"})
    assert merge_subscriber(row, "Ann", {"city": "Paris", "plan": "pro"}) == (
        "Ann",
        {"city": "Lyon", "plan": "pro"},
    )
    assert merge_subscriber(row, "Ann", {"city": "Lyon"}) is None
