"""``vigil alerts`` and ``vigil silence``: look at, acknowledge, label and silence alerts in an alert store.

The store is the SQLite file a running pipeline's alert manager writes (:mod:`vigil.alerting.store`); these
commands may run while the pipeline runs, in another process. A silence or ack added here takes effect at the
manager's next tick. Every command prints a rich table for people, or JSON on stdout with ``--json``.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vigil.cli.common import check_output_file, shown, strict_json
from vigil.errors import ConfigError, VigilError

if TYPE_CHECKING:  # imported in the commands: `vigil --help` shouldn't pay for pydantic, sqlite3 and numpy
    from vigil.alerting.store import AlertStore

DEFAULT_DB = Path("vigil-out/alerts.db")
_STATUSES = ("firing", "resolved", "retracted")

alerts_app = typer.Typer(help=(
    "Alerts in an alert store: list, show, acknowledge, and label them as true or false positives.\n\n"
    "Examples: `vigil alerts list --db vigil-out/fraud/alerts.db --status firing` · "
    "`vigil alerts show 3f2a --db ...` (a unique fingerprint prefix is enough) · "
    "`vigil alerts ack 3f2a --comment 'looking' --db ...` · "
    "`vigil alerts label 3f2a --false-positive --note 'promo day' --db ...` · "
    "`vigil alerts export-labels labels.csv --db ...`"
), no_args_is_help=True, rich_markup_mode="markdown")
silence_app = typer.Typer(help=(
    "Silences: mute alerts matching label matchers for a while (Alertmanager style).\n\n"
    "Matchers: `label=value`, `label!=value`, `label=~regex`, `label!~regex` (regexes match the whole value); "
    "labels are `alertname` (the detector step), `key`, `severity`, `pipeline`.\n\n"
    "Examples: `vigil silence add -m key=u1 -m severity=warning --for 2h --comment 'card replaced' --db ...` · "
    "`vigil silence list --db ...` · `vigil silence expire 9c1e2f3a4b5d --db ...`"
), no_args_is_help=True, rich_markup_mode="markdown")

DbOpt = Annotated[Path, typer.Option("--db", help="The alert store; by convention `vigil-out/<pipeline>/alerts.db`.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who does this (default: your user name).")]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in some containers
        return "unknown"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _when(ms: int | None, short: bool = False) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def _table(title: str) -> Table:
    """A borderless table that fits 80 columns (one space between columns)."""
    return Table(title=title, title_justify="left", box=None, padding=(0, 1, 0, 0), header_style="bold")


def _fail(exc: Exception, code: int = 1) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code)


def _out() -> Console:
    return Console(highlight=False)


def _print_json(data: Any) -> None:
    from vigil.alerting.store import to_json

    print(strict_json(json.loads(to_json(data)), indent=2))


@contextmanager
def _store(db: Path, create: bool = False) -> Iterator[AlertStore]:
    """The open store; any Vigil error (missing or corrupt file, unknown fingerprint) exits with its message."""
    from vigil.alerting.store import AlertStore

    try:
        with AlertStore(db, create=create) as store:
            yield store
    except VigilError as exc:
        _fail(exc)


# -- vigil alerts ---------------------------------------------------------------------------------------------


@alerts_app.command("list")
def alerts_list(
    db: DbOpt = DEFAULT_DB,
    status: Annotated[str | None, typer.Option(help="Only firing, resolved or retracted alerts.")] = None,
    key: Annotated[str | None, typer.Option(help="Only alerts on this key (user, host, ...).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, most recently changed first.")] = 200,
    json_: JsonOpt = False,
) -> None:
    """List logical alerts (one per detector and key), most recently changed first.

    Example: `vigil alerts list --db vigil-out/fraud/alerts.db --status firing`
    """
    if status is not None and status not in _STATUSES:
        _fail(ConfigError(f"must be one of {', '.join(_STATUSES)}", field="--status", value=status), 2)
    with _store(db) as store:
        rows = store.alerts(status=status, key=key, limit=limit)
        acked = {a["fingerprint"] for a in store.acks()}
    for r in rows:
        r["acked"] = r["fingerprint"] in acked
    if json_:
        _print_json(rows)
        return
    t = _table(f"{len(rows)} alert(s) in {db}")
    for col in ("fingerprint", "status", "alertname", "key", "severity", "seen", "rev", "ack", "since (UTC)"):
        right = col in ("seen", "rev")
        t.add_column(col, no_wrap=col in ("fingerprint", "status"), justify="right" if right else "left")
    colour = {"firing": "red", "resolved": "green", "retracted": "yellow"}
    for r in rows:
        lb = r["labels"]
        since = r["starts_at_ms"] if r["status"] == "firing" else r["ends_at_ms"]
        t.add_row(r["fingerprint"], f"[{colour.get(r['status'], 'white')}]{r['status']}[/]",
                  shown(lb.get("alertname", "")), shown(lb.get("key", "")), shown(lb.get("severity", "")),
                  str(r["observations"]), str(r["revision"]), "yes" if r["acked"] else "",
                  _when(since, short=True))  # fmt: skip
    _out().print(t)


@alerts_app.command("show")
def alerts_show(
    fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint, or a unique prefix of it.")],
    db: DbOpt = DEFAULT_DB,
    json_: JsonOpt = False,
) -> None:
    """One alert: labels, its latest detector alert, every revision, acks and feedback.

    Example: `vigil alerts show 3f2a --db vigil-out/fraud/alerts.db`
    """
    with _store(db) as store:
        fp = store.find_fingerprint(fingerprint)
        doc: dict[str, Any] = {"alert": store.alert(fp), "revisions": store.revisions(fp),
               "acks": store.acks(fp, active_only=False), "feedback": store.feedback(fingerprint=fp)}  # fmt: skip
    if json_:
        _print_json(doc)
        return
    a, out = doc["alert"], _out()
    assert a is not None
    out.print(f"[bold]{fp}[/]  {a['status']}  revision {a['revision']}  {a['observations']} observation(s)")
    out.print("labels: " + ", ".join(f"{shown(k)}={shown(v)}" for k, v in sorted(a["labels"].items())))
    out.print(f"started {_when(a['starts_at_ms'])} UTC, ended {_when(a['ends_at_ms'])}")
    last = a.get("last_alert") or {}
    if last:
        out.print(f"latest: {shown(last.get('message') or last.get('detector'))} (score {last.get('score')}, "
                  f"threshold {last.get('threshold')}, event {shown(last.get('event_id'))})")  # fmt: skip
    t = _table("history")
    for col in ("at (UTC)", "reason", "status", "rev", "note"):
        t.add_column(col)
    for r in doc["revisions"]:
        t.add_row(_when(r["at_ms"]), r["reason"], r["status"], str(r["revision"]), shown(r.get("note")))
    out.print(t)
    for k in doc["acks"]:
        state = "cleared" if k["cleared_ms"] else "active"
        out.print(f"ack ({state}) by {shown(k['by'])} at {_when(k['at_ms'])}: {shown(k['comment'])}")
    for f in doc["feedback"]:
        out.print(f"labelled {f['label']} by {shown(f['by'])} at {_when(f['at_ms'])}: {shown(f['note'])}")


@alerts_app.command("ack")
def alerts_ack(
    fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint, or a unique prefix of it.")],
    comment: Annotated[str, typer.Option("--comment", help="Why (kept with the ack).")] = "",
    by: ByOpt = "",
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Acknowledge an alert: its group stops being re-sent every repeat_interval (until it resolves and fires again).

    Example: `vigil alerts ack 3f2a --by ana --comment "on it" --db vigil-out/fraud/alerts.db`
    """
    with _store(db) as store:
        fp = store.find_fingerprint(fingerprint)
        store.add_ack(fp, by or _user(), comment, _now_ms())
    _out().print(f"acked {fp}")


