from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from herald.domain.htmltext import html_to_text
from herald.domain.rendering import CompiledCampaign, RenderLimits, compile_campaign
from herald.errors import RenderError, TemplateError

STYLED = """<html><head><title>{{ campaign.subject }}</title>
<style>td { color: red; } .btn { color: blue; }
@media (max-width: 600px) { td { color: green; } }</style></head><body>
<p>Hello {{ subscriber.name }} from {{ subscriber.attribs.city }}</p>
<table>
{% for item in items %}
<tr><td><a class="btn" href="{{ item.url }}">{{ item.name }}</a></td></tr>
{% endfor %}
</table>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""


def context(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "subscriber": {
            "email": "ann@example.com",
            "name": "Ann <O'Hara>",
            "attribs": {"city": "Zürich"},
        },
        "campaign": {"id": 1, "name": "Spring", "subject": "News"},
        "unsubscribe_url": "https://example.com/u/1?a=1&b=2",
        "items": [
            {"url": "https://example.com/1", "name": "First"},
            {"url": "https://example.com/2", "name": "Second"},
        ],
    }
    values.update(overrides)
    return values


def render(html: str, text: str | None = None, subject: str = "S", **kw: Any) -> Any:
    return compile_campaign(subject, html, text, **kw).render(context())


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self._style = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._style = dict(attrs).get("style") or ""

    def handle_data(self, data: str) -> None:
        if self._style:
            self.cells.append((data, self._style))
            self._style = ""


def test_it_personalises_subject_html_and_text() -> None:
    result = render(
        "<p>Hi {{ subscriber.name }}</p>",
        "Hi {{ subscriber.name }} in {{ subscriber.attribs.city }}",
        "For {{ subscriber.name }}",
    )
    assert result.subject == "For Ann <O'Hara>"
    assert result.html == "<p>Hi Ann &lt;O&#39;Hara&gt;</p>"
    assert result.text == "Hi Ann <O'Hara> in Zürich"


def test_it_renders_undefined_values_as_empty() -> None:
    result = render("<p>[{{ nope }}{{ subscriber.attribs.missing.deeper }}]</p>", "[{{ x.y.z }}]")
    assert result.html == "<p>[]</p>"
    assert result.text == "[]"


def test_it_makes_the_subject_a_single_line() -> None:
    result = render("x", "x", "Hello\r\nBcc: evil@example.com\n{{ subscriber.email }}\r")
    assert result.subject == "Hello Bcc: evil@example.com ann@example.com"


@pytest.mark.parametrize(
    ("field", "source"),
    [("subject", "{{ x"), ("html", "<p>\n\n{% for %}</p>"), ("text", "a\n{% if x %}")],
)
def test_it_refuses_a_template_with_a_syntax_error_naming_the_line(field: str, source: str) -> None:
    templates = {"subject": "s", "html": "h", "text": "t", field: source}
    with pytest.raises(TemplateError, match=r"line \d"):
        compile_campaign(templates["subject"], templates["html"], templates["text"])


def test_it_refuses_a_template_over_the_size_limit() -> None:
    with pytest.raises(TemplateError, match="larger"):
        compile_campaign("s", "x" * 101, None, limits=RenderLimits(max_template_chars=100))


def test_it_stops_a_render_that_takes_too_long() -> None:
    source = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    campaign = compile_campaign("s", source, "t", limits=RenderLimits(max_seconds=0.05))
    with pytest.raises(RenderError, match="longer than"):
        campaign.render(context())


def test_it_stops_a_silent_nested_loop_that_takes_too_long() -> None:
    source = (
        "{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}done"
    )
    campaign = compile_campaign("s", source, "t", limits=RenderLimits(max_seconds=0.05))
    with pytest.raises(RenderError, match="longer than"):
        campaign.render(context())


def test_it_stops_output_over_the_size_limit() -> None:
    campaign = compile_campaign(
        "s",
        "{% for i in range(1000) %}xxxxxxxxxx{% endfor %}",
        "t",
        limits=RenderLimits(max_output_chars=5000),
    )
    with pytest.raises(RenderError, match="larger than 5000"):
        campaign.render(context())


@pytest.mark.parametrize(
    "expression",
    [
        "'x' * 1000000000",
        "[1] * 1000000000",
        "10 ** 100000000",
        "'%0999999999d' % 1",
        "'{:>999999999}'.format(1)",
        "'x'|center(1000000000)",
        "'x'.ljust(1000000000)",
        "range(100000)|join('x' * 99999)",
        "('x' * 99999).replace('', 'y' * 99999)",
        "lipsum(1000000)",
        "1 / 0",
    ],
)
def test_it_refuses_expressions_that_explode(expression: str) -> None:
    campaign = compile_campaign("s", "{{ " + expression + " }}", "t")
    with pytest.raises(RenderError):
        campaign.render(context())


HOSTILE = [
    "''.__class__.__mro__",
    "''.__class__.__mro__[1].__subclasses__()",
    "cycler.__init__.__globals__",
    "joiner.__init__.__globals__",
    "namespace.__init__.__globals__",
    "self._TemplateReference__context",
    "self.__init__.__globals__",
    "subscriber.__class__",
    "subscriber.__class__.__init__.__globals__",
    "subscriber.attribs.__class__.__base__.__subclasses__()",
    "range.__self__",
    "(1).__class__.__base__",
    "request.application.__globals__",
    "config.__class__",
    "''['__class__']",
    "subscriber|attr('__class__')",
    "''.format.__globals__",
    "'{0.__class__}'.format('')",
    "'{0.__class__.__mro__}'.format(subscriber)",
]


@pytest.mark.parametrize("expression", HOSTILE)
def test_it_never_exposes_python_internals(expression: str) -> None:
    for field in ("subject", "html", "text"):
        templates = {"subject": "s", "html": "h", "text": "t"}
        templates[field] = "[{{ " + expression + " }}]"
        campaign = compile_campaign(templates["subject"], templates["html"], templates["text"])
        try:
            result = campaign.render(context())
        except RenderError:
            continue
        output = result.subject + result.html + result.text
        assert re.search(r"class|object|module|function|method|built|0x|__", output) is None


def test_it_inlines_css_once_keeping_loops_in_table_rows() -> None:
    campaign = compile_campaign("s", STYLED, None)
    assert campaign.css_mode == "template"
    html = campaign.render(context()).html
    assert "@media (max-width: 600px)" in html
    parser = _Cells()
    parser.feed(html)
    assert [text for text, _ in parser.cells] == ["First", "Second"]
    assert all("color: blue" in style for _, style in parser.cells)
    assert html.count('<td style="color: red;">') == 2
    assert "Hello Ann &lt;O&#39;Hara&gt; from Zürich" in html


def test_it_inlines_css_like_the_rendered_output_would_be() -> None:
    once = compile_campaign("s", STYLED, None).render(context()).html
    plain = compile_campaign("s", STYLED, None, inline_css=False).render(context()).html
    per_message = compile_campaign("s", "{{ '' }}" + plain, None)
    assert "<style>" in plain
    assert re.findall(r'style="[^"]*"', once) == re.findall(
        r'style="[^"]*"', per_message.render(context()).html
    )


def test_it_inlines_per_message_when_markup_comes_from_a_variable() -> None:
    campaign = compile_campaign("s", "<style>p { color: red; }</style>{{ block|safe }}", None)
    assert campaign.css_mode == "per_message"
    html = campaign.render(context(block="<p>made at send time</p>")).html
    assert '<p style="color: red;">made at send time</p>' in html


def test_it_inlines_per_message_when_a_class_is_templated() -> None:
    source = '<style>.vip { color: gold; }</style><p class="{{ kind }}">x</p>'
    campaign = compile_campaign("s", source, None)
    assert campaign.css_mode == "per_message"
    assert 'style="color: gold;"' in campaign.render(context(kind="vip")).html


def test_it_leaves_html_alone_without_a_stylesheet() -> None:
    campaign = compile_campaign("s", "<p>{{ subscriber.email }}</p>", None)
    assert campaign.css_mode == "none"
    assert campaign.render(context()).html == "<p>ann@example.com</p>"


def test_it_derives_the_text_part_from_the_html_template_once() -> None:
    campaign = compile_campaign("s", STYLED, None)
    assert campaign.text_mode == "derived"
    text = campaign.render(context()).text
    assert text == (
        "Hello Ann <O'Hara> from Zürich\n\n"
        "First (https://example.com/1)\n"
        "Second (https://example.com/2)\n\n"
        "Unsubscribe (https://example.com/u/1?a=1&b=2)\n"
    )


def test_it_derives_the_same_text_as_converting_each_message() -> None:
    source = STYLED.replace("<title>", "{% if subscriber.name %}<title>")
    source = source.replace("</title>", "</title>{% endif %}") + "&#123;{ not jinja }}"
    derived: CompiledCampaign = compile_campaign("s", source, None, inline_css=False)
    assert derived.text_mode == "derived"
    result = derived.render(context())
    assert result.text == html_to_text(result.html)


def test_it_converts_text_per_message_when_the_template_cannot_be_converted() -> None:
    campaign = compile_campaign("s", "<head>{% set who = 'x' %}</head><p>{{ who }}</p>", None)
    assert campaign.text_mode == "per_message"
    assert campaign.render(context()).text == "x\n"


def test_it_turns_html_into_readable_text() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<script>alert(1)</script><h1>Title</h1><p>One   two\nthree&amp;four</p>"
        "<p>line<br>break</p><ul><li>a</li><li>b</li></ul>"
        '<p><a href="https://x.example/">Go</a> <a href="#top">top</a></p></body></html>'
    )
    assert html_to_text(html) == (
        "Title\n\nOne two three&four\n\nline\nbreak\n\n* a\n* b\n\nGo (https://x.example/) top\n"
    )
