"""Per-feature attribution of Isolation Forest scores, from the trees inside the served ONNX model.

The artifact's ONNX graph (skl2onnx's IsolationForest converter) holds, per estimator, a ``Gather`` of the
estimator's feature subset, a ``TreeEnsembleRegressor`` whose nodes are the tree's splits (``nodes_*``
attributes) and which outputs the reached leaf's id, and a ``LabelEncoder`` from leaf id to the number of
training samples in the leaf. From those, every node's training size follows (a node holds its leaves'
samples).

Attribution of a point: walk each tree; at every split on the path, the point's region shrinks from the
parent's size to the child's. An even split halves it; a split that puts the point with a small minority
isolated it. Each split's feature gets the bits beyond an even split,
``max(0, log2((n_parent + 1) / (n_child + 1)) - 1)``; a feature's score is its share of all such bits over the
forest (the same measure :class:`~vigil.detectors.HalfSpaceTrees` uses with its masses). Features that
isolated the point early and sharply dominate; features along ordinary splits get ~0.

The trees are parsed once per model (cached by the model's sha256). A graph that doesn't have this shape
(another converter) gives ``None``: the detector then explains with the features' z-scores against training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TREES: dict[str, list[dict[str, np.ndarray]] | None] = {}
_CMP = {b"BRANCH_LEQ": np.less_equal, b"BRANCH_LT": np.less, b"BRANCH_GTE": np.greater_equal,
        b"BRANCH_GT": np.greater, b"BRANCH_EQ": np.equal, b"BRANCH_NEQ": np.not_equal}  # fmt: skip


def forest(artifact: dict[str, Any]) -> list[dict[str, np.ndarray]] | None:
    """The trees of an Isolation Forest artifact (cached), or ``None`` when the graph can't be read."""
    sha = artifact["onnx_sha256"]
    if sha not in _TREES:
        try:
            _TREES[sha] = _parse(artifact["onnx"], int(artifact["params"]["max_samples_used"]))
        except (ImportError, KeyError, ValueError, IndexError):
            _TREES[sha] = None
    return _TREES[sha]


def _parse(blob: bytes, max_samples: int) -> list[dict[str, np.ndarray]]:
    import onnx
    from onnx import helper, numpy_helper

    g = onnx.load_from_string(blob).graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    made_by = {o: n for n in g.node for o in n.output}
    used_by: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            used_by.setdefault(i, []).append(n)
    trees: list[dict[str, np.ndarray]] = []
    for n in g.node:
        if n.op_type != "TreeEnsembleRegressor":
            continue
        at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        gather = made_by.get(n.input[0])
        cols = consts[gather.input[1]].astype(np.int64) if gather is not None and gather.op_type == "Gather" else None
        leaf_n = _leaf_samples(n.output[0], used_by, max_samples)
        ids = np.asarray(at["nodes_nodeids"], np.int64)
        if len(set(at["nodes_treeids"])) != 1 or not np.array_equal(ids, np.arange(len(ids))):
            raise ValueError("expected one tree per TreeEnsembleRegressor, nodes numbered in order")
        feat = np.asarray(at["nodes_featureids"], np.int64)
        trees.append({
            "feature": cols[feat] if cols is not None else feat,
            "threshold": np.asarray(at["nodes_values"], np.float32),
            "true": np.asarray(at["nodes_truenodeids"], np.int64),
            "false": np.asarray(at["nodes_falsenodeids"], np.int64),
            "mode": np.asarray(at["nodes_modes"], object),
            "size": _sizes(at, leaf_n),
        })  # fmt: skip
    if not trees:
        raise ValueError("no TreeEnsembleRegressor in the model")
    return trees


def _leaf_samples(out: str, used_by: dict[str, list[Any]], max_samples: int) -> dict[int, float]:
    """Leaf id -> training samples: the LabelEncoder after this tree whose values add up to the subsample size."""
    from onnx import helper

    for cast in used_by.get(out, []):
        for enc in used_by.get(cast.output[0], []):
            if enc.op_type != "LabelEncoder":
                continue
            at = {a.name: helper.get_attribute_value(a) for a in enc.attribute}
            keys, vals = at.get("keys_int64s"), at.get("values_floats")
            if keys is not None and vals is not None and abs(sum(vals) - max_samples) < 0.5:
                return dict(zip(keys, vals, strict=True))
    raise ValueError("no leaf-size table after a tree")


def _sizes(at: dict[str, Any], leaf_n: dict[int, float]) -> np.ndarray:
    n = len(at["nodes_nodeids"])
    size = np.zeros(n, np.float64)
    leaf = np.array([m == b"LEAF" for m in at["nodes_modes"]])
    for node in range(n - 1, -1, -1):  # children come after their parent in sklearn's numbering
        size[node] = leaf_n.get(node, 0.0) if leaf[node] else size[at["nodes_truenodeids"][node]] + size[
            at["nodes_falsenodeids"][node]]  # fmt: skip
    return size


def isolation_shares(trees: list[dict[str, np.ndarray]], X32: np.ndarray) -> np.ndarray:
    """Per row of ``X32`` (float32, columns = the model's features), each feature's share of the isolation bits."""
    m, d = X32.shape
    bits = np.zeros((m, d), np.float64)
    rows = np.arange(m)
    for t in trees:
        node = np.zeros(m, np.int64)
        active = t["mode"][node] != b"LEAF"
        while active.any():
            r, nd = rows[active], node[active]
            f = t["feature"][nd]
            x = X32[r, f]
            go = np.zeros(len(r), bool)
            for mode, cmp in _CMP.items():
                sel = t["mode"][nd] == mode
                go[sel] = cmp(x[sel], t["threshold"][nd[sel]])
            child = np.where(go, t["true"][nd], t["false"][nd])
            gain = np.maximum(0.0, np.log2((t["size"][nd] + 1.0) / (t["size"][child] + 1.0)) - 1.0)
            np.add.at(bits, (r, f), gain)
            node[active] = child
            active = t["mode"][node] != b"LEAF"
    total = bits.sum(axis=1, keepdims=True)
    return np.divide(bits, total, out=np.zeros_like(bits), where=total > 0)
