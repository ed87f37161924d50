"""Per-key state as arrays indexed by key slot: growing them, resetting rows, and per-key slices.

Keyed state in Vigil is a struct of arrays whose first axis is the key slot. :class:`SlotArrays` gives any
such holder the per-key slice verbs that the dataflow seam needs (one key's state out of one instance and into
another, e.g. Flink keyed state or late scoring):

* ``export_slots(slots)`` — one plain-data dict per slot: that slot's row of every state array;
* ``import_slots(slots, states)`` — write those rows into (possibly other) slots, growing the arrays as
  needed; ``None`` resets a slot (through the holder's ``reset_slots``).

A holder lists its arrays in ``_slot_arrays`` and grows them in ``_grow_slots(top)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np


def grow_rows(arr: np.ndarray, top: int, fill: float | int | bool = 0) -> np.ndarray:
    """``arr`` with at least ``top`` rows (doubling), new rows set to ``fill``; ``arr`` itself if big enough.

    Examples:
        >>> grow_rows(np.ones(3), 4, fill=-1).tolist()
        [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
    """
    if arr.shape[0] >= top:
        return arr
    grown = np.full((max(top, 2 * arr.shape[0]), *arr.shape[1:]), fill, arr.dtype)
    grown[: arr.shape[0]] = arr
    return grown


def grow_rows_pow2(arr: np.ndarray, top: int) -> np.ndarray:
    """``arr`` with at least ``top`` rows (at least 64, doubling, zero-filled), or ``arr`` itself if big enough.

    Examples:
        >>> grow_rows_pow2(np.zeros((0, 2)), 70).shape
        (128, 2)
    """
    if arr.shape[0] >= top:
        return arr
    cap = max(64, arr.shape[0])
    while cap < top:
        cap *= 2
    grown = np.zeros((cap, *arr.shape[1:]), arr.dtype)
    grown[: arr.shape[0]] = arr
    return grown


def reset_rows(arr: np.ndarray, slots: np.ndarray) -> None:
    """Zero the rows of ``slots`` that exist in ``arr``."""
    arr[slots[(slots >= 0) & (slots < arr.shape[0])]] = 0


def as_slots(slots: Any) -> np.ndarray:
    """Slots as an int64 array, checked non-negative."""
    out = np.asarray(slots, np.int64).reshape(-1)
    if len(out) and int(out.min()) < 0:
        raise ValueError(f"key slots must be >= 0; got {int(out.min())}")
    return out


def row_value(arr: np.ndarray, s: int) -> Any:
    """Row ``s`` of ``arr`` as plain data: a copied array, or a Python scalar for 1-D arrays."""
    return arr[s].copy() if arr.ndim > 1 else arr[s].item()


def put_row(arr: np.ndarray, s: int, value: Any, what: str) -> None:
    """Write a slice's row into ``arr[s]``, checking its shape (``what`` names it in the error)."""
    v = np.asarray(value)
    if v.shape != arr.shape[1:]:
        raise ValueError(f"slot state `{what}` has shape {v.shape}; this instance's params give {arr.shape[1:]} "
                         "(import slices only into an instance built with the same params)")  # fmt: skip
    arr[s] = v


def split_none(slots: np.ndarray, states: Sequence[Any]) -> tuple[np.ndarray, list[tuple[int, Any]]]:
    """The slots whose state is ``None`` (to reset) and the ``(slot, state)`` pairs to load, in order."""
    if len(states) != len(slots):
        raise ValueError(f"got {len(states)} slot states for {len(slots)} slots")
    reset = np.array([s for s, st in zip(slots.tolist(), states, strict=True) if st is None], np.int64)
    return reset, [(s, st) for s, st in zip(slots.tolist(), states, strict=True) if st is not None]


class SlotArrays:
    """Mixin: per-key slices of state kept as arrays whose first axis is the key slot (module docstring).

    Subclasses set ``_slot_arrays`` (attribute names) and implement ``_grow_slots(top)`` and ``reset_slots``
    (which must reset the parts too). ``_slot_parts`` names attributes that slice themselves (they have
    ``export_slots`` / ``import_slots``); their slices travel under the attribute's name. A slot never seen
    exports the state of a fresh slot.
    """

    _slot_arrays: ClassVar[tuple[str, ...]] = ()
    _slot_parts: ClassVar[tuple[str, ...]] = ()

    def _grow_slots(self, top: int) -> None:
        """Grow every array in ``_slot_arrays`` to at least ``top`` rows (fresh rows = a never-seen slot)."""
        if self._slot_arrays:
            raise NotImplementedError(f"{type(self).__name__} lists slot arrays but does not grow them")

    def reset_slots(self, slots: Any) -> None:
        """Forget ``slots`` (subclasses implement it)."""
        raise NotImplementedError

    def export_slots(self, slots: Any) -> list[dict[str, Any]]:
        """One plain-data dict per slot, holding everything that key's later results depend on."""
        slots = as_slots(slots)
        if len(slots) and self._slot_arrays:
            self._grow_slots(int(slots.max()) + 1)
        arrays = [(name, getattr(self, name)) for name in self._slot_arrays]
        out = [{name: row_value(arr, s) for name, arr in arrays} for s in slots.tolist()]
        for part in self._slot_parts:
            for d, sub in zip(out, self._part(part).export_slots(slots), strict=True):
                d[part] = sub
        return out

    def _part(self, name: str) -> Any:
        part = getattr(self, name)
        if not callable(getattr(part, "export_slots", None)):
            raise NotImplementedError(f"{type(self).__name__}.{name} ({type(part).__name__}) keeps no per-key slices")
        return part

    def import_slots(self, slots: Any, states: Sequence[dict[str, Any] | None]) -> None:
        """Load :meth:`export_slots` output into ``slots`` of this instance; ``None`` resets a slot."""
        slots = as_slots(slots)
        reset, load = split_none(slots, states)
        if len(slots) and self._slot_arrays:
            self._grow_slots(int(slots.max()) + 1)
        if len(reset):
            self.reset_slots(reset.astype(np.int32))
        names = (*self._slot_arrays, *self._slot_parts)
        for s, state in load:
            missing = [n for n in names if n not in state]
            if missing:
                raise ValueError(f"{type(self).__name__} slot state lacks {missing}; got keys {sorted(state)}")
            for name in self._slot_arrays:
                put_row(getattr(self, name), s, state[name], name)
        if load:
            at = np.array([s for s, _ in load], np.int64)
            for part in self._slot_parts:
                self._part(part).import_slots(at, [state[part] for _, state in load])
