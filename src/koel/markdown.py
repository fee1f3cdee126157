"""Markdown -> speakable plain text (headings, lists, links, code and emphasis handled)."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: their text
    (re.compile(r"<[^>\n]+>"), ""),  # inline HTML tags
    (re.compile(r"^\s{0,3}#{1,6}\s*(.*?)\s*#*\s*$", re.M), r"\1."),  # headings end a sentence
    (re.compile(r"^\s*>\s?", re.M), ""),  # block quotes
    (re.compile(r"^\s*([-*+]|\d+[.)])\s+", re.M), ""),  # list markers
    (re.compile(r"^\s*([-*_]\s*){3,}$", re.M), ""),  # horizontal rules
    (re.compile(r"`([^`]*)`"), r"\1"),  # inline code
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),
    (re.compile(r"(?<![\w*])[*_]([^*_\n]+)[*_](?![\w*])"), r"\1"),
    (re.compile(r"\|"), " "),  # table pipes
]


def markdown_to_text(source: str) -> str:
    """Strip Markdown syntax, keeping paragraph breaks (blank lines) for pauses."""
    text = _FENCE.sub("", source)
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    text = re.sub(r"\.\.$", ".", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
