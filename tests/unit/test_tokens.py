from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.domain import tokens
from herald.errors import InvalidInput


@given(st.tuples(st.integers(0, 2**63), st.integers(0, 2**63)))
def test_it_round_trips_values(values: tuple[int, int]) -> None:
    token = tokens.sign("k", "u", values)
    assert tokens.verify("k", "u", token, count=2) == values


@given(st.integers(0, 10**9), st.integers(0, 40), st.integers(1, 255))
def test_it_refuses_any_altered_token(value: int, pos: int, delta: int) -> None:
    token = tokens.sign("k", "u", (value, 7))
    raw = bytearray(token.encode())
    raw[pos % len(raw)] = (raw[pos % len(raw)] + delta) % 128 or 65
    altered = raw.decode(errors="replace")
    if altered == token:
        return
    with pytest.raises(InvalidInput):
        tokens.verify("k", "u", altered, count=2)


def test_it_refuses_another_key_or_purpose() -> None:
    token = tokens.sign("k", "u", (1, 2))
    with pytest.raises(InvalidInput):
        tokens.verify("other", "u", token, count=2)
    with pytest.raises(InvalidInput):
        tokens.verify("k", "click", token, count=2)
    with pytest.raises(InvalidInput):
        tokens.verify("k", "u", token[:-2], count=2)
