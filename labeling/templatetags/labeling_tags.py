from __future__ import annotations

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Markdown to HTML, then through nh3's allow-list: scripts, handlers and javascript: go."""
    html = markdown_lib.markdown(text or "", extensions=["fenced_code", "sane_lists"])
    return mark_safe(nh3.clean(html))


@register.filter
def role_label(role: str) -> str:
    return {"user": "User", "assistant": "Assistant", "system": "System"}.get(role, role)
