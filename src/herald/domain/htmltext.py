"""Plain-text alternative of an HTML email body, and HTML work on templates.

``html_to_text`` uses the standard library's tokenising ``html.parser`` (no
tree building), so it never moves content around: text comes out in source
order. That property is what lets ``herald.domain.rendering`` run it over a
*template* (with Jinja constructs hidden behind placeholders) once per
campaign instead of over every rendered message.

The template helpers (``split_template``, ``inline_css``,
``text_template_source``) hide Jinja constructs behind placeholders so that
HTML processing can be done once on a template's source, and refuse (return
None) whenever the result could differ from processing each rendered message.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any, Protocol

from jinja2 import nodes

_DROPPED = frozenset({"head", "style", "script", "title", "template", "noscript"})
_BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
_PARAGRAPHS = frozenset({"p", "table", "h1", "h2", "h3", "ul", "ol", "blockquote"})
_PARAGRAPH_BREAK = "\n\n"
_LINE_BREAK = "\n"
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_CONSTRUCT_ENDS = frozenset({"variable_end", "block_end", "comment_end", "raw_end"})
_STYLESHEET = re.compile(r"<style\b|<link\b[^>]*stylesheet", re.IGNORECASE)
_TAG_EDGE = re.compile(r"<[A-Za-z/!?]|>")
_RAW_TEXT_EDGE = re.compile(r"</?(?:title|textarea|script|style|xmp)\b", re.IGNORECASE)
_CLASS_OR_ID_OPEN = re.compile(r"""\s(?:class|id)\s*=\s*(?:["'][^"']*|[^\s"'>]*)$""", re.I)
_JINJA_OPENER = re.compile(r"\{(?=[{%#])")
_SCOPED_STATEMENT = re.compile(
    r"\{%[-+]?\s*(?:set|macro|call|import|from|with|block|extends|include)\b"
)


class _TextCollector(HTMLParser):
    """Collects text pieces and break markers in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._dropping: list[str] = []
        self._links: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self._dropping.append(tag)
        elif self._dropping:
            return
        elif tag == "br":
            self.pieces.append(_LINE_BREAK)
        elif tag == "li":
            self.pieces.append("\n* ")
        elif tag in _BLOCKS:
            self.pieces.append(_PARAGRAPH_BREAK if tag in _PARAGRAPHS else "\n")
        elif tag == "td" or tag == "th":
            self.pieces.append(" ")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self._links.append((href.strip(), len(self.pieces)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and not self._dropping:
            self.pieces.append(_LINE_BREAK)
        elif tag == "hr" and not self._dropping:
            self.pieces.append(_PARAGRAPH_BREAK)

    def handle_endtag(self, tag: str) -> None:
        if self._dropping:
            if tag == self._dropping[-1]:
                self._dropping.pop()
            return
        if tag in _BLOCKS and tag not in {"li", "tr"}:
            self.pieces.append(_PARAGRAPH_BREAK if tag in _PARAGRAPHS else "\n")
        elif tag == "a" and self._links:
            self._close_link()

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            self.pieces.append(_SPACES.sub(" ", data))

    def _close_link(self) -> None:
        # Links become "text (url)"; a link whose text already is its URL, or
        # an in-page anchor, is left as the text alone.
        href, start = self._links.pop()
        text = "".join(self.pieces[start:]).strip()
        if href and not href.startswith("#") and href != text:
            self.pieces.append(f" ({href})" if text else href)


def html_to_text(html: str) -> str:
    """Return a readable plain-text version of ``html``.

    Paragraphs and block elements become blank lines or line breaks, ``<br>``
    a line break, links ``text (url)``; ``<head>``, ``<style>``, ``<script>``
    and ``<title>`` are dropped, runs of whitespace collapse to one space and
    entities are unescaped. Never raises on malformed HTML.
    """
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    text = "".join(collector.pieces)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    joined = "\n".join(lines)
    # Keep at most one blank line between paragraphs.
    joined = re.sub(r"\n{3,}", "\n\n", joined)
    return joined.strip("\n") + "\n" if joined.strip() else ""


class TemplateLexer(Protocol):
    """What the template helpers need of a Jinja environment."""

    def lex(self, source: str) -> Iterable[tuple[int, str, str]]: ...


def split_template(env: TemplateLexer, source: str) -> list[tuple[str, str]] | None:
    """Split a Jinja template into ``(kind, text)`` segments, in order.

    ``kind`` is ``"data"`` for literal template text and ``"expr"``,
    ``"stmt"`` or ``"comment"`` for a whole Jinja construct (a raw block is
    one ``"stmt"``). Returns None when the segments do not rebuild ``source``
    exactly (the caller then falls back to per-message processing).
    """
    segments: list[tuple[str, str]] = []
    current: list[str] = []
    kind = ""
    for _, ttype, value in env.lex(source):
        if not current and ttype == "data":
            segments.append(("data", value))
            continue
        if not current:
            kind = {"variable_begin": "expr", "comment_begin": "comment"}.get(ttype, "stmt")
        current.append(value)
        if ttype in _CONSTRUCT_ENDS:
            segments.append((kind, "".join(current)))
            current = []
    if current or "".join(text for _, text in segments) != source:
        return None
    return segments


def has_stylesheet(source: str) -> bool:
    """Return whether ``source`` has a ``<style>`` block or stylesheet link to inline."""
    return _STYLESHEET.search(source) is not None


def emits_markup(ast: nodes.Template) -> bool:
    """Return whether a template can output unescaped markup (``|safe``, autoescape off).

    Such markup exists only after rendering, so template-level CSS inlining
    and text derivation cannot see it.
    """
    if any(True for _ in ast.find_all((nodes.EvalContextModifier, nodes.MarkSafe))):
        return True
    return any(node.name == "safe" for node in ast.find_all(nodes.Filter))


def inline_css(env: TemplateLexer, source: str, inliner: Any) -> str | None:
    """Return ``source`` with its CSS inlined by ``inliner``, Jinja constructs intact.

    Constructs become HTML comments in text (an HTML parser keeps comments in
    place, even between table rows, where it would move text) or opaque
    tokens inside tags and raw-text elements. Returns None when the
    placeholders do not come back exactly once each, in order, or when a
    construct sits in a class/id attribute that selectors would match on.
    """
    segments = split_template(env, source)
    nonce = secrets.token_hex(4)
    if segments is None or nonce in source:
        return None
    protected: list[str] = []
    state = _TagState()
    for index, (kind, text) in enumerate(segments):
        if kind == "data":
            protected.append(text)
            state.advance(text)
            continue
        token = f"hj{nonce}n{index}x"
        if state.in_tag and _CLASS_OR_ID_OPEN.search(state.tag_text):
            return None
        protected.append(token if state.in_tag or state.raw_text else f"<!--{token}-->")
    return _restore(str(inliner.inline("".join(protected))), nonce, segments)


def _restore(inlined: str, nonce: str, segments: list[tuple[str, str]]) -> str | None:
    pattern = re.compile(rf"<!--hj{nonce}n(\d+)x-->|hj{nonce}n(\d+)x")
    found: list[int] = []

    def put_back(match: re.Match[str]) -> str:
        index = int(match[1] or match[2])
        found.append(index)
        return segments[index][1]

    restored = pattern.sub(put_back, inlined)
    expected = [index for index, (kind, _) in enumerate(segments) if kind != "data"]
    return restored if found == expected else None


class _TagState:
    """Tracks, across literal template text, whether we are inside a tag."""

    def __init__(self) -> None:
        self.in_tag = False
        self.tag_text = ""
        self.raw_text = False

    def advance(self, data: str) -> None:
        for match in _RAW_TEXT_EDGE.finditer(data):
            self.raw_text = not match.group().startswith("</")
        last = None
        for last in _TAG_EDGE.finditer(data):  # noqa: B007 - only the last edge matters
            pass
        if last is None:
            self.tag_text = self.tag_text + data if self.in_tag else ""
        elif last.group() == ">":
            self.in_tag, self.tag_text = False, ""
        else:
            self.in_tag, self.tag_text = True, data[last.start() :]


def _attach_statement_lines(text: str, segments: list[tuple[str, str]]) -> str:
    """Join lines holding only statements to the previous line; trim spaces by them.

    Rendered per message, a ``{% for %}`` on its own line leaves no line of
    its own; dropping the line break *before* it (not after, as Jinja's
    trim_blocks would) keeps the loop body's own line breaks.
    """

    def attach(match: re.Match[str]) -> str:
        indexes = [int(i) for i in re.findall("\ue000(\\d+)\ue001", match[1])]
        if all(segments[i][0] in {"stmt", "comment"} for i in indexes):
            return match[1]
        return match[0]

    # Spaces next to a statement at a line's edge would survive rendering,
    # where per-message conversion strips them with the line.
    text = re.sub(" +((?:\ue000\\d+\ue001)+)(?=\n|$)", attach, text)
    text = re.sub("(?m)^((?:\ue000\\d+\ue001)+) +", attach, text)
    text = re.sub("\n((?:\ue000\\d+\ue001)+)(?=\n|$)", attach, text)
    return re.sub("^((?:\ue000\\d+\ue001)+)\n", attach, text)


def text_template_source(
    env: TemplateLexer, source: str, converter: Callable[[str], str]
) -> str | None:
    """Return a text template made by running ``converter`` over an HTML template.

    Jinja constructs ride through the conversion as private-use placeholders
    and are put back; literal text that would read as Jinja syntax is
    escaped. Returns None when that cannot be done faithfully (a placeholder
    duplicated, or a ``set``/``macro``-like statement dropped or moved). A
    result that does not compile is the caller's signal to fall back too.
    """
    segments = split_template(env, source)
    if segments is None or "\ue000" in source or "\ue001" in source:
        return None
    protected = "".join(
        text if kind == "data" else f"\ue000{index}\ue001"
        for index, (kind, text) in enumerate(segments)
    )
    converted = _attach_statement_lines(converter(protected), segments)
    pieces = re.split("\ue000(\\d+)\ue001", converted)
    out: list[str] = []
    seen: list[int] = []
    for position, piece in enumerate(pieces):
        if position % 2 == 0:
            out.append(_JINJA_OPENER.sub("{{ '{' }}", piece))
        else:
            seen.append(int(piece))
            out.append(segments[int(piece)][1])
    # Link URLs move after their text, so expressions may change places; a
    # statement that scopes or defines something must stay, in order.
    scoped = [i for i, (kind, text) in enumerate(segments) if _SCOPED_STATEMENT.match(text)]
    if len(seen) != len(set(seen)) or [i for i in seen if i in scoped] != scoped:
        return None
    return "".join(out)
