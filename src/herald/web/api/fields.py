"""What every request model of the API shares: no unknown fields, one-line headers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NO_EXTRA = ConfigDict(extra="forbid")


def single_line(value: str | None) -> str | None:
    """A pydantic validator: refuse CR, LF and NUL (they would inject mail headers)."""
    if value is not None and any(c in value for c in "\r\n\0"):
        raise ValueError("must be a single line (no CR, LF or NUL)")
    return value


def refuse_nulls(model: BaseModel, names: tuple[str, ...]) -> None:
    """Refuse an explicit null for fields a change may leave out but not clear."""
    for name in names:
        if name in model.model_fields_set and getattr(model, name) is None:
            raise ValueError(f"{name} cannot be null (leave it out to keep it)")
