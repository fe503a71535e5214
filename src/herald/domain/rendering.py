"""Sandboxed, personalised rendering of a campaign's subject, HTML and text.

Per campaign, ``compile_campaign`` compiles the templates once (and, where it
is safe, inlines CSS into the HTML template and derives the text template from
it); per recipient, ``CompiledCampaign.render`` runs them under a time and
size budget. Templates are written by staff, not subscribers, but are still
treated as hostile: Jinja2's sandbox blocks Python internals, and the extra
guards in ``_Sandbox`` bound loops, repetition and padding so that one
template cannot stall a worker.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any, Literal

import css_inline
from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from herald.domain import htmltext
from herald.domain.htmltext import html_to_text
from herald.errors import RenderError, TemplateError

_BUDGET_KEY = "herald_render_budget"
_LOOP_GUARD = "herald_loop_guard"
_WIDE_PERCENT_FORMAT = re.compile(r"%[^a-zA-Z%]*(\*|\d{6,})")
_WIDE_BRACE_FORMAT = re.compile(r"\d{6,}|:[^{}]*\{")
_SUBJECT_BREAKS = re.compile(r"\s*[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+\s*")

CssMode = Literal["none", "template", "per_message"]
TextMode = Literal["template", "derived", "per_message"]


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Bounds on one campaign's templates and on each render."""

    max_template_chars: int = 1_000_000
    max_output_chars: int = 2_000_000
    max_seconds: float = 2.0
    max_int_argument: int = 100_000


