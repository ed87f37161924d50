"""``GET /api/alerts``: one page of alerts, newest change first, with an opaque cursor to the next.

The store does the work (:meth:`~vigil.alerting.queries.AlertQueries.alert_page`): an index walk for the list and
the status and key filters, a search bounded to ``scan_rows`` alerts per call for the text and severity filters.
This module turns that into the API's answer:

- ``alerts``: the page's alert views; ``next_cursor``: where the next (older) page starts, ``null`` at the end.
- ``complete``: ``false`` when a search stopped at its budget before the page was full; keep asking with
  ``next_cursor`` (the page does, while the reader scrolls); ``searched_to_ms`` says how far back it has looked.
- ``total``: how many alerts the filter matches when an index can say (status, key), else ``null``;
  ``counts``: alerts per status in the whole store (indexed counts).

The cursor is the position of the page's last alert, base64url-encoded: clients pass it back unchanged.

Examples:
    >>> c = encode_cursor(Position(1_700_000_000_000, "00ab"))
    >>> c, decode_cursor(c)
    ('djE6MTcwMDAwMDAwMDAwMDowMGFi', Position(updated_ms=1700000000000, fingerprint='00ab'))
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from vigil.alerting.queries import DEFAULT_SCAN_ROWS, Position
from vigil.console.views import ApiError, _Console

#: alerts examined per call when filtering by group (a Python check of each alert's route, dearer than SQL)
GROUP_SCAN_ROWS = 5_000


def encode_cursor(pos: Position | None) -> str | None:
    """The opaque cursor of a page position (``None`` stays ``None``)."""
    if pos is None:
        return None
    raw = f"v1:{int(pos.updated_ms)}:{pos.fingerprint}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position in a cursor made by :func:`encode_cursor`.

    Raises:
        ApiError: 422 naming the ``cursor`` field, for anything else.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, updated, fp = raw.split(":", 2)
        if version != "v1" or not fp:
            raise ValueError(raw)
        return Position(int(updated), fp)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "is not a cursor from this console (pass back next_cursor unchanged)", "cursor",
                       cursor[:100]) from None  # fmt: skip


def list_alerts(ctx: _Console, *, status: str | None = None, severity: str | None = None, key: str | None = None,
                q: str | None = None, group: str | None = None, limit: int = 50, cursor: str | None = None,
                scan_rows: int = DEFAULT_SCAN_ROWS, budget_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The answer of ``GET /api/alerts`` (see the module docstring)."""
    before = decode_cursor(cursor) if cursor else None
    q = q.strip() if q else None
    filters = {"status": status, "severity": severity or None, "key": key or None, "text": q or None}
    store = ctx.store
    if group:
        rows, nxt, complete, examined = _by_group(ctx, filters, group, limit, before, budget_s)
    else:
        page = store.alert_page(**filters, limit=limit, before=before, scan_rows=scan_rows, budget_s=budget_s)
        rows, nxt, complete, examined = page.rows, page.next, page.complete, page.examined
    counts = store.alert_counts()
    searching = any(filters[k] for k in ("severity", "text")) or bool(group)
    if searching:
        total = None
    elif filters["key"]:
        total = store.key_count(filters["key"], status)
    else:
        total = counts[status] if status else sum(counts.values())
    return {"alerts": ctx.views(rows=rows), "next_cursor": encode_cursor(nxt), "complete": complete,
            "searched_to_ms": nxt.updated_ms if nxt is not None and not complete else None, "examined": examined,
            "total": total, "counts": counts, "pipeline": ctx.pipeline}  # fmt: skip


def _by_group(ctx: _Console, filters: dict[str, Any], group: str, limit: int, before: Position | None,
              budget_s: float | None) -> tuple[list[dict[str, Any]], Position | None, bool, int]:  # fmt: skip
    """Pages of the store filtered by group key in Python, until ``limit`` match or the group budget is spent."""
    out: list[dict[str, Any]] = []
    examined = 0
    while True:
        page = ctx.store.alert_page(**filters, limit=min(500, GROUP_SCAN_ROWS), before=before,
                                    scan_rows=GROUP_SCAN_ROWS, budget_s=budget_s)  # fmt: skip
        examined += page.examined
        for i, row in enumerate(page.rows):
            if ctx.group_of(row["labels"]) == group:
                out.append(row)
                if len(out) == limit:
                    more = i + 1 < len(page.rows) or page.next is not None
                    return out, Position(row["updated_ms"], row["fingerprint"]) if more else None, True, examined
        if page.next is None:
            return out, None, True, examined
        before = page.next
        if examined >= GROUP_SCAN_ROWS:
            return out, before, False, examined
