"""Raw RFC 5322 / MIME message bytes, built fast.

``email.message.EmailMessage`` costs milliseconds per message; a campaign
needs tens of microseconds. ``MessageBuilder`` therefore computes everything
that is the same for every recipient once (From, boundary, fixed headers, part
headers) and per message only formats the recipient's headers and
quoted-printable-encodes the bodies with C helpers (``binascii``).

Bodies arrive as *chunks* (the pieces a Jinja template yields). Every chunk is
encoded on its own and ends with a line break or a QP soft line break, so the
encoding of a chunk does not depend on what precedes it and the encodings of
the template's static chunks are cached per campaign: per message only the
personalised chunks are encoded.

Header safety: addresses, Message-ID and URLs containing anything that could
end a header (CR, LF, NUL, other controls) are refused with ``InvalidInput``;
subjects and display names are free text, so their control characters
(including CR, LF and TAB) are replaced by spaces.

Bodies are text: every line break (CRLF, LF or a lone CR) is sent as CRLF,
the canonical line break of ``text/*`` (RFC 2046 4.1.1), so a body decodes to
its original text with line breaks normalised to CRLF.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from herald.errors import InvalidInput

CRLF = b"\r\n"
_MAX_LINE = 76
_FOLD_AT = 78
_MAX_URL = 900
_CACHE_MAX_ENTRIES = 4096
_SEEN_MAX_ENTRIES = 65536
_WORD_CONTINUATION_BYTES = 45  # 60 base64 chars: " =?utf-8?b?…?=" stays within 78 columns
_FREE_TEXT_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACE_RUN = re.compile(r"\s+")
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_ADDRESS = re.compile(_LOCAL + r"@[A-Za-z0-9.-]+")
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
_MESSAGE_ID = re.compile(r"<[!-;=?A-~]+@[A-Za-z0-9.-]+>")
_URL = re.compile(r"https?://[!#-;=?-~]+")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)


def make_message_id(delivery_id: int, campaign_id: int | None, secret: str, domain: str) -> str:
    """Return the deterministic Message-ID of a delivery, angle brackets included.

    Same inputs give the same id, so a duplicate sent after a crash can be
    recognised downstream; the HMAC part stops outsiders from forging ids of
    other deliveries. Raises ``InvalidInput`` for a negative id or a bad domain.
    """
    if delivery_id < 0 or (campaign_id is not None and campaign_id < 0):
        raise InvalidInput("Message-ID numbers must not be negative.")
    campaign_part = "t" if campaign_id is None else str(campaign_id)
    payload = f"{delivery_id}.{campaign_part}".encode()
    keyed = _keyed(secret).copy()  # see domain.tokens._mac: no digest lookup per message
    keyed.update(payload)
    return f"<{delivery_id}.{campaign_part}.{keyed.hexdigest()[:16]}@{_ascii_domain(domain)}>"


@functools.lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


class MessageBuilder:
    """Builds the raw bytes of one campaign's messages (one instance per campaign).

    Not shared between threads without care: the chunk cache is a plain dict
    (safe under the GIL, at worst an entry is computed twice).
    """

    def __init__(
        self,
        from_name: str,
        from_addr: str,
        *,
        message_id_domain: str,
        list_unsubscribe_mailto: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        list_headers: bool = True,
    ) -> None:
        """Precompute the per-campaign parts; raises ``InvalidInput`` for bad values.

        ``list_headers=False`` (transactional mail) leaves out List-Unsubscribe
        and List-Unsubscribe-Post; ``build`` then takes no unsubscribe URL.
        """
        self.message_id_domain = _ascii_domain(message_id_domain)
        # "=_" can never occur in quoted-printable output ("=" is always
        # followed by two hex digits or a line break), so this boundary cannot
        # collide with any part's content and needs no per-message check.
        self.boundary = "=_herald_" + secrets.token_hex(12)
        self._mailto = b""
        if list_unsubscribe_mailto:
            mailto = _check_address(list_unsubscribe_mailto.removeprefix("mailto:"))
            self._mailto = b",\r\n <mailto:" + mailto + b"?subject=unsubscribe>"
        self._from = b"From: " + _mailbox(from_name, from_addr, len("From: ")) + CRLF
        self._fixed = _fixed_headers(self.boundary, extra_headers or {}, one_click=list_headers)
        boundary = self.boundary.encode()
        part_head = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        self._text_head = (
            b"\r\n--" + boundary + b"\r\nContent-Type: text/plain; charset=utf-8\r\n" + part_head
        )
        self._html_head = (
            b"\r\n--" + boundary + b"\r\nContent-Type: text/html; charset=utf-8\r\n" + part_head
        )
        self._close = b"\r\n--" + boundary + b"--\r\n"
        self._cache: dict[str, bytes] = {}
        self._seen: dict[int, int] = {}  # chunk hash -> the build it was first encoded in
        self._builds = 0
        self._date_second = -1
        self._date_bytes = b""

    def message_id_for(self, delivery_id: int, campaign_id: int | None, secret: str) -> str:
        """Return ``make_message_id`` for this builder's Message-ID domain."""
        return make_message_id(delivery_id, campaign_id, secret, self.message_id_domain)

    def build(
        self,
        *,
        to_addr: str,
        to_name: str,
        subject: str,
        html: str | Sequence[str],
        text: str | Sequence[str],
        message_id: str,
        unsubscribe_url: str | None,
        date: datetime | None = None,
    ) -> bytes:
        """Return the complete message (CRLF line endings) for one recipient.

        ``html`` and ``text`` are a string or the chunks a template yielded.
        Raises ``InvalidInput`` when the address, Message-ID or URL is unsafe.
        """
        if not _MESSAGE_ID.fullmatch(message_id):
            raise InvalidInput(f"Invalid Message-ID {message_id!r}.")
        unsubscribe = b""
        if unsubscribe_url is not None:
            if len(unsubscribe_url) > _MAX_URL or not _URL.fullmatch(unsubscribe_url):
                raise InvalidInput(f"Invalid unsubscribe URL {unsubscribe_url!r}.")
            url = unsubscribe_url.encode()
            unsubscribe = b"\r\nList-Unsubscribe: <" + url + b">" + self._mailto
        self._builds += 1
        pieces = [
            self._from,
            b"To: ",
            _mailbox(to_name, to_addr, len("To: ")),
            b"\r\nSubject: ",
            _unstructured(subject, len("Subject: ")),
            b"\r\nDate: ",
            self._format_date(date),
            b"\r\nMessage-ID: ",
            message_id.encode(),
            unsubscribe,
            CRLF,
            self._fixed,
            self._text_head,
        ]
        self._encode_body(text, pieces)
        pieces.append(self._html_head)
        self._encode_body(html, pieces)
        pieces.append(self._close)
        return b"".join(pieces)

    def _format_date(self, date: datetime | None) -> bytes:
        if date is not None:
            aware = date if date.tzinfo else date.replace(tzinfo=UTC)
            return format_datetime(aware).encode()
        # Formatting a date costs more than the rest of the headers together;
        # messages built within the same second share it.
        now = time.time()
        if int(now) != self._date_second:
            self._date_second = int(now)
            self._date_bytes = format_datetime(datetime.fromtimestamp(now, UTC)).encode()
        return self._date_bytes

    def _encode_body(self, body: str | Sequence[str], out: list[bytes]) -> None:
        """Append the QP encoding of ``body``'s chunks to ``out``."""
        get = self._cache.get
        out.extend([get(chunk) or self._encode_miss(chunk) for chunk in _as_chunks(body)])

    def _encode_miss(self, chunk: str) -> bytes:
        """Encode a chunk not in the cache; keep it there from its second sighting.

        Most chunks of one message (a name, a tracked link, the pixel; the
        first two may occur in both parts) are never seen in another: caching
        them at once would fill the cache with one-off entries before a
        template's rarer static chunks (a conditional block) first appear.
        """
        encoded = _encode_chunk(chunk)
        key = hash(chunk)
        first = self._seen.get(key)
        if first is not None and first != self._builds:
            if len(self._cache) < _CACHE_MAX_ENTRIES:
                self._cache[chunk] = encoded
        elif first is None:
            if len(self._seen) >= _SEEN_MAX_ENTRIES:
                self._seen.clear()
            self._seen[key] = self._builds
        return encoded


