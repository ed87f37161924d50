"""Synthetic credit-card transactions with labelled fraud, for the fraud-detector demo and benchmarks.

The stream is built column-wise with numpy (no Python loop per event; about 1 s for 1M events):

* **Users** have a log-normal activity (skewed: a few heavy users), a home country, a chronotype
  (early / regular / late daily rhythm), a log-normal typical amount, a sparse category mix with
  small per-category offsets (+-0.15 in log), a within-user log-amount spread ``sigma`` in
  [0.30, 0.45] and two favourite merchants per category (80 % of normal spending happens there).
* **Normal spending** follows the daily rhythm (quiet at night, peaks at lunch and in the evening).
  A user's normal transactions are at least ``min_gap_ms`` (15 s) apart, so everyday spending never
  makes 6 transactions within 60 s; the log-amount noise is a normal truncated at +-2 sigma (habits
  are bounded; the tails of the stream come from the labelled episodes, so labels stay meaningful).
  Activity is log-normal with sigma 1.3 (capped at 12x the mean): many light users, a few heavy ones.
* **Episodes** are injected on top. Fraud (``label`` 1): ``amount_spike`` (one transaction 8-40x the
  user's typical amount, at an unusual category, half of them abroad), ``card_testing`` (8-25
  transactions of $0.10-$2.00 at 1-3 online merchants, 3-9 s apart, i.e. within 0.5-3.5 minutes)
  and ``velocity_burst`` (6-15 transactions of 1-3x typical at many merchants, 4-10 s apart, i.e.
  within ~2 minutes); optionally (``test_then_cashout_share``, off by default, on in the demo)
  ``test_then_cashout`` (3-5 online payments under $2.00, then one electronics purchase of $250-$1500,
  30-110 s apart: the whole sequence within 10 minutes, too slow for the velocity rule — the fraud
  pipeline's ``pattern`` step is made for it). Legitimate but odd (``label`` 0): ``large_purchase`` (2-3.5x typical at
  electronics/travel/apparel, sized mostly under 3 sigma of the user), ``bursty_shopper`` (a mall
  visit: 2-4 transactions, rarely 5-6, 5-35 s apart) and ``travel`` (3-10 transactions at normal
  amounts, up to 30 % tourist mark-up, in one foreign country over hours).
* **Warm-up**: every episode starts after the user's ``min_history`` (15th) normal transaction, so a
  per-user baseline exists; only users with at least ``min_history + 5`` normal transactions take
  part. Fraud victims are ``fraud_user_frac`` of users; their episodes are spread over the rest of
  their day (spikes first, then velocity bursts, then card testing, which would otherwise poison a
  per-user baseline for hours).
* **Shares** (of events, defaults): amount_spike 0.7 %, card_testing 2.6 %, velocity_burst 2.2 %
  (fraud 5.5 %, far above real-world rates of ~0.1 %: the stream is one cold-started day, every
  user's baseline must warm up, and a 3-sigma rule then costs ~0.4 % of normal events, so a rarer
  fraud would make precision meaningless), large_purchase 0.4 %, bursty_shopper 1.0 %, travel 1.0 %.
  A plain per-event reference of a 3-sigma log-amount z-score (60 s window / EW baseline) plus a
  ">5 in 60 s" velocity rule reaches precision ~0.92 and recall ~0.995
  (``tests/test_generator_transactions.py``).
* **Arrival**: ``disorder_frac`` of events arrive 1..``max_disorder_ms`` after their event time, the
  rest on time; columns come sorted by arrival (``arrival_ms`` non-decreasing), so event time is out of
  order by at most ``max_disorder_ms``.

The same spec (and seed) gives identical arrays and byte-identical JSONL.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from typing import IO, Any

import msgspec
import numpy as np

__all__ = [
    "CATEGORIES",
    "COUNTRIES",
    "FRAUD_PATTERNS",
    "PATTERNS",
    "TransactionSpec",
    "generate_transactions",
    "summary",
    "write_csv",
    "write_jsonl",
]

PATTERNS = (
    "normal",
    "amount_spike",
    "card_testing",
    "velocity_burst",
    "large_purchase",
    "bursty_shopper",
    "travel",
    "test_then_cashout",
)
FRAUD_PATTERNS = ("amount_spike", "card_testing", "velocity_burst", "test_then_cashout")
CATEGORIES = (
    "grocery",
    "fuel",
    "restaurant",
    "online",
    "travel",
    "electronics",
    "pharmacy",
    "apparel",
    "entertainment",
)
COUNTRIES = ("US", "GB", "DE", "FR", "CA", "ES", "IT", "NL", "MX", "BR", "JP", "AU", "IN", "SE", "PL")
_COUNTRY_W = np.array([30, 9, 8, 7, 6, 5, 5, 3, 4, 5, 5, 3, 6, 2, 2], float)
_CAT_OFFSET = np.array([0.08, 0.03, -0.05, 0.0, 0.15, 0.15, -0.10, 0.05, -0.05])  # log-amount
_CAT_PRIOR = np.array([1.2, 1.0, 1.0, 0.8, 0.15, 0.2, 0.5, 0.5, 0.5])  # Dirichlet concentration
_CAT = {c: i for i, c in enumerate(CATEGORIES)}
# Activity by hour of day (local = UTC here), relative.
_HOURLY = np.array(
    [
        0.15,
        0.10,
        0.08,
        0.07,
        0.08,
        0.15,
        0.35,
        0.60,
        0.80,
        0.90,
        1.00,
        1.30,
        1.80,
        1.60,
        1.10,
        1.00,
        1.10,
        1.40,
        1.80,
        1.90,
        1.50,
        1.00,
        0.60,
        0.30,
    ]
)
_CHRONO_SHIFT_H = (-1.0, 0.0, 1.5)
_DAY_MS = 86_400_000
_TRUNC = 2.0  # normal log-amount noise is truncated at +-_TRUNC sigma
_FRAUD_CODES = (1, 2, 3, 7)
# Gap between consecutive events of an episode, by pattern code.
_GAP_LO_MS = np.array([0, 0, 3_000, 4_000, 0, 5_000, 300_000, 30_000])
_GAP_HI_MS = np.array([0, 0, 9_000, 10_000, 0, 35_000, 3_600_000, 110_000])


@dataclass(frozen=True)
class TransactionSpec:
    """What to generate. Shares are fractions of ``events``; see the module docstring.

    Attributes:
        events: total number of events, exactly; from :data:`MIN_EVENTS_ALL_PATTERNS` on, every labelled pattern.
        users: number of card holders (at most ``events / 25`` take part: :func:`active_users`).
        seed: the random seed; the same spec gives the same stream.
        start_ms: event time of the start of the stream (epoch ms).
        span_ms: event-time span of the stream.
        max_disorder_ms: largest delay between event time and arrival.
        disorder_frac: share of events that arrive late (1..``max_disorder_ms``).
        fraud_user_frac: share of users that are fraud victims (capped by the users with enough history).
        merchants: approximate number of merchants.
        activity_sigma: log-normal sigma of user activity.
        min_history: normal transactions a user makes before any episode.
        min_gap_ms: least event-time gap between two normal transactions of one user.
    """

    events: int = 1_000_000
    users: int = 20_000
    seed: int = 7
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00Z
    span_ms: int = _DAY_MS
    max_disorder_ms: int = 2_000
    disorder_frac: float = 0.2
    fraud_user_frac: float = 0.25
    amount_spike_share: float = 0.007
    card_testing_share: float = 0.026
    velocity_burst_share: float = 0.022
    large_purchase_share: float = 0.004
    bursty_shopper_share: float = 0.010
    travel_share: float = 0.010
    test_then_cashout_share: float = 0.0
    merchants: int = 20_000
    activity_sigma: float = 1.3
    min_history: int = 15
    min_gap_ms: int = 15_000


MIN_EVENTS_ALL_PATTERNS = 300
"""From this many events on, a stream has every labelled pattern (at least one episode of each)."""
EVENTS_PER_USER = 25
"""Fewest events per card holder: asking for more holders than ``events / 25`` gives ``events / 25`` (a holder
needs a history of ``min_history`` transactions before an episode; thousands of holders with a transaction or
none each leave no one to be a fraud victim)."""


def active_users(spec: TransactionSpec) -> int:
    """How many card holders take part: ``spec.users``, or fewer for a short stream (see :data:`EVENTS_PER_USER`).

    Examples:
        >>> active_users(TransactionSpec(events=2_000, users=20_000)), active_users(TransactionSpec())
        (80, 20000)
    """
    return max(1, min(spec.users, spec.events // EVENTS_PER_USER))


def _labels(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded ids like ``t00000042`` as an object array, built without a per-item Python loop."""
    idx = np.asarray(idx, np.int64)
    digits = (idx[:, None] // (10 ** np.arange(width - 1, -1, -1, dtype=np.int64))) % 10 + ord("0")
    raw = np.empty((idx.size, width + len(prefix)), np.uint8)
    raw[:, : len(prefix)] = np.frombuffer(prefix.encode(), np.uint8)
    raw[:, len(prefix) :] = digits
    return raw.view(f"S{width + len(prefix)}").ravel().astype(f"U{width + len(prefix)}").astype(object)


def _rhythm(spec: TransactionSpec) -> tuple[np.ndarray, np.ndarray, float]:
    """Per chronotype, the cumulative activity on a 1-minute grid; and the peak/mean activity ratio."""
    grid = np.arange(0, spec.span_ms + 60_000, 60_000, dtype=np.float64)
    grid[-1] = spec.span_ms
    hours = ((spec.start_ms + grid) % _DAY_MS) / 3_600_000
    cdfs, peak = [], 0.0
    for shift in _CHRONO_SHIFT_H:
        lam = np.interp((hours - shift) % 24, np.arange(25), np.append(_HOURLY, _HOURLY[0]))
        cdf = np.concatenate([[0.0], np.cumsum((lam[1:] + lam[:-1]) / 2 * np.diff(grid))])
        peak = max(peak, lam.max() * spec.span_ms / cdf[-1])
        cdfs.append(cdf / cdf[-1])
    return grid, np.array(cdfs), peak


def _plan_episodes(spec: TransactionSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pattern code and size of every episode, from the shares."""
    plan = [  # pattern, share, sizes, size probabilities
        (1, spec.amount_spike_share, [1], None),
        (2, spec.card_testing_share, np.arange(8, 26), None),
        (3, spec.velocity_burst_share, np.arange(6, 16), None),
        (4, spec.large_purchase_share, [1], None),
        (5, spec.bursty_shopper_share, np.arange(2, 7), [0.32, 0.30, 0.22, 0.10, 0.06]),
        (6, spec.travel_share, np.arange(3, 11), None),
    ]
    if spec.test_then_cashout_share > 0:  # only then: streams without it stay byte-identical to before it existed
        plan.append((7, spec.test_then_cashout_share, np.arange(4, 7), None))
    pats, sizes = [], []
    for code, share, choices, p in plan:
        choices = np.asarray(choices)
        mean = float(np.dot(choices, p)) if p is not None else float(choices.mean())
        n = int(round(share * spec.events / mean))
        if n == 0 and share > 0 and spec.events >= MIN_EVENTS_ALL_PATTERNS:
            n = 1  # a small stream still has every labelled pattern
        pats.append(np.full(n, code, np.int8))
        sizes.append(rng.choice(choices, size=n, p=p))
    return np.concatenate(pats), np.concatenate(sizes).astype(np.int64)


class _World:
    """Users, merchants and the shared random generator; helpers draw per-event attributes."""

    def __init__(self, spec: TransactionSpec, rng: np.random.Generator) -> None:
        n_users, n_cat, n_cty = spec.users, len(CATEGORIES), len(COUNTRIES)
        self.rng, self.cw = rng, _COUNTRY_W / _COUNTRY_W.sum()
        self.home = rng.choice(n_cty, size=n_users, p=self.cw)
        self.chrono = rng.choice(len(_CHRONO_SHIFT_H), size=n_users, p=[0.25, 0.55, 0.20])
        self.mu = rng.normal(np.log(35.0), 0.6, n_users)  # log of the typical amount
        self.sigma = rng.uniform(0.30, 0.45, n_users)
        mix = np.cumsum(rng.gamma(_CAT_PRIOR, size=(n_users, n_cat)), axis=1)
        self.mix = mix / mix[:, -1:]
        activity = rng.lognormal(0.0, spec.activity_sigma, n_users)
        self.activity = np.minimum(activity, 12 * activity.mean())
        # Merchants: a pool per (country, category), ids contiguous by pool.
        share = np.outer(self.cw, _CAT_PRIOR / _CAT_PRIOR.sum())
        self.pool_n = np.maximum(3, np.round(spec.merchants * share)).astype(np.int64)
        self.pool_off = (np.cumsum(self.pool_n.ravel()) - self.pool_n.ravel()).reshape(n_cty, n_cat)
        self.n_merchants = int(self.pool_n.sum())
        fav_cat = np.tile(np.repeat(np.arange(n_cat), 2), n_users)
        self.fav = self.merchant(np.repeat(self.home, 2 * n_cat), fav_cat).reshape(n_users, n_cat, 2)

    def merchant(self, cty: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """A random merchant of each (country, category)."""
        pick = (self.rng.random(cty.size) * self.pool_n[cty, cat]).astype(np.int64)
        return self.pool_off[cty, cat] + pick

    def foreign(self, home: np.ndarray) -> np.ndarray:
        """A country other than ``home``, by country weight."""
        c = self.rng.choice(len(COUNTRIES), size=home.size, p=self.cw)
        for _ in range(8):  # re-draw the few that landed at home
            same = c == home
            if not same.any():
                break
            c[same] = self.rng.choice(len(COUNTRIES), size=int(same.sum()), p=self.cw)
        c[c == home] = (home[c == home] + 1) % len(COUNTRIES)
        return c

    def habitual(self, u: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Amounts from each user's own habits in each category."""
        z = self.rng.standard_normal(u.size)
        for _ in range(20):  # truncate by re-drawing (~5 % per round)
            out = np.abs(z) > _TRUNC
            if not out.any():
                break
            z[out] = self.rng.standard_normal(int(out.sum()))
        return np.exp(self.mu[u] + _CAT_OFFSET[cat] + self.sigma[u] * np.clip(z, -_TRUNC, _TRUNC))


def _with_history(counts: np.ndarray, need: int, users: int) -> np.ndarray:
    """Move transactions to the busiest users until ``users`` of them have ``need`` (episodes need a history).

    Only small streams get here (a large one has plenty of such users); the total stays the same.
    """
    counts = counts.copy()
    order = np.argsort(-counts, kind="stable")
    chosen, rest = order[:users], order[users:]
    for u in chosen:
        while counts[u] < need:
            donors = rest[counts[rest] > 0]
            if donors.size == 0:
                return counts
            d = donors[np.argmax(counts[donors])]
            take = min(need - counts[u], counts[d])
            counts[u] += take
            counts[d] -= take
    return counts


def _normal_spending(spec: TransactionSpec, w: _World, n_normal: int, eligible_needed: int = 0
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """Everyday transactions, grouped by user and sorted by time within each user.

    ``eligible_needed``: at least this many users get ``min_history + 5`` transactions (when the multinomial
    draw left fewer; a small stream), so that episodes have users to happen to.
    """
    rng = w.rng
    counts = rng.multinomial(n_normal, w.activity / w.activity.sum())
    grid, cdfs, peak = _rhythm(spec)
    op_gap = spec.min_gap_ms * peak / spec.span_ms  # min_gap_ms even at the busiest minute
    cap = int(0.9 / op_gap)
    counts = np.minimum(counts, cap)
    while counts.sum() < n_normal:  # what the cap cut goes to the users below it: the total stays exact
        room = cap - counts
        if not room.any():
            raise ValueError(f"{spec.users:,} card holders can't make {n_normal:,} everyday transactions in a day "
                             f"(at most {cap:,} each, {spec.min_gap_ms / 1000:g} s apart): ask for more users")
        weights = np.where(room > 0, w.activity, 0.0)
        counts = np.minimum(counts + rng.multinomial(n_normal - counts.sum(), weights / weights.sum()), cap)
    if eligible_needed:
        counts = _with_history(counts, spec.min_history + 5, eligible_needed)
    # Sorted uniforms in "operational time", spaced by op_gap, then warped by the daily rhythm.
    user = np.repeat(np.arange(spec.users), counts)
    first = np.cumsum(counts) - counts
    rank = np.arange(user.size) - first[user]
    u01 = rng.random(user.size)
    u01 = u01[np.lexsort((u01, user))]  # sorted within each user (users are contiguous)
    op = u01 * (1.0 - (counts[user] - 1) * op_gap) + rank * op_gap
    ts = np.empty(user.size)
    for k in range(len(_CHRONO_SHIFT_H)):
        sel = w.chrono[user] == k
        ts[sel] = np.interp(op[sel], cdfs[k], grid)
    ts = np.minimum(np.floor(ts), spec.span_ms - 1).astype(np.int64)
    cat = np.minimum((rng.random(user.size)[:, None] > w.mix[user]).sum(axis=1), len(CATEGORIES) - 1)
    fav = w.fav[user, cat, rng.integers(0, 2, user.size)]
    merch = np.where(rng.random(user.size) < 0.8, fav, w.merchant(w.home[user], cat))
    amount = w.habitual(user, cat)
    return {
        "user": user,
        "ts": ts,
        "cat": cat,
        "merch": merch,
        "amount": amount,
        "cty": w.home[user],
        "counts": counts,
        "first": first,
    }


def _assign_episodes(
    spec: TransactionSpec, w: _World, ep_pat: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The user of each episode (dropping all episodes when no user has enough history)."""
    rng = w.rng
    eligible = np.flatnonzero(counts >= spec.min_history + 5)
    if eligible.size == 0:
        return np.zeros(0, np.int8), np.zeros(0, np.int64)
    is_fraud = np.isin(ep_pat, _FRAUD_CODES)
    n_vict = max(1, min(int(round(spec.fraud_user_frac * spec.users)), eligible.size))
    victims = rng.permutation(eligible)[:n_vict]
    ep_user = np.empty(ep_pat.size, np.int64)
    f_idx = rng.permutation(np.flatnonzero(is_fraud))
    ep_user[f_idx] = victims[np.arange(f_idx.size) % victims.size]  # round robin over victims
    o_idx = np.flatnonzero(~is_fraud)
    ep_user[o_idx] = rng.choice(eligible, size=o_idx.size)
    return ep_pat, ep_user


def _episode_times(
    spec: TransactionSpec,
    w: _World,
    ep_pat: np.ndarray,
    ep_size: np.ndarray,
    ep_user: np.ndarray,
    normal: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Event time of every episode event, its episode, and each episode's start."""
    rng, E = w.rng, ep_pat.size
    ev_ep = np.repeat(np.arange(E), ep_size)
    ev_pat = ep_pat[ev_ep]
    gaps = rng.integers(_GAP_LO_MS[ev_pat], _GAP_HI_MS[ev_pat] + 1)
    ep_first = np.cumsum(ep_size) - ep_size
    gaps[ep_first] = 0
    csum = np.cumsum(gaps)
    offs = csum - csum[ep_first][ev_ep]
    dur = offs[ep_first + ep_size - 1]
    # After the user's min_history-th normal transaction; a victim's fraud episodes get separate
    # slices of the rest of the day, in the order spike, velocity burst, card testing.
    t_lo = normal["ts"][normal["first"][ep_user] + spec.min_history - 1] + 1
    t_hi = np.maximum(spec.span_ms - 1 - dur, t_lo)
    is_fraud = np.isin(ep_pat, _FRAUD_CODES)
    o = np.lexsort((rng.random(E), np.where(is_fraud, ep_pat, 9), ~is_fraud, ep_user))
    new_user = np.r_[True, ep_user[o][1:] != ep_user[o][:-1]]
    pos = np.arange(E) - np.flatnonzero(new_user)[np.cumsum(new_user) - 1]
    n_fraud = np.bincount(ep_user[is_fraud], minlength=spec.users)
    j, k = np.zeros(E), np.ones(E)
    j[o], k[o] = pos, np.maximum(n_fraud[ep_user[o]], 1)
    j, k = np.where(is_fraud, j, 0), np.where(is_fraud, k, 1)
    ep_start = (t_lo + (j + rng.uniform(0.05, 0.95, E)) / k * (t_hi - t_lo)).astype(np.int64)
    return np.minimum(ep_start[ev_ep] + offs, spec.span_ms - 1), ev_ep, ep_start


def _episode_details(
    w: _World, ev_pat: np.ndarray, ev_ep: np.ndarray, ev_u: np.ndarray, ep_user: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Category, country, merchant and amount of every episode event."""
    rng, n, E = w.rng, ev_pat.size, ep_user.size
    typ = np.exp(w.mu[ev_u])
    cat, cty, amt = np.zeros(n, np.int64), w.home[ev_u].copy(), np.zeros(n)
    abroad = rng.random(E) < 0.5
    away = w.foreign(w.home[ep_user])

    def cats(names: tuple[str, ...], size: int) -> np.ndarray:
        return rng.choice(np.array([_CAT[c] for c in names]), size)

    m = ev_pat == 1  # amount_spike
    cat[m] = cats(("electronics", "travel", "online", "apparel"), m.sum())
    cty[m] = np.where(abroad[ev_ep[m]], away[ev_ep[m]], cty[m])
    amt[m] = typ[m] * np.exp(rng.uniform(np.log(8), np.log(40), m.sum()))
    m = ev_pat == 2  # card_testing
    cat[m] = _CAT["online"]
    amt[m] = rng.uniform(0.10, 2.00, m.sum())
    m = ev_pat == 3  # velocity_burst
    cat[m] = cats(("electronics", "apparel", "online", "grocery", "fuel"), m.sum())
    cty[m] = np.where(abroad[ev_ep[m]], away[ev_ep[m]], cty[m])
    amt[m] = typ[m] * np.exp(_CAT_OFFSET[cat[m]] + rng.uniform(0, np.log(3), m.sum()))
    m = ev_pat == 4  # large_purchase: 1.6-3.3 sigma of the user, within 2-3.5x
    cat[m] = cats(("electronics", "travel", "apparel"), m.sum())
    amt[m] = typ[m] * np.clip(np.exp(w.sigma[ev_u[m]] * rng.uniform(1.6, 3.3, m.sum())), 2.0, 3.5)
    m = ev_pat == 5  # bursty_shopper
    cat[m] = cats(("apparel", "restaurant", "entertainment", "grocery"), m.sum())
    amt[m] = w.habitual(ev_u[m], cat[m])
    m = ev_pat == 7  # test_then_cashout: 3-5 tiny online payments, then one large electronics purchase
    last = np.r_[ev_ep[1:] != ev_ep[:-1], True]
    small, big = m & ~last, m & last
    cat[small] = _CAT["online"]
    amt[small] = rng.uniform(0.10, 1.99, small.sum())
    cat[big] = _CAT["electronics"]
    amt[big] = rng.uniform(250.0, 1500.0, big.sum())
    m = ev_pat == 6  # travel
    cat[m] = cats(("travel", "restaurant", "fuel", "grocery", "entertainment"), m.sum())
    cty[m] = away[ev_ep[m]]
    amt[m] = w.habitual(ev_u[m], cat[m]) * rng.uniform(1.0, 1.3, m.sum())
    merch = w.merchant(cty, cat)
    m = ev_pat == 2  # card testing hits 1-3 online merchants of any country per episode
    tester = w.merchant(np.repeat(rng.choice(len(COUNTRIES), E, p=w.cw), 3), np.full(3 * E, _CAT["online"]))
    width = rng.integers(1, 4, E)
    pick = (rng.random(int(m.sum())) * width[ev_ep[m]]).astype(np.int64)
    merch[m] = tester.reshape(E, 3)[ev_ep[m], pick]
    cty[m] = _merchant_country(w, merch[m])
    return cat, cty, merch, amt


def _merchant_country(w: _World, merch: np.ndarray) -> np.ndarray:
    """The country of each merchant (pools are laid out country-major)."""
    pool = np.searchsorted(w.pool_off.ravel(), merch, side="right") - 1
    return pool // len(CATEGORIES)


def generate_transactions(spec: TransactionSpec = TransactionSpec()) -> dict[str, np.ndarray]:
    """Generate the labelled transaction stream, in arrival order.

    Args:
        spec: sizes, time span, disorder and the shares of each pattern.

    Returns:
        Columns of equal length: ``user``, ``merchant``, ``category``, ``country``, ``txn_id``,
        ``pattern`` (object arrays of str), ``ts_ms`` and ``arrival_ms`` (int64 epoch ms),
        ``amount`` (float64, > 0, cents), ``label`` (int8, 1 = fraud), ``episode`` (int64, -1 for
        normal spending; episodes are numbered by start time). ``txn_id`` is numbered in event-time order.

    Example:
        >>> cols = generate_transactions(TransactionSpec(events=5_000, users=100, seed=1))
        >>> len(cols["ts_ms"]), bool((np.diff(cols["arrival_ms"]) >= 0).all())
        (5000, True)
        >>> sorted(set(cols["pattern"]))[:3], str(cols["user"][0])[:1]
        (['amount_spike', 'bursty_shopper', 'card_testing'], 'u')
    """
    spec = dataclasses.replace(spec, users=active_users(spec))
    rng = np.random.default_rng(spec.seed)
    w = _World(spec, rng)
    ep_pat, ep_size = _plan_episodes(spec, rng)  # sizes first, so the normal count makes the total exact
    need = spec.min_history + 5
    n_normal = spec.events - int(ep_size.sum())
    if n_normal < need:  # too small to host an episode: everyday spending only, still exactly `events`
        ep_pat, ep_size, n_normal = ep_pat[:0], ep_size[:0], spec.events
    normal = _normal_spending(spec, w, n_normal, eligible_needed=min(2, n_normal // need) if ep_pat.size else 0)
    kept_pat, ep_user = _assign_episodes(spec, w, ep_pat, normal["counts"])
    ep_pat, ep_size = kept_pat, ep_size[: kept_pat.size]
    ev_ts, ev_ep, ep_start = _episode_times(spec, w, ep_pat, ep_size, ep_user, normal)
    ev_pat, ev_u = ep_pat[ev_ep], ep_user[ev_ep]
    e_cat, e_cty, e_merch, e_amt = _episode_details(w, ev_pat, ev_ep, ev_u, ep_user)

    # Assemble, number by event time, add arrival disorder, sort by arrival.
    user = np.concatenate([normal["user"], ev_u])
    ts = np.concatenate([normal["ts"], ev_ts])
    amount = np.maximum(np.round(np.concatenate([normal["amount"], e_amt]), 2), 0.01)
    merch = np.concatenate([normal["merch"], e_merch])
    cat = np.concatenate([normal["cat"], e_cat])
    cty = np.concatenate([normal["cty"], e_cty])
    pat = np.concatenate([np.zeros(normal["user"].size, np.int8), ev_pat])
    ep_rank = np.empty(ep_pat.size, np.int64)
    ep_rank[np.lexsort((ep_user, ep_start))] = np.arange(ep_pat.size)
    episode = np.concatenate([np.full(normal["user"].size, -1, np.int64), ep_rank[ev_ep]])
    n = ts.size
    tid = np.empty(n, np.int64)
    tid[np.lexsort((pat, user, ts))] = np.arange(1, n + 1)
    late = rng.random(n) < spec.disorder_frac
    delay = rng.integers(1, max(spec.max_disorder_ms, 1) + 1, n)
    arrival = ts + np.where(late & (spec.max_disorder_ms > 0), delay, 0)
    arr = np.lexsort((tid, arrival))
    return {
        "user": _labels("u", np.arange(spec.users), 7)[user[arr]],
        "ts_ms": spec.start_ms + ts[arr],
        "arrival_ms": spec.start_ms + arrival[arr],
        "amount": amount[arr],
        "merchant": _labels("m", np.arange(w.n_merchants), 5 if w.n_merchants < 100_000 else 7)[merch[arr]],
        "category": np.array(CATEGORIES, object)[cat[arr]],
        "country": np.array(COUNTRIES, object)[cty[arr]],
        "txn_id": _labels("t", tid[arr], 8 if n < 100_000_000 else 10),
        "label": np.isin(pat[arr], _FRAUD_CODES).astype(np.int8),
        "pattern": np.array(PATTERNS, object)[pat[arr]],
        "episode": episode[arr],
    }


_JSONL_KEYS = ("user", "ts", "amount", "merchant", "category", "country", "txn_id", "label", "pattern")


def iter_records(cols: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """One dict per event, in arrival order, with the keys of :func:`write_jsonl` (for producers)."""
    columns = [cols[c].tolist() for c in ("user", "ts_ms", "amount", "merchant", "category", "country", "txn_id",
                                           "label", "pattern")]  # fmt: skip
    for row in zip(*columns, strict=True):
        yield dict(zip(_JSONL_KEYS, row, strict=True))


def write_jsonl(cols: dict[str, np.ndarray], path_or_file: str | PathLike[str] | IO[bytes]) -> int:
    """Write one compact JSON object per event, in arrival order; returns the number of lines.

    Keys: ``user, ts, amount, merchant, category, country, txn_id, label, pattern`` (``ts`` is the event
    time in epoch ms). Writing is the edge of the system, so it builds one dict per event.

    Example:
        >>> import io, json
        >>> cols = generate_transactions(TransactionSpec(events=300, users=20))
        >>> buf = io.BytesIO(); write_jsonl(cols, buf)
        300
        >>> sorted(json.loads(buf.getvalue().splitlines()[0]))[:3]
        ['amount', 'category', 'country']
    """
    enc = msgspec.json.Encoder()
    rows = iter_records(cols)
    n = 0
    close = not hasattr(path_or_file, "write")
    f: Any = open(path_or_file, "wb") if close else path_or_file  # type: ignore[arg-type]  # noqa: SIM115
    try:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == 65_536:
                f.write(enc.encode_lines(chunk))
                n += len(chunk)
                chunk.clear()
        if chunk:
            f.write(enc.encode_lines(chunk))
            n += len(chunk)
    finally:
        if close:
            f.close()
    return n


_CSV_COLS = (  # (header, column): the event time is `ts`, as in the JSON lines and the documented schema
    ("txn_id", "txn_id"),
    ("user", "user"),
    ("ts", "ts_ms"),
    ("arrival_ms", "arrival_ms"),
    ("amount", "amount"),
    ("merchant", "merchant"),
    ("category", "category"),
    ("country", "country"),
    ("label", "label"),
    ("pattern", "pattern"),
    ("episode", "episode"),
)


def write_csv(cols: dict[str, np.ndarray], path: str | PathLike[str]) -> int:
    """Write all columns as CSV with a header, in arrival order; returns the number of rows.

    The header names the fields as the JSON lines do (``ts`` is the event time in epoch ms), plus
    ``arrival_ms`` and ``episode``: a pipeline reads either file with the same ``schema``.

    Example:
        >>> import tempfile, os
        >>> cols = generate_transactions(TransactionSpec(events=300, users=20))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_csv(cols, os.path.join(d, "t.csv"))
        300
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([h for h, _ in _CSV_COLS])
        w.writerows(zip(*(cols[c].tolist() for _, c in _CSV_COLS), strict=True))
    return int(cols["ts_ms"].size)


def summary(cols: dict[str, np.ndarray]) -> dict[str, Any]:
    """Counts and shares of a generated stream (plain data, JSON-ready).

    Returns:
        ``events``, ``users``, ``fraud_share``, ``patterns`` (events per pattern), ``episodes`` (per
        pattern), ``max_out_of_order_ms`` (largest lag of an event time behind the largest event time
        that arrived before it), ``max_delay_ms`` (arrival - event time), ``span_ms`` (event time).

    Example:
        >>> s = summary(generate_transactions(TransactionSpec(events=2_000, users=50)))
        >>> s["events"], s["max_out_of_order_ms"] <= 2_000
        (2000, True)
    """
    ts = cols["ts_ms"]
    n = int(ts.size)
    pats, cnt = np.unique(cols["pattern"], return_counts=True)
    ep = cols["episode"] >= 0
    ep_pats = {}
    if ep.any():
        ids, first = np.unique(cols["episode"][ep], return_index=True)
        ep_p, ep_c = np.unique(cols["pattern"][ep][first], return_counts=True)
        ep_pats = {str(p): int(c) for p, c in zip(ep_p, ep_c, strict=True)}
    return {
        "events": n,
        "users": int(np.unique(cols["user"]).size),
        "fraud_share": float(cols["label"].mean()) if n else 0.0,
        "patterns": {str(p): int(c) for p, c in zip(pats, cnt, strict=True)},
        "episodes": ep_pats,
        "max_out_of_order_ms": int((np.maximum.accumulate(ts) - ts).max()) if n else 0,
        "max_delay_ms": int((cols["arrival_ms"] - ts).max()) if n else 0,
        "span_ms": int(ts.max() - ts.min()) if n else 0,
    }


def transaction_source(spec: TransactionSpec | None = None, *, rate: float | None = None) -> Any:
    """The synthetic stream as a source (:class:`~vigil.io.replay.ReplaySource`), paced at ``rate`` events/s."""
    from vigil.io.replay import ReplaySource

    cols = generate_transactions(spec or TransactionSpec())
    return ReplaySource(
        cols["user"], cols["ts_ms"], {"amount": cols["amount"]},
        {k: cols[k] for k in ("txn_id", "merchant", "category", "country", "label", "pattern", "episode")},
        rate=rate, name="transactions",
    )  # fmt: skip
