"""Muting for the alert manager: silences, acks and inhibition, as a mixin :class:`MuteMixin`.

:class:`~vigil.alerting.manager.AlertManager` inherits it; the mixin owns the mute state (silences and their
parsed matchers, acks, the inhibit rules) and its derived caches, and reads the manager's ``policy``, ``store``
and ``clock``. With a store, silences and acks live there (so that the CLI in another process can silence and
ack) and are reloaded when the store's mute version changes; without one, they are kept in memory.

Inhibition is indexed: each inhibit rule maps the ``equal`` label values of its firing source alerts to their
fingerprints, so that whether an alert is inhibited is a few dict lookups.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from vigil.alerting.model import _Entry
from vigil.alerting.policy import AlertPolicy, Matcher, matches_all, parse_matchers
from vigil.alerting.store import AlertStore
from vigil.errors import ConfigError, StateError

log = logging.getLogger("vigil.alerting.manager")  # the logger these records have always gone to

_RuleKeys = list[tuple[int, tuple[str, ...]]]  # (inhibit rule index, its ``equal`` label values)


class MuteMixin:
    """Silences, acks and inhibition of :class:`~vigil.alerting.manager.AlertManager` (see the module docstring).

    The class using it sets ``policy``, ``store`` and ``clock``, calls :meth:`_init_mutes` once and
    :meth:`_reset_mute_caches` whenever its entries are replaced, then :meth:`_index_source` on each entry.
    """

    policy: AlertPolicy
    store: AlertStore | None
    clock: Callable[[], int]
    _silences: dict[str, dict[str, Any]]
    _silence_matchers: dict[str, tuple[Matcher, ...]]
    _acks: dict[str, dict[str, Any]]
    _rules: list[tuple[tuple[Matcher, ...], tuple[Matcher, ...], tuple[str, ...]]]
    _mute_version: int
    _rule_keys: dict[str, tuple[_RuleKeys, _RuleKeys]]
    _sources: list[dict[tuple[str, ...], set[str]]]
    _sil_cache: dict[str, list[str]]

    def _init_mutes(self) -> None:
        """Mute state: no silences or acks yet, the policy's inhibit rules."""
        self._silences = {}
        self._silence_matchers = {}
        self._acks = {}
        self.mutes_synced = False  # set by a caller that synced for a whole chunk of work (see _sync_mutes)
        self._load_rules()

    def _load_rules(self) -> None:
        """The policy's inhibit rules (again after a policy change)."""
        # inhibit rules as plain tuples: the hot path shouldn't go through pydantic attribute access
        self._rules = [(tuple(Matcher.parse(t) for t in r.source_matchers),
                        tuple(Matcher.parse(t) for t in r.target_matchers), tuple(r.equal))
                       for r in self.policy.inhibit_rules]  # fmt: skip

    def _reset_mute_caches(self) -> None:
        """Derived state: empty, to be re-filled by :meth:`_index_source` and lookups."""
        self._mute_version = -1
        self._rule_keys = {}
        self._sources = [{} for _ in self._rules]  # firing inhibitors
        self._sil_cache = {}  # fingerprint -> ids of silences whose matchers match it

    def add_silence(self, matchers: list[str], *, starts_ms: int | None = None, ends_ms: int, created_by: str,
                    comment: str) -> str:  # fmt: skip
        """Mute alerts matching every matcher from ``starts_ms`` (default now) until ``ends_ms``; returns the id."""
        parsed = parse_matchers(list(matchers))
        if not parsed:
            raise ConfigError("needs at least one matcher (a silence of everything is not allowed)", field="matchers")
        now = self.clock()
        starts = now if starts_ms is None else starts_ms
        if ends_ms <= starts:
            raise ConfigError("must be after the start", field="ends_ms", value=ends_ms, hint=f"starts at {starts}")
        if self.store is not None:
            sid = self.store.add_silence(list(matchers), starts_ms=starts, ends_ms=ends_ms, created_by=created_by,
                                         comment=comment, now_ms=now)  # fmt: skip
            self._mute_version = -1
            return sid
        sid = secrets.token_hex(6)
        self._silences[sid] = {"id": sid, "matchers": list(matchers), "starts_ms": starts, "ends_ms": ends_ms,
                               "created_by": created_by, "comment": comment, "created_ms": now, "expired_ms": None}
        self._silence_matchers[sid] = parsed
        self._sil_cache.clear()
        return sid

    def expire_silence(self, silence_id: str) -> bool:
        """End a silence now; False if there is no such unexpired silence."""
        now = self.clock()
        if self.store is not None:
            self._mute_version = -1
            return self.store.expire_silence(silence_id, now)
        s = self._silences.get(silence_id)
        if s is None or s["expired_ms"] is not None:
            return False
        s["expired_ms"] = now
        return True

    def silences(self, active_only: bool = True) -> list[dict[str, Any]]:
        """Silences as plain dicts (``id, matchers, starts_ms, ends_ms, created_by, comment, ...``)."""
        self._sync_mutes()
        now = self.clock()
        return [dict(s) for s in self._silences.values() if not active_only or self._active(s, now)]

    def ack(self, fingerprint: str, by: str, comment: str = "", now_ms: int | None = None) -> None:
        """Acknowledge an alert: no ``repeat`` notifications while every firing alert of its group is acked."""
        now = self.clock() if now_ms is None else now_ms
        if self.store is not None:
            self.store.add_ack(fingerprint, by, comment, now)
            self._mute_version = -1
        else:
            self._acks[fingerprint] = {"fingerprint": fingerprint, "by": by, "comment": comment, "at_ms": now}

    def _clear_ack(self, fp: str, now: int) -> None:
        self._acks.pop(fp, None)
        if self.store is not None:
            self.store.clear_acks(fp, now)

    def _sync_mutes(self) -> None:
        """Reload silences and acks when another process (or we) changed them: one query when nothing did.

        A caller taking a chunk of queued alerts syncs once and sets ``mutes_synced`` for the chunk: the many
        ingests and ticks inside it (one per timer, with an event clock) then don't each ask the store.
        """
        if self.store is None or self.mutes_synced:
            return
        try:
            version = self.store.mute_version()
            if version == self._mute_version:
                return
            silences = {s["id"]: s for s in self.store.silences()}
            acks = {a["fingerprint"]: a for a in self.store.acks()}
        except StateError as exc:  # keep muting by what we knew
            log.error("alert store read failed, using the silences and acks read before: %s", exc)
            return
        self._silence_matchers = {}
        for sid, sil in list(silences.items()):
            try:
                self._silence_matchers[sid] = tuple(Matcher.parse(t) for t in sil["matchers"])
            except ValueError:  # written into the db by hand: ignore it rather than stop alerting
                log.error("silence %s has an invalid matcher in %s; ignored", sid, sil["matchers"])
                del silences[sid]
        self._silences, self._acks, self._mute_version = silences, acks, version
        self._sil_cache.clear()

    @staticmethod
    def _active(s: dict[str, Any], now: int) -> bool:
        return s["expired_ms"] is None and s["starts_ms"] <= now < s["ends_ms"]

    def _silenced_by(self, e: _Entry, now: int) -> list[str]:
        if not self._silence_matchers:
            return []
        ids = self._sil_cache.get(e.fingerprint)
        if ids is None:
            ids = self._sil_cache[e.fingerprint] = [
                sid for sid, ms in self._silence_matchers.items() if matches_all(ms, e.labels)]
        return [sid for sid in ids if self._active(self._silences[sid], now)]

    def _keys(self, e: _Entry) -> tuple[list[tuple[int, tuple[str, ...]]], list[tuple[int, tuple[str, ...]]]]:
        """(rules it can inhibit under, rules it can be inhibited under), each with its ``equal`` values."""
        keys = self._rule_keys.get(e.fingerprint)
        if keys is None:
            src, tgt = [], []
            for i, (sm, tm, eq) in enumerate(self._rules):
                values = tuple(e.labels.get(n, "") for n in eq)
                if matches_all(sm, e.labels):
                    src.append((i, values))
                if matches_all(tm, e.labels):
                    tgt.append((i, values))
            keys = self._rule_keys[e.fingerprint] = (src, tgt)
        return keys

    def _index_source(self, e: _Entry) -> None:
        for i, values in self._keys(e)[0]:
            bucket = self._sources[i].setdefault(values, set())
            if e.status == "firing":
                bucket.add(e.fingerprint)
            else:
                bucket.discard(e.fingerprint)

    def _inhibited_by(self, e: _Entry) -> list[str]:
        if not self._rules:
            return []
        out: set[str] = set()
        for i, values in self._keys(e)[1]:
            out.update(self._sources[i].get(values, ()))
        out.discard(e.fingerprint)  # an alert does not inhibit itself
        return sorted(out)

    def _muted(self, e: _Entry, now: int) -> bool:
        if not self._silence_matchers and not self._rules:
            return False
        return bool(self._silenced_by(e, now) or self._inhibited_by(e))
