from __future__ import annotations

from typing import Any

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

from labeling.access import has_any_role
from labeling.models import Ability

register = template.Library()

# What Markdown makes of model output: no images (a tracking pixel, or a page's layout broken),
# no raw HTML (it is shown as the text it is), links that cannot reach back (no opener, no
# referrer) and that search engines ignore, and nothing but http, https and mailto.
MODEL_TAGS = {
    *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"),
    *("strong", "em", "code", "pre", "ul", "ol", "li", "a"),
    *("table", "thead", "tbody", "tr", "th", "td"),
}
MODEL_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
LINK_REL = "noopener nofollow noreferrer"


@register.filter
def markdown(text: str) -> SafeString:
    """Markdown written by an admin (guidelines) to HTML, then through nh3's allow-list:
    scripts, handlers and javascript: go."""
    html = markdown_lib.markdown(text or "", extensions=["fenced_code", "sane_lists", "tables"])
    return mark_safe(nh3.clean(html, link_rel=LINK_REL))


def model_markdown_converter() -> markdown_lib.Markdown:
    converter = markdown_lib.Markdown(extensions=["fenced_code", "sane_lists", "tables"])
    for name in ("html_block",):
        converter.preprocessors.deregister(name)
    for name in ("html", "image_link", "image_reference", "short_image_ref"):
        if name in converter.inlinePatterns:
            converter.inlinePatterns.deregister(name)
    return converter


@register.filter
def model_markdown(text: str) -> SafeString:
    """Markdown written by a model (completions, prompts) to HTML: untrusted, so any HTML in it
    is escaped as text before nh3 keeps only MODEL_TAGS, and links open nothing of ours."""
    html = model_markdown_converter().convert(text or "")
    return mark_safe(
        nh3.clean(
            html,
            tags=MODEL_TAGS,
            attributes=MODEL_ATTRIBUTES,
            link_rel=LINK_REL,
            url_schemes={"http", "https", "mailto"},
            set_tag_attribute_values={"a": {"target": "_blank"}},
        )
    )


@register.filter
def role_label(role: str) -> str:
    return {"user": "User", "assistant": "Assistant", "system": "System"}.get(role, role)


@register.simple_tag
def administers_a_workspace(user: Any) -> bool:
    """Whether the nav offers the workspaces page: to who is admin of one (admins are staff,
    so the base template asks only for staff users; a superuser without a query)."""
    return bool(user.is_superuser) or has_any_role(user, Ability.ADMINISTER)
