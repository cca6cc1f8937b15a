"""Trains the benchmark's DeepCTR-Torch reference (benches/compare/deepctr_ref.py `build`, the
sparse-patched variant) a few Adagrad steps from weights and batches written by a Rust test, and
writes the weights after every step.

    python training_parity.py SPEC.json

SPEC.json: {"model": "dcn" (a key of deepctr_ref.MODELS, built with DeepCTR-Torch's defaults),
"embedding": "single" | "mlet", "cardinalities": [...], "num_dense": m, "dim": d, "k": k,
"lr": lr, "weights": "w0.npz", "batches": ["b1.npz", ...] (arrays `cat` [B, F] int64, `dense`
[B, m] float32, `label` [B] float32), "output": "OUT_PREFIX"}.

The weights are named as DeepCTR-Torch's state_dict for the network, plus, per field f
(numbered from 1), `emb.C{f}` (the field's [n, d] table, or MLET's [n, k] one), `proj.C{f}`
(MLET's [k, d] projection) and `lin.C{f}` ([n, 1]). Writes OUT_PREFIX{s}.npz after step s, in
the same names. Each step is DeepCTR-Torch's `fit` loop body: forward, the summed binary cross
entropy of the sigmoid output, plus `get_regularization_loss()`, backward, `optim.step()`.
"""
import json
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "benches", "compare"))
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import deepctr_ref  # noqa: E402


def tables(model):
    """(name, tensor) of every table weight and projection, in the spec's names."""
    out = []
    for f, (name, t) in enumerate(model.embedding_dict.items()):
        out.append((f"emb.C{f + 1}", t.table.weight))
        if t.projection is not None:
            out.append((f"proj.C{f + 1}", t.projection))
    for f, (name, t) in enumerate(model.linear_model.embedding_dict.items()):
        out.append((f"lin.C{f + 1}", t.table.weight))
    return out


def network(model):
    skip = ("embedding_dict.", "linear_model.embedding_dict.")
    return [(k, v) for k, v in model.named_parameters() if not k.startswith(skip)]


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    torch.set_num_threads(1)
    cache = types.SimpleNamespace(cardinalities=spec["cardinalities"], num_dense=spec["num_dense"])
    w = {"dim": spec["dim"], "k": spec["k"], "init_std": 0.1, "seed": 0}
    model = deepctr_ref.build(spec["model"], cache, w, spec["embedding"], "sparse")
    weights = np.load(spec["weights"])
    params = dict(tables(model) + network(model))
    missing = set(params) - set(weights.files)
    if missing:
        sys.exit(f"weights lack {sorted(missing)}")
    with torch.no_grad():
        for name, p in params.items():
            value = torch.from_numpy(np.array(weights[name]))
            if tuple(value.shape) != tuple(p.shape):
                sys.exit(f"{name}: shape {tuple(value.shape)}, the reference's is {tuple(p.shape)}")
            p.copy_(value)
    optim = torch.optim.Adagrad(model.parameters(), lr=spec["lr"])
    model.train()
    for s, path in enumerate(spec["batches"], start=1):
        b = np.load(path)
        x = torch.cat(
            [torch.from_numpy(b["cat"]).float(), torch.from_numpy(b["dense"]).float()], dim=1
        )
        y = torch.from_numpy(b["label"]).float()
        y_pred = model(x).squeeze(-1)
        optim.zero_grad()
        loss = F.binary_cross_entropy(y_pred, y, reduction="sum")
        total = loss + model.get_regularization_loss() + model.aux_loss
        total.backward()
        optim.step()
        np.savez(
            f"{spec['output']}{s}.npz",
            **{k: v.detach().numpy() for k, v in params.items()},
        )


if __name__ == "__main__":
    main(sys.argv[1])