@alerts_app.command("label")
def alerts_label(
    fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint, or a unique prefix of it.")],
    true_positive: Annotated[bool, typer.Option("--true-positive", help="It was a real anomaly.")] = False,
    false_positive: Annotated[bool, typer.Option("--false-positive", help="It was not.")] = False,
    note: Annotated[str, typer.Option("--note", help="Why, for whoever tunes the detector.")] = "",
    by: ByOpt = "",
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Record whether an alert was a true or a false positive (training and tuning data): exactly one of the two.

    Example: `vigil alerts label 3f2a --false-positive --note "promo day" --db vigil-out/fraud/alerts.db`
    """
    if true_positive == false_positive:
        _fail(ConfigError("both given" if true_positive else "missing", field="--true-positive / --false-positive",
                          hint="give exactly one of them"), 2)  # fmt: skip
    label = "true_positive" if true_positive else "false_positive"
    with _store(db) as store:
        fp = store.find_fingerprint(fingerprint)
        fid = store.add_feedback(fp, label, at_ms=_now_ms(), note=note, by=by or _user())
    _out().print(f"labelled {fp} {label} (feedback #{fid})")


@alerts_app.command("export-labels")
def alerts_export_labels(
    out: Annotated[Path, typer.Argument(help="File to write: .csv, or JSON lines for any other extension.")],
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Write every true/false-positive label with the alert's detector, key, score and event time.

    Example: `vigil alerts export-labels labels.csv --db vigil-out/fraud/alerts.db`
    """
    try:
        check_output_file(out, "OUT")  # its folder must exist: none is made
    except ConfigError as exc:
        _fail(exc, 2)
    with _store(db) as store:
        n = store.export_feedback(out)
    _out().print(f"wrote {n} label(s) to {out}")


# -- vigil silence --------------------------------------------------------------------------------------------


@silence_app.command("add")
def silence_add(
    matcher: Annotated[list[str], typer.Option("--matcher", "-m", help="label=value, label!=value, label=~regex "
                                               "or label!~regex; repeat for more (all must match).")],  # fmt: skip
    comment: Annotated[str, typer.Option("--comment", help="Why (required: the next person will ask).")],
    for_: Annotated[str, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d.")] = "2h",
    by: ByOpt = "",
    db: DbOpt = DEFAULT_DB,
    json_: JsonOpt = False,
) -> None:
    """Silence alerts matching every matcher, from now for `--for`; prints the silence id.

    Example: `vigil silence add -m key=u1 -m severity=warning --for 2h --comment "card replaced" --db ...`
    """
    from vigil.alerting.policy import parse_matchers
    from vigil.types import parse_duration_ms

    try:
        parse_matchers(matcher, "--matcher")
        duration_ms = parse_duration_ms(for_)
    except ConfigError as exc:
        _fail(exc, 2)
    except ValueError:
        _fail(ConfigError("is not a duration", field="--for", value=for_, hint="use e.g. '30m', '2h', '1d'"), 2)
    if duration_ms <= 0:
        _fail(ConfigError("must be > 0", field="--for", value=for_, hint="use e.g. '2h'"), 2)
    if not comment.strip():
        _fail(ConfigError("must say why", field="--comment", value=comment), 2)
    now = _now_ms()
    with _store(db, create=True) as store:
        sid = store.add_silence(matcher, starts_ms=now, ends_ms=now + duration_ms, created_by=by or _user(),
                                comment=comment, now_ms=now)  # fmt: skip
    if json_:
        _print_json({"id": sid, "matchers": matcher, "starts_ms": now, "ends_ms": now + duration_ms})
    else:
        _out().print(f"silence {sid}: {shown(', '.join(matcher))} until {_when(now + duration_ms)} UTC")


@silence_app.command("list")
def silence_list(
    db: DbOpt = DEFAULT_DB,
    all_: Annotated[bool, typer.Option("--all", help="Also expired and ended silences.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List silences: active and pending ones (with `--all`, ended and expired too).

    Example: `vigil silence list --db vigil-out/fraud/alerts.db`
    """
    now = _now_ms()
    with _store(db) as store:
        rows = store.silences(include_expired=all_)
    for r in rows:
        r["state"] = ("expired" if r["expired_ms"] is not None else "ended" if r["ends_ms"] <= now
                      else "pending" if r["starts_ms"] > now else "active")  # fmt: skip
    if not all_:
        rows = [r for r in rows if r["state"] in ("active", "pending")]
    if json_:
        _print_json(rows)
        return
    t = _table(f"{len(rows)} silence(s) in {db}")
    for col in ("id", "state", "matchers", "starts (UTC)", "ends (UTC)", "by", "comment"):
        t.add_column(col, no_wrap=col == "id")
    for r in rows:
        t.add_row(r["id"], r["state"], shown(", ".join(r["matchers"])), _when(r["starts_ms"], True),
                  _when(r["ends_ms"], True), shown(r["created_by"]), shown(r["comment"]))  # fmt: skip
    _out().print(t)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[str, typer.Argument(metavar="ID", help="The silence id (see `vigil silence list`).")],
    db: DbOpt = DEFAULT_DB,
) -> None:
    """End a silence now; its alerts are notified again at the manager's next group flush.

    Example: `vigil silence expire 9c1e2f3a4b5d --db vigil-out/fraud/alerts.db`
    """
    with _store(db) as store:
        ok = store.expire_silence(silence_id, _now_ms())
    if not ok:
        _fail(ConfigError("is not an unexpired silence", field="ID", value=silence_id,
                          hint="see `vigil silence list --all`"))  # fmt: skip
    _out().print(f"expired silence {silence_id}")


def register(root: typer.Typer) -> None:
    """``vigil alerts ...`` and ``vigil silence ...``."""
    root.add_typer(alerts_app, name="alerts")
    root.add_typer(silence_app, name="silence")
