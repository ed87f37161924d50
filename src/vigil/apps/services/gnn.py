"""L3: a small graph neural network over the service graph, served batched from an ONNX file by ONNX Runtime.

**Snapshot.** One closed bin gives one graph: the services (nodes), the call edges seen (``A_out[i, j] = 1``
when ``i`` calls ``j``, row-normalized; ``A_in`` the same for callers) and per node the :data:`FEATURES`
built from what L1 and L2 computed for the bin (:func:`node_features`): the service's own latency and
traffic residuals, error and slow shares and burn rate, and the worst residual and error share on its
incoming and outgoing call edges. So a service is scored with its neighbours: a slow database makes every
caller's outgoing edge slow; a caller with a slow edge to one healthy-looking callee points at the network.

**Model** (two message-passing layers, then a per-node logistic output)::

    H1 = relu(X Ws1 + A_in X Wi1 + A_out X Wo1 + b1)        # [B, N, H]
    H2 = relu(H1 Ws2 + A_in H1 Wi2 + A_out H1 Wo2 + b2)
    score = sigmoid(H2 w + c)                              # [B, N]: P(service is where a fault is)

Inputs ``x`` ``[B, N, F]``, ``a_in`` and ``a_out`` ``[B, N, N]`` (float32); output ``score`` ``[B, N]``; B and
N are dynamic axes, so one call scores a batch of snapshots (or graphs) of any size. It is trained offline
by ``vigil train --services-gnn`` with PyTorch in its own virtualenv (:mod:`.gnn_train`, which exports the
ONNX file with ``torch.onnx.export``); :func:`build_onnx` writes the same graph from numpy weights, for tests
and for checking the exported file against the reference :func:`forward`.

:class:`GnnServer` loads the file (its metadata: ``features``, the feature list it was trained on) and scores;
it raises :class:`GnnUnavailable` when the file is missing, unreadable or trained on other features, which the
orchestrator turns into a fallback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vigil.apps.services.red import EDGE

__all__ = ["FEATURES", "GnnServer", "GnnUnavailable", "adjacency", "build_onnx", "forward", "node_features"]

FEATURES: tuple[str, ...] = ("lat_z", "rate_z", "error_share", "slow_share", "burn", "in_edge_lat_z",
                             "out_edge_lat_z", "out_edge_error_share", "log_rate", "in_edge_rate_z")  # fmt: skip


class GnnUnavailable(RuntimeError):
    """The model can't be served (missing, unreadable, trained for other inputs)."""


def _clip_z(z: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(z, np.float64) / 10.0, -2.0, 2.0)


def node_features(entities: Sequence[str], services: Sequence[str], count: np.ndarray, errors: np.ndarray,
                  bad: np.ndarray, burn: np.ndarray, lat_z: np.ndarray,
                  rate_z: np.ndarray) -> np.ndarray:  # fmt: skip
    """The ``[N, F]`` features of one bin (see :data:`FEATURES`), nodes in the order of ``services``."""
    idx = {e: i for i, e in enumerate(entities)}
    node = {s: k for k, s in enumerate(services)}
    N = len(services)
    X = np.zeros((N, len(FEATURES)))
    rows = np.array([idx[s] for s in services], np.int64)
    n = np.maximum(count[rows], 1.0)
    X[:, 0] = _clip_z(lat_z[rows])
    X[:, 1] = _clip_z(rate_z[rows])
    X[:, 2] = errors[rows] / n
    X[:, 3] = np.clip((bad[rows] - errors[rows]) / n, 0.0, 1.0)
    X[:, 4] = np.log10(np.clip(burn[rows], 1e-2, 1e3)) / 3.0
    X[:, 8] = np.log10(count[rows] + 1.0) / 4.0
    for e, j in idx.items():
        if EDGE not in e:
            continue
        a, b = e.split(EDGE, 1)
        if a not in node or b not in node:
            continue
        z = _clip_z(lat_z[j])
        X[node[b], 5] = max(X[node[b], 5], z)
        X[node[a], 6] = max(X[node[a], 6], z)
        X[node[a], 7] = max(X[node[a], 7], errors[j] / max(count[j], 1.0))
        X[node[b], 9] = max(X[node[b], 9], _clip_z(rate_z[j]))
    return X


