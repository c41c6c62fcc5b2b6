"""Reducer for topologies/user_sessions.yaml: the distinct pages of a session (at most 50).

A session window merges sessions when a late view bridges them, so the reducer comes with
a `merge` for two accumulators.
"""

from __future__ import annotations

from typing import Any

MAX_PAGES = 50


def add_page(pages: list[str], key: Any, view: dict[str, Any]) -> list[str]:
    page = view.get("page")
    if page is not None and page not in pages and len(pages) < MAX_PAGES:
        pages.append(page)
    return pages


def merge_pages(earlier: list[str], later: list[str]) -> list[str]:
    merged = list(earlier)
    for page in later:
        if page not in merged and len(merged) < MAX_PAGES:
            merged.append(page)
    return merged