def _as_chunks(body: str | Sequence[str]) -> Sequence[str]:
    return (body,) if isinstance(body, str) else body


def _encode_chunk(chunk: str) -> bytes:
    """Return ``chunk`` quoted-printable encoded with CRLF line breaks.

    A chunk not ending in a line break ends in a soft line break, so chunks
    concatenate without depending on each other (also the last one: a body
    may end with a soft break). No line is longer than 76 characters or
    starts with "." or "From " (safe for naive SMTP servers and mbox files).
    """
    if not chunk:
        return b""
    # str.replace, not chunk.replace: on markupsafe.Markup (what autoescaped
    # templates yield) the method escapes its arguments and costs ten times more.
    text = str.replace(str.replace(chunk, "\r\n", "\n"), "\r", "\n") if "\r" in chunk else chunk
    encoded = binascii.b2a_qp(text.encode("utf-8", "replace"), istext=True)
    if len(encoded) < _MAX_LINE and b"\n" not in encoded and not _needs_line_fix(encoded):
        # The common personalised chunk (a name, an address, a URL): one short line.
        return encoded + b"=" + CRLF
    lines = encoded.split(b"\n")
    if len(lines[-1]) >= _MAX_LINE or _needs_line_fix(encoded):
        fixed: list[bytes] = []
        for line in lines[:-1]:
            fixed.extend(_safe_lines(line, limit=_MAX_LINE))
        fixed.extend(_safe_lines(lines[-1], limit=_MAX_LINE - 1))
        lines = fixed
    if lines[-1]:
        lines.append(b"")
        lines[-2] += b"="
    return CRLF.join(lines)