def adjacency(services: Sequence[str], edges: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalized ``A_in`` (callers) and ``A_out`` (callees) over ``services``."""
    node = {s: k for k, s in enumerate(services)}
    N = len(services)
    out = np.zeros((N, N))
    for a, b in edges:
        if a in node and b in node and a != b:
            out[node[a], node[b]] = 1.0
    inn = out.T.copy()
    return (inn / np.maximum(inn.sum(axis=1, keepdims=True), 1.0),
            out / np.maximum(out.sum(axis=1, keepdims=True), 1.0))  # fmt: skip


def forward(w: dict[str, np.ndarray], x: np.ndarray, a_in: np.ndarray, a_out: np.ndarray) -> np.ndarray:
    """The model in numpy (the reference the ONNX file must match)."""
    h = x
    for k in (1, 2):
        h = np.maximum(h @ w[f"ws{k}"] + (a_in @ h) @ w[f"wi{k}"] + (a_out @ h) @ w[f"wo{k}"] + w[f"b{k}"], 0.0)
    logit = (h @ w["w"])[..., 0] + w["c"][0]
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


def random_weights(hidden: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Small random weights (tests)."""
    rng = np.random.default_rng(seed)
    F = len(FEATURES)
    w: dict[str, np.ndarray] = {}
    for k, fin in ((1, F), (2, hidden)):
        for name in ("ws", "wi", "wo"):
            w[f"{name}{k}"] = (rng.standard_normal((fin, hidden)) / np.sqrt(fin)).astype(np.float32)
        w[f"b{k}"] = np.zeros(hidden, np.float32)
    w["w"] = (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32)
    w["c"] = np.zeros(1, np.float32)
    return w


def build_onnx(w: dict[str, np.ndarray], path: str | Path, *, features: Sequence[str] = FEATURES) -> None:
    """Write the model of the module docstring with weights ``w`` as an ONNX file (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in w.items()]
    nodes = []
    h = "x"
    for k in (1, 2):
        nodes += [helper.make_node("MatMul", ["a_in", h], [f"ai{k}"]),
                  helper.make_node("MatMul", ["a_out", h], [f"ao{k}"]),
                  helper.make_node("MatMul", [h, f"ws{k}"], [f"s{k}"]),
                  helper.make_node("MatMul", [f"ai{k}", f"wi{k}"], [f"i{k}"]),
                  helper.make_node("MatMul", [f"ao{k}", f"wo{k}"], [f"o{k}"]),
                  helper.make_node("Sum", [f"s{k}", f"i{k}", f"o{k}", f"b{k}"], [f"z{k}"]),
                  helper.make_node("Relu", [f"z{k}"], [f"h{k}"])]  # fmt: skip
        h = f"h{k}"
    nodes += [helper.make_node("MatMul", [h, "w"], ["l3"]), helper.make_node("Add", ["l3", "c"], ["l"]),
              helper.make_node("Sigmoid", ["l"], ["p"]),
              helper.make_node("Squeeze", ["p", "ax"], ["score"])]  # fmt: skip
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "ax"))
    F = len(features)
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "services_gnn",
                              [vi("x", TensorProto.FLOAT, ["B", "N", F]),
                               vi("a_in", TensorProto.FLOAT, ["B", "N", "N"]),
                               vi("a_out", TensorProto.FLOAT, ["B", "N", "N"])],
                              [vi("score", TensorProto.FLOAT, ["B", "N"])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"features": json.dumps(list(features))})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


class GnnServer:
    """The ONNX model in an ONNX Runtime session (one thread: the pipeline owns the cores)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise GnnUnavailable(f"no GNN model at {self.path}")
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any load failure means: fall back
            raise GnnUnavailable(f"GNN model {self.path} can't be loaded: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        feats = json.loads(meta.get("features", "null") or "null")
        if feats is not None and list(feats) != list(FEATURES):
            raise GnnUnavailable(f"GNN model {self.path} was trained on features {feats}, not {list(FEATURES)}")
        names = sorted(i.name for i in self.session.get_inputs())
        if names != ["a_in", "a_out", "x"]:
            raise GnnUnavailable(f"GNN model {self.path} has inputs {names}; expected a_in, a_out, x")

    def score(self, x: np.ndarray, a_in: np.ndarray, a_out: np.ndarray) -> np.ndarray:
        """Scores ``[B, N]`` of a batch of snapshots (``x`` ``[B, N, F]``; a single ``[N, F]`` works too)."""
        single = x.ndim == 2
        if single:
            x, a_in, a_out = x[None], a_in[None], a_out[None]
        out = self.session.run(["score"], {"x": x.astype(np.float32), "a_in": a_in.astype(np.float32),
                                           "a_out": a_out.astype(np.float32)})[0]  # fmt: skip
        res = np.asarray(out, np.float64)
        return res[0] if single else res
