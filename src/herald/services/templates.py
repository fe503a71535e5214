"""Templates: reusable campaign content, checked by the sandboxed compiler before it is stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from herald.domain.clock import utcnow
from herald.domain.rendering import compile_campaign
from herald.errors import Conflict, InvalidInput, NotFound, RenderError, TemplateError
from herald.store import templates as store

_FIELDS = ("name", "subject", "html", "text")
SAMPLE_CONTEXT: dict[str, Any] = {
    "subscriber": {"email": "sample@example.com", "name": "Sample", "attribs": {}},
    "campaign": {"id": 0, "name": "Sample", "subject": "Sample"},
    "unsubscribe_url": "https://example.invalid/u/sample",
}


def create_template(
    engine: Engine, name: str, *, subject: str, html: str, text: str | None = None
) -> dict[str, Any]:
    """Store a template; returns it. Raises TemplateError (it does not compile, or
    the subject is not one line), InvalidInput (bad name), Conflict (name taken)."""
    values = _checked({"name": name, "subject": subject, "html": html, "text": text})
    try:
        with engine.begin() as conn:
            template_id = store.insert_template(conn, values, now=utcnow())
            return _require(store.get_template(conn, template_id), template_id)
    except IntegrityError:
        raise Conflict(f"a template named {name!r} already exists") from None


def get_template(engine: Engine, template_id: int) -> dict[str, Any]:
    """The template with its bodies. Raises NotFound."""
    with engine.begin() as conn:
        return _require(store.get_template(conn, template_id), template_id)


def list_templates(engine: Engine) -> list[dict[str, Any]]:
    """Every template by name (without bodies)."""
    with engine.begin() as conn:
        return store.list_templates(conn)


def update_template(engine: Engine, template_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some of name, subject, html, text; the result must still compile.

    Raises NotFound, TemplateError, InvalidInput, Conflict (name taken).
    Campaigns made from the template keep the copy they took.
    """
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown template fields: {', '.join(sorted(unknown))}")
    try:
        with engine.begin() as conn:
            current = _require(store.get_template(conn, template_id), template_id)
            merged = _checked({**{k: current[k] for k in _FIELDS}, **changes})
            store.update_template(conn, template_id, merged, now=utcnow())
            return _require(store.get_template(conn, template_id), template_id)
    except IntegrityError:
        raise Conflict(f"a template named {changes.get('name')!r} already exists") from None


def delete_template(engine: Engine, template_id: int) -> None:
    """Delete a template (campaigns keep their copy). Raises NotFound."""
    with engine.begin() as conn:
        if not store.delete_template(conn, template_id):
            raise NotFound(f"no template {template_id}")


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    name = values["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise InvalidInput("a template name is 1 to 255 characters")
    if any(ord(c) < 32 for c in name):
        raise InvalidInput("a template name must not contain control characters")
    check_content(values["subject"], values["html"], values["text"])
    return {**values, "name": name.strip()}


def check_content(subject: str, html: str, text: str | None) -> None:
    """Refuse content a send would fail on: raises TemplateError with the reason.

    1. The subject must be one line (header injection).
    2. The templates must compile in the sandbox (syntax, size).
    3. A trial render for a sample subscriber must pass the sandbox's guards:
       a hostile template (``__class__`` chains, huge loops or output) compiles
       but fails here, before it is stored rather than at send time.
    """
    if any(c in subject for c in "\r\n\0"):
        raise TemplateError("the subject must be a single line (no CR, LF or NUL)")
    compiled = compile_campaign(subject, html, text)
    try:
        compiled.render(SAMPLE_CONTEXT)
    except RenderError as exc:
        raise TemplateError(f"the template fails to render: {exc.message}") from exc


def _require(row: dict[str, Any] | None, template_id: int) -> dict[str, Any]:
    if row is None:
        raise NotFound(f"no template {template_id}")
    return row
