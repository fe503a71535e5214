"""Email address validation and normalisation.

Addresses are stored lower-cased as a whole, so uniqueness is
case-insensitive. Internationalised *local parts* are refused because sending
them needs SMTPUTF8, which Herald does not speak; internationalised *domains*
are accepted and kept in their Unicode form (the MIME builder IDNA-encodes
them).
"""

from __future__ import annotations

import functools
import re

import email_validator
from email_validator import syntax

from herald.errors import InvalidInput

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: none
# may ever appear in an address or a display name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_QUOTED_PAIR = re.compile(r"\\(.)")


def normalise_email(raw: str, *, local_domain_ok: bool = False) -> str:
    """Return ``raw`` validated and normalised (lower-cased, Unicode domain).

    Surrounding spaces are ignored. Display names are not allowed here.
    ``local_domain_ok`` also accepts special-use and single-label domains
    (``herald@localhost``, ``news@intranet.local``): right for a sender on a
    private network, wrong for a subscriber list. Domains under ``.test`` are
    always accepted so that test systems can use them.
    Raises ``InvalidInput`` saying why when the address is not usable.
    """
    if local_domain_ok:
        return _normalise_local(raw)
    if _CONTROL.search(raw):
        raise InvalidInput("The email address contains a control character.")
    candidate = raw.strip(" ")
    if not candidate:
        raise InvalidInput("The email address is empty.")
    simple = _SIMPLE.match(candidate)
    if simple is not None and _simple_ok(simple[1], simple[2]):
        return candidate.lower()
    return _validate(candidate)


# Plain ASCII addresses, by far the common case, are checked as a local part
# plus a domain whose verdict is cached: importing a million rows validates a
# few thousand distinct domains, not a million.
_SIMPLE = re.compile(r"^([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64})@([A-Za-z0-9.-]{1,252})$")


def _simple_ok(local: str, domain: str) -> bool:
    """True when the local part and the domain pass email_validator's checks.

    False means "not sure": the caller runs the full validation, which gives
    the precise error message.
    """
    if len(local) + 1 + len(domain) > 254 or not _domain_ok(domain.lower()):
        return False
    try:
        syntax.validate_email_local_part(local, allow_smtputf8=False)
    except email_validator.EmailNotValidError:
        return False
    return True


@functools.lru_cache(maxsize=65536)
def _domain_ok(domain: str) -> bool:
    try:
        _validate(f"postmaster@{domain}")
    except InvalidInput:
        return False
    return True


def _validate(candidate: str) -> str:
    try:
        result = email_validator.validate_email(
            candidate,
            check_deliverability=False,
            allow_display_name=False,
            allow_smtputf8=False,
            test_environment=True,
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidInput(f"Invalid email address {candidate!r}: {exc}") from exc
    return str(result.normalized).lower()


def parse_from(raw: str) -> tuple[str, str]:
    """Parse a sender ``Name <addr@example.com>`` or a bare address.

    Returns ``(display name, normalised address)``; the name is ``""`` when
    absent and is unquoted when written as a quoted string. Raises
    ``InvalidInput`` for CR, LF, NUL or any other control character, for
    unbalanced angle brackets and for an invalid address.
    """
    if _CONTROL.search(raw):
        raise InvalidInput("The sender contains a control character.")
    text = raw.strip()
    if not text.endswith(">"):
        if "<" in text or ">" in text:
            raise InvalidInput(f"Invalid sender {raw!r}: unbalanced angle brackets.")
        return "", normalise_email(text, local_domain_ok=True)
    open_at = text.rfind("<")
    if open_at < 0:
        raise InvalidInput(f"Invalid sender {raw!r}: unbalanced angle brackets.")
    name = _unquote_name(text[:open_at].strip())
    return name, normalise_email(text[open_at + 1 : -1], local_domain_ok=True)


def _unquote_name(name: str) -> str:
    """Return a display name without its surrounding quotes and escapes."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return _QUOTED_PAIR.sub(r"\1", name[1:-1]).strip()
    if "<" in name or ">" in name:
        raise InvalidInput(f"Invalid sender name {name!r}: angle brackets must be quoted.")
    return name


_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")


def _normalise_local(raw: str) -> str:
    """Validate the local part with email_validator and the domain as a hostname."""
    local, at, domain = raw.strip(" ").rpartition("@")
    domain = domain.lower()
    if not at or not _HOSTNAME.match(domain):
        raise InvalidInput(f"Invalid email address {raw.strip()!r}: the domain is not a hostname.")
    try:
        checked = normalise_email(f"{local}@example.com")
    except InvalidInput as exc:
        reason = str(exc).rpartition(": ")[2]
        raise InvalidInput(f"Invalid email address {raw.strip()!r}: {reason}") from exc
    return f"{checked.rpartition('@')[0]}@{domain}"
