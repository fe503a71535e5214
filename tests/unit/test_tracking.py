"""Tracking links: rewriting, and refusing anything forged or altered."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.domain import tracking
from herald.errors import InvalidInput
from herald.services.tracking import anonymise_ip

SECRET = "s3cret"
BASE = "https://news.example.com"


def rewrite(html: str) -> str:
    return tracking.track(
        html,
        link=lambda target: tracking.click_url(SECRET, BASE, 7, 3, target),
        pixel=tracking.open_url(SECRET, BASE, 7, 3),
        skip=BASE + "/",
    )


def test_it_rewrites_web_links_only_and_adds_the_pixel_before_the_body_ends() -> None:
    html = (
        '<html><body><a href="https://shop.example.com/?a=1&amp;b=2">Shop</a>'
        "<a href='http://blog.example.com/x'>Blog</a>"
        '<a href="mailto:hi@example.com">Mail</a><a href="#top">Top</a>'
        f'<a href="{BASE}/u/abc">Unsubscribe</a></body></html>'
    )
    out = rewrite(html)
    assert out.count(f"{BASE}/t/c/") == 2
    assert "u=https%3A%2F%2Fshop.example.com%2F%3Fa%3D1%26b%3D2" in out  # &amp; unescaped
    assert 'href="mailto:hi@example.com"' in out and 'href="#top"' in out
    assert f'href="{BASE}/u/abc"' in out
    assert out.index("/t/o/") < out.index("</body>")
    assert rewrite("<p>no body tag</p>").endswith('style="border:0">')


def test_a_genuine_click_reads_back_and_any_change_is_refused() -> None:
    target = "https://shop.example.com/sale"
    url = tracking.click_url(SECRET, BASE, 7, 3, target)
    token = url.split("/t/c/")[1].split("?")[0]
    assert tracking.read_click(SECRET, token, target) == (7, 3)
    for forged_target in ("https://evil.example.net/", target + "x", "javascript:alert(1)"):
        with pytest.raises(InvalidInput):
            tracking.read_click(SECRET, token, forged_target)
    with pytest.raises(InvalidInput):
        tracking.read_click("other-secret", token, target)
    altered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(InvalidInput):
        tracking.read_click(SECRET, altered, target)


def test_an_open_token_is_not_a_click_token() -> None:
    pixel = tracking.open_url(SECRET, BASE, 7, 3)
    token = pixel.rsplit("/", 1)[1]
    assert tracking.read_open(SECRET, token) == (7, 3)
    with pytest.raises(InvalidInput):
        tracking.read_click(SECRET, token.removesuffix(".gif"), "https://x.example.com/")


@pytest.mark.parametrize(
    ("address", "mode", "kept"),
    [
        ("198.51.100.77", "anonymised", "198.51.100.0"),
        ("2001:db8:abcd:12:1:2:3:4", "anonymised", "2001:db8:abcd::"),
        ("198.51.100.77", "full", "198.51.100.77"),
        ("198.51.100.77", "none", None),
        ("not-an-address", "anonymised", None),
        (None, "full", None),
    ],
)
def test_reader_addresses_are_kept_as_configured(
    address: str | None, mode: str, kept: str | None
) -> None:
    assert anonymise_ip(address, mode) == kept


def rewrite_parts(parts: list[str]) -> list[str]:
    return tracking.track_parts(
        parts,
        link=lambda target: tracking.click_url(SECRET, BASE, 7, 3, target),
        pixel=tracking.open_url(SECRET, BASE, 7, 3),
        skip=BASE + "/",
    )


NEWSLETTER = (
    "<html><body><h1>Hello Ada</h1>"
    '<p>Read <a href="https://blog.example.com/post?id=1&amp;x=2">the post</a> and '
    "<a href='mailto:hi@example.com'>write</a>.</p><p>"
    + "A long static paragraph. "
    * 20
    + f'</p><a href="https://shop.example.com/">Shop</a><a href="{BASE}/u/abc">Unsubscribe</a>'
    "</body></html>"
)


@given(st.sets(st.integers(min_value=1, max_value=len(NEWSLETTER) - 1), max_size=12))
def test_rewriting_chunks_gives_the_same_message_and_never_joins_chunks(cuts: set[int]) -> None:
    bounds = [0, *sorted(cuts), len(NEWSLETTER)]
    parts = [NEWSLETTER[a:b] for a, b in itertools.pairwise(bounds)]
    out = rewrite_parts(parts)
    assert "".join(out) == rewrite(NEWSLETTER)
    for piece in out:
        if f"{BASE}/t/" in piece:
            continue  # a rewritten link or the pixel
        assert any(piece in part for part in parts), piece  # cut wherever the input was


def test_static_chunks_without_links_come_out_as_they_went_in() -> None:
    static = "<p>" + "The same for every reader. " * 10 + "</p>"
    parts = ["<html><body><p>Hi ", "Ada", "</p>", static, '<a href="https://x.example/">x</a>']
    parts.append("</body></html>")
    out = rewrite_parts(parts)
    assert static in out and "Ada" in out
    assert out.index("Ada") < out.index(static)


@pytest.mark.parametrize(
    "html",
    [
        '<HTML><BODY><A HREF="https://a.example/">A</A><a\nhref = "https://b.example/">b</a></BODY>',
        '<body>\u0130stanbul <A href="https://a.example/\u0130">\u0130</A></Body >',
        '<body><abbr href="https://no.example/">x</abbr><a data-x="<a" href="https://y.example/">y</a>',
    ],
)
def test_links_and_the_body_end_are_found_in_any_case(html: str) -> None:
    out = rewrite(html)
    links = re.findall(r"""<a\b[^>]*?\bhref\s*=\s*(["'])(.*?)\1""", html, re.I | re.S)
    tracked = [u for _, u in links if u.startswith("http")]
    assert out.count(f"{BASE}/t/c/") == len(tracked)
    if re.search(r"</body\s*>", html, re.I):
        assert re.search(r"/t/o/[^\"]+\.gif\"[^>]*></body\s*>", out, re.I), out
