"""How the md and html reports write numbers, and how they escape user text.

Prompts, suite, model, method and run names are user data: ``md`` escapes what Markdown (or the
HTML it may contain) would interpret, ``html`` what HTML would, so ``<script>`` or ``*bold*`` in a
prompt shows as typed.
"""

from __future__ import annotations

import html as _html
import re
from typing import Any

from bench.report.stats import ALPHA

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
SIG = "✱"  # marks a comparison significant after Holm


def md(s: Any) -> str:
    """User text as literal Markdown: one line, HTML specials as entities, inline markup escaped."""
    s = " ".join(str(s).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def html(s: Any) -> str:
    """User text for HTML text and double-quoted attributes."""
    return _html.escape(str(s), quote=True)


def g(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def ci(x: float | None, lo: float | None, hi: float | None, fmt=g) -> str:
    return "—" if x is None else f"{fmt(x)} [{fmt(lo)}, {fmt(hi)}]"


def p_fmt(p: float) -> str:
    """A p-value; below what a float holds it reads as a bound, not as an impossible 0."""
    return "<1e-300" if p < 1e-300 else f"{p:.3g}"


def p_text(r: dict[str, Any]) -> str:
    """``p (p Holm)``, with ✱ when significant after Holm."""
    if r["p_value"] is None:
        return "—"
    return f"{p_fmt(r['p_value'])} ({p_fmt(r['p_holm'])})" + (f" {SIG}" if r["p_holm"] < ALPHA else "")
