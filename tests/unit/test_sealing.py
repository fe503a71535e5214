from __future__ import annotations

import pytest

from herald.domain.sealing import seal, unseal
from herald.errors import ConfigError

SECRET = "a-herald-secret-key"


def test_it_unseals_what_it_sealed() -> None:
    assert unseal(SECRET, seal(SECRET, "p@ss wörd")) == "p@ss wörd"


def test_it_never_shows_the_plaintext_and_seals_twice_differently() -> None:
    first, second = seal(SECRET, "hunter2"), seal(SECRET, "hunter2")
    assert "hunter2" not in first
    assert first != second
    assert first.isascii()


def test_it_refuses_to_unseal_with_another_secret_key() -> None:
    token = seal(SECRET, "hunter2")
    with pytest.raises(ConfigError, match="secret key differs"):
        unseal("another-secret", token)


@pytest.mark.parametrize("token", ["", "not a token", "gAAAAABjunk", "ünïcode"])
def test_it_refuses_a_corrupt_value(token: str) -> None:
    with pytest.raises(ConfigError, match="corrupt"):
        unseal(SECRET, token)


def test_it_refuses_to_work_without_a_secret_key() -> None:
    with pytest.raises(ConfigError, match="secret key is empty"):
        seal("", "hunter2")
