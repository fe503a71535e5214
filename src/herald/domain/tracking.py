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

import bisect
import html
import itertools
import re
from collections.abc import Callable, Sequence
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
    return "".join(track_parts((html_text,), link=link, pixel=pixel, skip=skip))


def track_parts(
    parts: Sequence[str], *, link: Callable[[str], str], pixel: str, skip: str
) -> list[str]:
    """``track`` over the chunks a template yielded, keeping their boundaries.

    The result joins to ``track("".join(parts), …)``. It is cut wherever the
    input was, and around each rewritten link and the pixel, so the static
    chunks of a template come out as the same strings for every recipient
    and the MIME encoder's cache still finds them; only the links and the
    chunks that really differ are new.
    """
    whole = "".join(parts)
    swaps: list[tuple[int, int, str]] = []  # (start, end, replacement) in ``whole``
    for match in _HREF.finditer(whole):
        target = html.unescape(match.group(3)).strip()
        if not target.startswith(_TRACKED) or target.startswith(skip) or len(target) > MAX_URL:
            continue
        swaps.append((match.start(3), match.end(3), html.escape(link(target))))
    img = f'<img src="{html.escape(pixel)}" width="1" height="1" alt="" style="border:0">'
    at = len(whole)
    for end in _BODY_END.finditer(whole):
        if not any(start <= end.start() < stop for start, stop, _ in swaps):
            at = end.start()
            break
    swaps.append((at, at, img))
    swaps.sort(key=lambda swap: swap[0])
    ends = list(itertools.accumulate(len(part) for part in parts))
    out: list[str] = []
    position = 0
    for start, stop, replacement in swaps:
        out.extend(_slices(parts, ends, position, start))
        out.append(replacement)
        position = stop
    out.extend(_slices(parts, ends, position, len(whole)))
    return out


def _slices(parts: Sequence[str], ends: list[int], start: int, stop: int) -> list[str]:
    """The text from ``start`` to ``stop`` of the joined ``parts`` (``ends``: where
    each part ends), cut at every part boundary; a part taken whole is not copied."""
    out: list[str] = []
    index = bisect.bisect_right(ends, start)
    while start < stop:
        part, end = parts[index], ends[index]
        begin = end - len(part)
        if start == begin and stop >= end:
            out.append(part)
        else:
            out.append(part[start - begin : min(stop, end) - begin])
        start = min(stop, end)
        index += 1
    return out