def _needs_line_fix(encoded: bytes) -> bool:
    return encoded.startswith((b".", b"From ")) or b"\n." in encoded or b"\nFrom " in encoded


def _safe_lines(line: bytes, *, limit: int) -> list[bytes]:
    """Split one encoded line into lines of at most ``limit`` characters.

    A leading "." or "F" of "From " is escaped; soft breaks are inserted
    where needed, never inside an "=XX" escape.
    """
    soft = line.endswith(b"=")
    body = line[:-1] if soft else line
    out: list[bytes] = []
    while True:
        if body.startswith(b"."):
            body = b"=2E" + body[1:]
        elif body.startswith(b"From "):
            body = b"=46" + body[1:]
        if len(body) + soft <= limit:
            out.append(body + b"=" if soft else body)
            return out
        cut = _MAX_LINE - 1
        if body[cut - 1 : cut] == b"=":
            cut -= 1
        elif body[cut - 2 : cut - 1] == b"=":
            cut -= 2
        out.append(body[:cut] + b"=")
        body = body[cut:]


def _fixed_headers(
    boundary: str, extra_headers: Mapping[str, str], *, one_click: bool = True
) -> bytes:
    """Return the headers that are the same in every message of a campaign."""
    lines = [b"MIME-Version: 1.0"]
    if one_click:
        lines.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    for name, value in extra_headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
            raise InvalidInput(f"Header name {name!r} is not allowed.")
        if _FREE_TEXT_CONTROL.search(value):
            raise InvalidInput(f"Header {name} contains a control character.")
        lines.append(name.encode() + b": " + _unstructured(value, len(name) + 2))
    lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"'.encode())
    return CRLF.join(lines) + CRLF


def _clean_free_text(value: str) -> str:
    """Return ``value`` with control characters replaced by spaces."""
    return _FREE_TEXT_CONTROL.sub(" ", value) if _FREE_TEXT_CONTROL.search(value) else value