@dataclass(frozen=True, slots=True)
class Rendered:
    """One recipient's rendered message.

    ``html_parts``/``text_parts`` are the chunks the templates yielded; pass
    them to ``MessageBuilder.build`` so that static chunks hit its cache.
    """

    subject: str
    html_parts: tuple[str, ...]
    text_parts: tuple[str, ...]

    @property
    def html(self) -> str:
        return "".join(self.html_parts)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class _Budget:
    """The deadline of one render, checked by loops and between chunks."""

    __slots__ = ("deadline", "max_seconds")

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.deadline = time.monotonic() + max_seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderError(f"Rendering took longer than {self.max_seconds:g} s.")


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox plus bounds on the cheap ways to burn CPU or memory."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(
        self,
        limits: RenderLimits,
        *,
        autoescape: bool,
        keep_trailing_newline: bool = False,
    ) -> None:
        # Undefined names and attributes (even chained ones) render as "".
        super().__init__(
            autoescape=autoescape,
            undefined=ChainableUndefined,
            keep_trailing_newline=keep_trailing_newline,
            cache_size=0,
        )
        self.limits = limits
        del self.globals["lipsum"]
        for name, func in list(self.filters.items()):
            self.filters[name] = self._bounded_filter(func)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            self._check_repeat(left, right)
            self._check_repeat(right, left)
        elif operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise SecurityError("exponent too large")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Template data is mostly dicts: try the key first, which avoids an
        # AttributeError per lookup (a key named like a dict method wins).
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self._check_arguments(args, kwargs)
        # The sandbox hands str.format out wrapped; look through the wrapper.
        method = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(method, "__name__", ""), args, __self.limits)
        return super().call(__context, __obj, *args, **kwargs)

    @pass_context
    def herald_loop_guard(self, context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield ``iterable``'s items, stopping the render when time is up."""
        budget = context.parent.get(_BUDGET_KEY)
        for item in iterable:
            if isinstance(budget, _Budget):
                budget.check()
            yield item

    def _check_repeat(self, sequence: Any, count: Any) -> None:
        if (
            isinstance(sequence, str | list | tuple)
            and isinstance(count, int)
            and len(sequence) * count > self.limits.max_output_chars
        ):
            raise SecurityError("repetition result too large")

    def _check_arguments(self, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and abs(value) > self.limits.max_int_argument:
                raise SecurityError(f"argument {value} is too large")

    def _bounded_filter(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a filter so that size-like arguments stay within bounds."""
        name = getattr(func, "__name__", "").removeprefix("do_")
        # A pass_context/pass_eval_context/pass_environment filter gets that
        # object first; the filtered value comes next.
        skip = 1 if hasattr(func, "jinja_pass_arg") else 0

        def bounded(*args: Any, **kwargs: Any) -> Any:
            values = args[skip:]
            self._check_arguments(values[1:], kwargs)
            if values and isinstance(values[0], str):
                _check_str_method(values[0], name, values[1:], self.limits)
            elif name == "join" and len(values) > 1 and isinstance(values[0], Sized):
                _check_str_method(str(values[1]), name, [values[0]], self.limits)
            return func(*args, **kwargs)

        bounded.__dict__.update(getattr(func, "__dict__", {}))
        return bounded


def _check_percent_format(template: str) -> None:
    if _WIDE_PERCENT_FORMAT.search(template):
        raise SecurityError("format width too large")


def _check_str_method(value: str, name: str, args: Any, limits: RenderLimits) -> None:
    """Refuse str methods/filters whose result would be huge."""
    if name in {"format", "format_map"}:
        if _WIDE_BRACE_FORMAT.search(value) or _WIDE_PERCENT_FORMAT.search(value):
            raise SecurityError("format width too large")
    elif name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        occurrences = value.count(args[0]) if args[0] else len(value) + 1
        if occurrences * len(args[1]) > limits.max_output_chars:
            raise SecurityError("replacement result too large")
    elif (
        name == "join"
        and args
        and isinstance(args[0], Sized)
        and len(value) * len(args[0]) > limits.max_output_chars
    ):
        raise SecurityError("join result too large")


class _Runner:
    """A compiled template, run without ``Template.generate``'s per-call cost.

    ``generate`` copies a ChainMap of globals into every context (as slow as
    the render itself); a sandbox's globals never change after compilation,
    so they are flattened once. The sandbox checks live in the compiled code
    and the environment, so they apply unchanged.
    """

    __slots__ = ("_globals", "_template")

    def __init__(self, template: Template) -> None:
        self._template = template
        self._globals = dict(template.globals)

    def chunks(self, variables: Mapping[str, Any]) -> Iterator[str]:
        """Return the chunks the template yields for ``variables`` (lazily)."""
        tpl, env = self._template, self._template.environment
        parent = {**self._globals, **variables}
        ctx = env.context_class(env, parent, tpl.name, tpl.blocks, globals=self._globals)
        return tpl.root_render_func(ctx)


class CompiledCampaign:
    """A campaign's templates, compiled once and rendered per recipient.

    ``css_mode`` and ``text_mode`` say how CSS inlining and the text part are
    done (see ``compile_campaign``); they are exposed for logs and tests.
    """

    def __init__(
        self,
        *,
        subject: Template,
        html: Template,
        text: Template | None,
        css_mode: CssMode,
        text_mode: TextMode,
        limits: RenderLimits,
    ) -> None:
        self._subject = _Runner(subject)
        self._html = _Runner(html)
        self._text = None if text is None else _Runner(text)
        self.css_mode: CssMode = css_mode
        self.text_mode: TextMode = text_mode
        self.limits = limits
        self._inliner = _make_inliner()

    def render(self, context: Mapping[str, object]) -> Rendered:
        """Render subject, HTML and text for one recipient.

        ``context`` usually holds ``subscriber`` (with ``email``, ``name``,
        ``attribs``), ``campaign`` and ``unsubscribe_url``. The subject comes
        back as one line. Raises ``RenderError`` (message = the reason) for a
        sandbox violation, an exception in the template, output over
        ``max_output_chars`` or a render over ``max_seconds``.
        """
        budget = _Budget(self.limits.max_seconds)
        variables = {**context, _BUDGET_KEY: budget}
        subject = "".join(self._run(self._subject, variables, budget))
        subject = _SUBJECT_BREAKS.sub(" ", subject).strip()
        html_parts = self._run(self._html, variables, budget)
        if self.css_mode == "per_message":
            html_parts = [self._inline("".join(html_parts))]
        if self._text is not None:
            text_parts = self._run(self._text, variables, budget)
        else:
            text_parts = [html_to_text("".join(html_parts))]
        return Rendered(subject, tuple(html_parts), tuple(text_parts))

    def _run(self, template: _Runner, variables: dict[str, Any], budget: _Budget) -> list[str]:
        """Return the chunks of ``template``, enforcing the budget between chunks."""
        parts: list[str] = []
        append = parts.append
        total = 0
        limit = self.limits.max_output_chars
        try:
            for chunk in template.chunks(variables):
                total += len(chunk)
                if total > limit:
                    raise RenderError(f"The rendered output is larger than {limit} characters.")
                append(chunk)
                # Reading the clock per chunk would cost more than the rest of
                # this loop; loops check it themselves (herald_loop_guard).
                if not len(parts) & 63:
                    budget.check()
        except RenderError:
            raise
        except SecurityError as exc:
            raise RenderError(f"The template did something unsafe: {exc}") from exc
        except Exception as exc:
            raise RenderError(f"The template failed: {type(exc).__name__}: {exc}") from exc
        return parts

    def _inline(self, html: str) -> str:
        try:
            return str(self._inliner.inline(html))
        except (css_inline.InlineError, ValueError) as exc:
            raise RenderError(f"CSS inlining failed: {exc}") from exc


def _make_inliner() -> Any:
    # keep_at_rules keeps @media queries in a <style> block for clients that
    # support them; remote stylesheets are never fetched (no I/O here).
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def compile_campaign(
    subject: str,
    html: str,
    text: str | None,
    *,
    inline_css: bool = True,
    limits: RenderLimits | None = None,
) -> CompiledCampaign:
    """Compile a campaign's templates; raises ``TemplateError`` (with line) if unusable.

    1. Each template is size-checked and compiled in the sandbox; syntax
       errors are reported with the template's name and line.
    2. CSS: inlining the *rendered* HTML costs ~0.4 ms per 10 KB message, too
       slow per recipient, so the *template source* is inlined once. An HTML
       parser would move Jinja text such as a ``{% for %}`` between ``<tr>``
       rows out of the table, so every Jinja construct is first hidden
       behind an HTML comment (kept in place even inside tables) or, inside
       a tag, an opaque token, then put back. When that is not provably
       faithful (placeholders moved, lost, or inside class/id attributes
       that selectors match; markup produced by ``|safe``) the rendered HTML
       is inlined per message instead. Known difference: the parser adds an
       implied ``<tbody>`` inside a loop over rows, so each iteration opens
       one (browsers build the same rows; ``tbody``-based selectors differ).
    3. Text: without a text template, ``html_to_text`` is applied once to the
       HTML template (Jinja hidden the same way; its tokenising parser
       never reorders), giving a text template; when that fails the rendered
       HTML is converted per message.
    """
    limits = limits or RenderLimits()
    html_env = _Sandbox(limits, autoescape=True, keep_trailing_newline=True)
    subject_tpl = _compile(_Sandbox(limits, autoescape=False), subject, "subject", limits)
    html_source = html.replace("\r\n", "\n").replace("\r", "\n")
    html_ast = _parse(html_env, html_source, "HTML", limits)
    emits_markup = htmltext.emits_markup(html_ast)
    css_mode: CssMode = "none"
    if inline_css and htmltext.has_stylesheet(html_source):
        inlined = None
        if not emits_markup:
            inlined = htmltext.inline_css(html_env, html_source, _make_inliner())
        if inlined is None:
            css_mode = "per_message"
        else:
            css_mode, html_source = "template", inlined
            html_ast = _parse(html_env, html_source, "HTML", limits)
    html_tpl = _from_ast(html_env, html_ast, "HTML")
    if text is not None:
        text_tpl = _compile(_Sandbox(limits, autoescape=False), text, "text", limits)
        return CompiledCampaign(
            subject=subject_tpl,
            html=html_tpl,
            text=text_tpl,
            css_mode=css_mode,
            text_mode="template",
            limits=limits,
        )
    derived = _derive_text(html_env, html_source, limits, emits_markup or css_mode == "per_message")
    return CompiledCampaign(
        subject=subject_tpl,
        html=html_tpl,
        text=derived,
        css_mode=css_mode,
        text_mode="per_message" if derived is None else "derived",
        limits=limits,
    )


def _derive_text(
    html_env: _Sandbox, html_source: str, limits: RenderLimits, skip: bool
) -> Template | None:
    """Return a text template derived from the HTML template, or None to convert per message."""
    if skip:
        return None
    source = htmltext.text_template_source(html_env, html_source, html_to_text)
    if source is None:
        return None
    text_env = _Sandbox(limits, autoescape=False, keep_trailing_newline=True)
    try:
        return _compile(text_env, source, "derived text", limits)
    except TemplateError:
        return None


def _compile(env: _Sandbox, source: str, name: str, limits: RenderLimits) -> Template:
    return _from_ast(env, _parse(env, source, name, limits), name)


def _parse(env: _Sandbox, source: str, name: str, limits: RenderLimits) -> nodes.Template:
    """Parse ``source``, wrapping every loop's iterable in the loop guard."""
    if len(source) > limits.max_template_chars:
        raise TemplateError(
            f"The {name} template is larger than {limits.max_template_chars} characters."
        )
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"The {name} template, line {exc.lineno}: {exc.message}") from exc
    for loop in ast.find_all(nodes.For):
        guard = nodes.Call(nodes.EnvironmentAttribute(_LOOP_GUARD), [loop.iter], [], None, None)
        guard.set_lineno(loop.lineno)
        guard.set_environment(env)
        loop.iter = guard
    return ast


def _from_ast(env: _Sandbox, ast: nodes.Template, name: str) -> Template:
    try:
        code = env.compile(ast)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"The {name} template, line {exc.lineno}: {exc.message}") from exc
    return env.template_class.from_code(env, code, env.make_globals(None))
