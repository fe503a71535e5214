"""Render + MIME cost per message for a ~10 KB newsletter, beside EmailMessage.

Run: .venv/bin/python bench/mime.py
Prints, for each stage, the median over several runs of the per-message time
in microseconds and the corresponding messages per second (one core).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from herald.domain.mime import MessageBuilder, make_message_id
from herald.domain.rendering import Rendered, compile_campaign

RUNS = 7
MESSAGES_PER_RUN = 400

ARTICLE = """
<tr>
  <td class="article">
    <h2 class="title"><a href="https://news.example.com/articles/{{ article.slug
      }}?utm_source=herald&amp;utm_medium=email">{{ article.title }}</a></h2>
    <p class="lead">Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor
    incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation
    ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit
    in voluptate velit esse cillum dolore eu fugiat nulla pariatur.</p>
    <a class="button" href="https://news.example.com/articles/{{ article.slug }}"
      >Read more &rarr;</a>
  </td>
</tr>"""

HTML = (
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ campaign.subject }}</title>
<style>
body { margin: 0; padding: 0; background: #f4f4f4; font-family: Helvetica, Arial, sans-serif; }
.wrapper { width: 100%; background: #f4f4f4; }
.container { width: 600px; margin: 0 auto; background: #ffffff; }
.header { background: #003366; color: #ffffff; padding: 24px; font-size: 24px; }
.article { padding: 16px 24px; border-bottom: 1px solid #eeeeee; }
.title a { color: #003366; text-decoration: none; font-size: 20px; }
.lead { color: #444444; font-size: 15px; line-height: 1.5; }
.button { display: inline-block; background: #ff6600; color: #ffffff; padding: 8px 16px; }
.footer { color: #888888; font-size: 12px; padding: 24px; text-align: center; }
@media only screen and (max-width: 620px) { .container { width: 100% !important; } }
</style></head>
<body><table class="wrapper" role="presentation"><tr><td>
<table class="container" role="presentation">
<tr><td class="header">Weekly news from Example — issue {{ campaign.id }}</td></tr>
<tr><td class="article"><p>Hello {{ subscriber.name or "there" }},</p>
<p>Here is what happened this week{% if subscriber.attribs.city %}
around {{ subscriber.attribs.city }}{% endif %}.</p></td></tr>
{% for article in campaign.articles %}"""
    + ARTICLE
    + """
{% endfor %}
<tr><td class="footer">You receive this because you subscribed as {{ subscriber.email }}.<br>
<a href="{{ unsubscribe_url }}">Unsubscribe</a> · Example Ltd, 1 Example Street, Zürich</td></tr>
</table></td></tr></table></body></html>"""
)

ARTICLES = [{"slug": f"story-{n}", "title": f"Story number {n}: what changed"} for n in range(8)]


def _context(n: int) -> dict[str, object]:
    return {
        "subscriber": {
            "email": f"user{n}@example.org",
            "name": f"Subscriber Nº{n}",
            "attribs": {"city": "Zürich" if n % 2 else ""},
        },
        "campaign": {"id": 42, "name": "weekly", "subject": "Weekly", "articles": ARTICLES},
        "unsubscribe_url": f"https://news.example.com/u/{n}/token{n:08d}",
    }


def _measure(label: str, job: Callable[[int], object]) -> None:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for n in range(MESSAGES_PER_RUN):
            job(n)
        samples.append((time.perf_counter() - start) / MESSAGES_PER_RUN)
    per_message = statistics.median(samples)
    print(f"{label:<34} {per_message * 1e6:9.1f} us/msg {1 / per_message:10.0f} msg/s")


def main() -> None:
    campaign = compile_campaign("Weekly news for {{ subscriber.name }}", HTML, None)
    builder = MessageBuilder(
        "Example News",
        "news@example.com",
        message_id_domain="example.com",
        list_unsubscribe_mailto="unsubscribe@example.com",
    )
    contexts = [_context(n) for n in range(MESSAGES_PER_RUN)]
    rendered = [campaign.render(c) for c in contexts]
    now = datetime.now(UTC)
    print(f"template: {len(HTML)} chars; rendered HTML {len(rendered[1].html)} chars")
    print(f"css mode: {campaign.css_mode}, text mode: {campaign.text_mode}")

    def build(n: int, r: Rendered) -> bytes:
        return builder.build(
            to_addr=f"user{n}@example.org",
            to_name=f"Subscriber Nº{n}",
            subject=r.subject,
            html=r.html_parts,
            text=r.text_parts,
            message_id=make_message_id(n, 42, "secret", "example.com"),
            unsubscribe_url=f"https://news.example.com/u/{n}/token{n:08d}",
        )

    def baseline(n: int, r: Rendered) -> bytes:
        message = EmailMessage()
        message["From"] = formataddr(("Example News", "news@example.com"))
        message["To"] = formataddr((f"Subscriber Nº{n}", f"user{n}@example.org"))
        message["Subject"] = r.subject
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_message_id(n, 42, "secret", "example.com")
        message["List-Unsubscribe"] = f"<https://news.example.com/u/{n}/token{n:08d}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(r.text, cte="quoted-printable")
        message.add_alternative(r.html, subtype="html", cte="quoted-printable")
        return message.as_bytes(policy=SMTP)

    _measure("render only", lambda n: campaign.render(contexts[n]))
    _measure("MIME build only", lambda n: build(n, rendered[n]))
    _measure("render + MIME", lambda n: build(n, campaign.render(contexts[n])))
    _measure("baseline: EmailMessage (MIME only)", lambda n: baseline(n, rendered[n]))


if __name__ == "__main__":
    main()
