"""A browsable API reference rendered on the server from the OpenAPI document.

FastAPI's own Swagger UI loads its scripts from a CDN; Herald works offline,
so this page is plain HTML built here, with no script and no external asset.
"""

from __future__ import annotations

import html
import json
from typing import Any

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald API {version}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}
section{{border-top:1px solid #ddd;padding:.5rem 0}}
code,pre{{background:#f5f5f5;padding:.1rem .3rem;border-radius:3px}}
pre{{padding:.5rem;overflow:auto}}
.m{{display:inline-block;min-width:4rem;font-weight:bold}}
</style></head><body>
<h1>Herald API {version}</h1>
<p>JSON over HTTP under <code>/api/v1</code>. Authenticate with
<code>Authorization: Bearer hrld_…</code> (<code>herald tokens create</code>). Errors are
<code>application/problem+json</code> (RFC 9457). POST requests accept an
<code>Idempotency-Key</code> header. The machine-readable description is
<a href="openapi.json">openapi.json</a>.</p>
{sections}
</body></html>
"""


def render_docs(spec: dict[str, Any]) -> str:
    """The reference page for an OpenAPI document."""
    sections = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            sections.append(_operation(path, method, op, spec))
    version = html.escape(str(spec.get("info", {}).get("version", "")))
    return _PAGE.format(version=version, sections="\n".join(sections))


def _operation(path: str, method: str, op: dict[str, Any], spec: dict[str, Any]) -> str:
    parts = [
        f'<section><h3><span class="m">{html.escape(method.upper())}</span>'
        f"<code>/api/v1{html.escape(path)}</code></h3>",
        f"<p>{html.escape(op.get('summary', ''))}</p>",
    ]
    if op.get("description"):
        parts.append(f"<p>{html.escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        items = "".join(
            f"<li><code>{html.escape(p['name'])}</code> ({html.escape(p.get('in', ''))})"
            f"{' required' if p.get('required') else ''}</li>"
            for p in params
        )
        parts.append(f"<p>Parameters:</p><ul>{items}</ul>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    if body:
        schema = _resolve(body.get("schema", {}), spec)
        shown = json.dumps(schema.get("properties", schema), indent=2)
        parts.append(f"<p>Body:</p><pre>{html.escape(shown)}</pre>")
    parts.append("</section>")
    return "".join(parts)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        found: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return found
    return schema