def _unstructured(value: str, prefix_len: int) -> bytes:
    """Return an unstructured header value (Subject), folded and RFC 2047-encoded.

    Plain ASCII is kept readable and folded at spaces; anything a decoder
    would not give back verbatim (non-ASCII, "=?", leading, trailing or
    repeated spaces) is sent as base64 encoded-words.
    """
    text = _clean_free_text(value)
    if text.isascii() and "=?" not in text and text == text.strip() and "  " not in text:
        folded = _fold_ascii(text, prefix_len)
        if folded is not None:
            return folded
    return _encoded_words(text, prefix_len)


def _fold_ascii(text: str, prefix_len: int) -> bytes | None:
    """Fold ``text`` at spaces to 78 columns; None when a word would pass 998."""
    if prefix_len + len(text) <= _FOLD_AT:
        return text.encode()
    lines: list[str] = []
    current: list[str] = []
    width = prefix_len
    for word in text.split(" "):
        added = len(word) + (1 if current else 0)
        if current and width + added > _FOLD_AT:
            lines.append(" ".join(current))
            current, width = [word], 1 + len(word)
        else:
            current.append(word)
            width += added
        if width > 990:
            return None
    lines.append(" ".join(current))
    return "\r\n ".join(lines).encode()


def _encoded_words(text: str, prefix_len: int) -> bytes:
    """Return ``text`` as base64 encoded-words of at most 75 characters, folded."""
    data = text.encode("utf-8", "replace")
    first_bytes = max(6, (_FOLD_AT - prefix_len - 12) // 4 * 3)
    words: list[bytes] = []
    start = 0
    limit = min(first_bytes, _WORD_CONTINUATION_BYTES)
    while start < len(data) or not words:
        end = min(start + limit, len(data))
        # Never split a UTF-8 sequence: back off continuation bytes (10xxxxxx).
        while end < len(data) and end > start + 1 and data[end] & 0xC0 == 0x80:
            end -= 1
        encoded = binascii.b2a_base64(data[start:end], newline=False)
        words.append(b"=?utf-8?b?" + encoded + b"?=")
        start = end
        limit = _WORD_CONTINUATION_BYTES
    return b"\r\n ".join(words)


def _mailbox(name: str, addr: str, prefix_len: int) -> bytes:
    """Return ``Name <addr>`` (or the bare address) as header bytes.

    The name's control characters become spaces and whitespace runs collapse;
    names with specials are quoted, non-ASCII names RFC 2047-encoded.
    """
    address = _check_address(addr)
    display = _SPACE_RUN.sub(" ", _clean_free_text(name)).strip()
    if not display:
        return address
    if display.isascii() and "=?" not in display and len(display) <= 60:
        if _ATOM_PHRASE.fullmatch(display):
            phrase = display.encode()
        else:
            phrase = b'"' + display.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
    else:
        phrase = _encoded_words(display, prefix_len)
    last_line = (
        len(phrase) - phrase.rfind(b"\n") - 1 if b"\n" in phrase else prefix_len + len(phrase)
    )
    separator = b"\r\n <" if last_line + len(address) + 3 > _FOLD_AT else b" <"
    return phrase + separator + address + b">"


def _check_address(addr: str) -> bytes:
    """Return ``addr`` as ASCII header bytes; raises ``InvalidInput`` if unsafe."""
    if _ADDRESS.fullmatch(addr):
        return addr.encode()
    local, at, domain = addr.rpartition("@")
    if at and _ADDRESS.fullmatch(f"{local}@a") and not domain.isascii():
        return f"{local}@{_ascii_domain(domain)}".encode()
    raise InvalidInput(f"Invalid email address {addr!r}.")


def _ascii_domain(domain: str) -> str:
    """Return ``domain`` in ASCII (IDNA); raises ``InvalidInput`` if unusable."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise InvalidInput(f"Invalid domain {domain!r}.") from exc
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", ascii_domain):
        raise InvalidInput(f"Invalid domain {domain!r}.")
    return ascii_domain
