"""The Jinja environments campaign content renders in: sandboxed, strict, and bare.

Content is written by marketers, so it renders in ``ImmutableSandboxedEnvironment`` (Jinja's
``SandboxedEnvironment`` that also refuses to change lists and dicts) with ``StrictUndefined``: a
misspelt variable is an error in the preflight check, never an empty string in a sent email. The
context holds only ``reader``, ``campaign`` and ``links``; the default globals (``range``,
``lipsum``, ``cycler``, ``namespace``…) are removed, there is no loader (so no ``include`` or
``extends``), and ``*``/``**`` refuse results big enough to exhaust memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from traceback import walk_tb
from types import MappingProxyType
from typing import Any

import jinja2
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import pass_eval_context
from markupsafe import Markup, escape

from newsletter.errors import TemplateError

CONTEXT_NAMES = frozenset({"reader", "campaign", "links"})
MAX_REPEAT = 10_000
MAX_EXPONENT = 64

# A Jinja construct in source text: {{ … }}, {% … %} or {# … #}.
JINJA_PATTERN = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


class ContentSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with the operators that can allocate without bound intercepted."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large for a template")
        if operator == "*":
            sized, count = (left, right) if isinstance(right, int) else (right, left)
            if (
                isinstance(sized, str | list | tuple)
                and isinstance(count, int)
                and len(sized) * count > MAX_REPEAT
            ):
                raise SecurityError("repeating a value that many times is not allowed")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        allowed = _Fast.fields.get(kind)
        if allowed is not None and attribute in allowed:
            return object.__getattribute__(obj, attribute)
        if kind is MappingProxyType and attribute not in _PROXY_ATTRIBUTES and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """Every value a template prints loses its control characters (a name can never add a line
    or a header), is escaped where autoescaping is on, and is counted in ``eval_ctx.printed``
    (``[html_bytes, text_chars, values_starting_with_a_dot]``) so that the renderer knows how
    long a line can have grown, and whether a line can start with a dot."""
    if eval_ctx.autoescape:
        out: str = escape(value)
        if not out.isprintable():
            out = Markup(_CONTROL.sub(" ", out))
        printed = getattr(eval_ctx, "printed", None)
        if printed is not None:
            printed[0] += (
                len(out) if out.isascii() else len(out.encode("ascii", "xmlcharrefreplace"))
            )
            if out.startswith("."):
                printed[2] += 1
        return out
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = _CONTROL.sub(" ", text)
    printed = getattr(eval_ctx, "printed", None)
    if printed is not None:
        printed[1] += len(text)
        if text.startswith("."):
            printed[2] += 1
    return text


_PROXY_ATTRIBUTES = frozenset(dir(MappingProxyType))


class _Fast:
    """Attribute reads on the context objects that skip the sandbox's generic checks: only
    the public data fields of ``Reader`` and ``Links`` and the keys of the ``campaign``
    mapping, which hold plain data."""

    fields: dict[type, frozenset[str]] = {}


def make_environment(*, html: bool) -> ContentSandbox:
    """A content sandbox; ``html`` turns on autoescaping (for the HTML part)."""
    environment = ContentSandbox(
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        newline_sequence="\r\n",
        keep_trailing_newline=True,
        auto_reload=False,
        loader=jinja2.DictLoader({}),  # include/extends/import find nothing
        cache_size=0,
    )
    environment.globals.clear()
    return environment


HTML_ENV = make_environment(html=True)
TEXT_ENV = make_environment(html=False)


def allow_fields(kind: type, names: frozenset[str]) -> None:
    """Let templates read these attributes of ``kind`` without the generic sandbox checks."""
    if any(name.startswith("_") for name in names):
        raise ValueError("private attributes are never readable from a template")
    _Fast.fields[kind] = names


def template_line(error: BaseException) -> int | None:
    """The template line a Jinja runtime error happened on, when Jinja kept it."""
    if isinstance(error, jinja2.TemplateSyntaxError):
        return error.lineno
    line = None
    for frame, lineno in walk_tb(error.__traceback__):
        if frame.f_code.co_filename == "<template>":
            line = lineno
    return line


def describe(error: BaseException) -> str:
    """A marketer's reading of a Jinja error."""
    if isinstance(error, SecurityError):
        return (
            f"not allowed in a template: {error} (templates may only read reader, campaign, links)"
        )
    if isinstance(error, jinja2.UndefinedError):
        return f"unknown variable or attribute: {error.message}"
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"template syntax error: {error.message}"
    if isinstance(error, jinja2.TemplateNotFound):
        return "templates cannot include or extend other templates"
    if isinstance(error, jinja2.TemplateError):
        return f"template error: {error.message or error}"
    return f"template failed: {type(error).__name__}: {error}"


def compile_template(
    environment: ContentSandbox, source: str, where: str, first_line: int = 1
) -> jinja2.Template:
    """Compile ``source``; a syntax error becomes a ``TemplateError`` naming ``where`` and the
    line (counted from ``first_line``)."""
    try:
        template = environment.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"{where}:{first_line + error.lineno - 1}: {describe(error)}") from None
    # Two costs of every render that buy nothing here (a campaign renders thousands a second):
    # the template's globals are a ChainMap over the environment's, which has none
    # (``make_environment``), and each new context lists it in Python; and the generated code
    # escapes what ``_finalize`` returns, already escaped, copying it.
    template.globals = {}
    template.root_render_func.__globals__["escape"] = _escape_once
    return template


def _escape_once(value: Any) -> Markup:
    """``escape`` for a template's output: what ``_finalize`` escaped is returned as it is."""
    return value if type(value) is Markup else escape(value)


def guarded(where: str, first_line: int | None = None) -> Callable[[BaseException], TemplateError]:
    """Build the ``TemplateError`` for an error raised while rendering text from ``where``."""

    def convert(error: BaseException) -> TemplateError:
        line = template_line(error)
        at = f"{where}:{first_line + line - 1}" if line and first_line is not None else where
        return TemplateError(f"{at}: {describe(error)}")

    return convert
