"""Open and click tracking links, and rewriting a rendered message to use them.

A click link is ``{base}/t/c/{token}?u={target}``: the token carries the
delivery and campaign ids and its signature also covers the target URL, so
the redirect needs no database lookup (tracking keeps working while the
database is down) and cannot be turned into an open redirect: change the
target, or the ids, and the link is refused. An open pixel is
``{base}/t/o/{token}.gif``.

Pure: no I/O.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import quote

from herald.domain import tokens
from herald.errors import InvalidInput

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_TRACKED = ("http://", "https://")
MAX_URL = 2048


def click_url(secret: str, base_url: str, delivery_id: int, campaign_id: int, target: str) -> str:
    token = tokens.sign(secret, tokens.CLICK, (delivery_id, campaign_id), bound=target.encode())
    return f"{base_url}/t/c/{token}?u={quote(target, safe='')}"


def open_url(secret: str, base_url: str, delivery_id: int, campaign_id: int) -> str:
    return f"{base_url}/t/o/{tokens.sign(secret, tokens.OPEN, (delivery_id, campaign_id))}.gif"


def read_click(secret: str, token: str, target: str) -> tuple[int, int]:
    """(delivery id, campaign id) of a genuine click link. Raises InvalidInput."""
    if not target.startswith(_TRACKED) or len(target) > MAX_URL:
        raise InvalidInput("invalid link")
    values = tokens.verify(secret, tokens.CLICK, token, count=2, bound=target.encode())
    return values[0], values[1]


def read_open(secret: str, token: str) -> tuple[int, int]:
    """(delivery id, campaign id) of a genuine open pixel. Raises InvalidInput."""
    values = tokens.verify(secret, tokens.OPEN, token.removesuffix(".gif"), count=2)
    return values[0], values[1]


def track(html_text: str, *, link: Callable[[str], str], pixel: str, skip: str) -> str:
    """Point every http(s) link of ``html_text`` at ``link(target)`` and add the pixel.

    Links starting with ``skip`` (Herald's own pages, such as unsubscribe)
    and other schemes (mailto:, tel:, #anchors) are left alone.
    """

    def swap(match: re.Match[str]) -> str:
        target = html.unescape(match.group(3)).strip()
        if not target.startswith(_TRACKED) or target.startswith(skip) or len(target) > MAX_URL:
            return match.group(0)
        quote_char = match.group(2)
        return f"{match.group(1)}{quote_char}{html.escape(link(target))}{quote_char}"

    rewritten = _HREF.sub(swap, html_text)
    img = f'<img src="{html.escape(pixel)}" width="1" height="1" alt="" style="border:0">'
    parts = _BODY_END.split(rewritten, maxsplit=1)
    if len(parts) == 2:
        return f"{parts[0]}{img}</body>{parts[1]}"
    return rewritten + img
