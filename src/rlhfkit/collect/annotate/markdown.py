"""Markdown for the annotation pages: model outputs (with code blocks) and the guidelines file.

Rendered on the server by markdown-it-py (CommonMark, plus tables and strikethrough; a single
newline is a line break) with raw HTML **off**: any ``<script>``, ``<img onerror=…>`` or other tag in the text comes out escaped, as
text. Links keep only ``http``, ``https`` and ``mailto`` targets (no ``javascript:``, ``data:``,
relative or protocol-relative URLs), open in a new tab and carry ``rel="noopener noreferrer
nofollow"``. Images are not rendered (``![alt](url)`` stays text): the page's Content-Security-Policy
(``img-src 'self'``) would block a remote one anyway, and a model output has no business loading
one. The page inserts this HTML as is, and the CSP (no inline script) still stands behind it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from markdown_it import MarkdownIt

SAFE_LINK = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)


def _link_open(self: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    token.attrSet("target", "_blank")
    token.attrSet("rel", "noopener noreferrer nofollow")
    return self.renderToken(tokens, idx, options, env)


def _make() -> MarkdownIt:
    # breaks: a single newline is a line break, as in chat interfaces: model outputs put one
    # thought per line far more often than they mean a soft-wrapped paragraph.
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    # markdown-it already refuses javascript:, vbscript:, file: and data: URLs; allow only these.
    md.validateLink = lambda url: bool(SAFE_LINK.match(url.strip()))  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    return md


_MD = _make()


@functools.lru_cache(maxsize=8192)
def render_markdown(text: str) -> str:
    """``text`` (Markdown) as safe HTML: raw HTML escaped, only http(s)/mailto links, no images.
    Cached: each item's texts are rendered once, however often they are shown."""
    return _MD.render(text)
