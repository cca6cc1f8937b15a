"""References (c) and (d): DeepCTR-Torch 0.3.0's DeepFM, DCN, AutoInt and xDeepFM, trained by
its own `fit` (Adagrad, loss summed over the batch, its default L2 coefficients), either

- `--variant shipped`: as the package ships it: dense `nn.Embedding` tables, so every step
  computes a dense gradient for every table and Adagrad updates every row, plus the L2 penalty
  over every row of every table (`get_regularization_loss`); or
- `--variant sparse`: patched at run time (site-packages untouched): the tables (embedding and
  linear part) are `nn.Embedding(sparse=True)`, so Adagrad updates only the rows a batch looked
  up, and the whole-table L2 is replaced by mlet's definition: the same coefficients over the
  rows the batch looked up (src/training/step.rs `penalty`). The dense layers' own L2 terms
  (DCN's cross kernels) are left as DeepCTR computes them.

`--embedding mlet` replaces each field's `n x d` table by MLET's `n x k` table times a `k x d`
projection (tables N(0, 1e-4²) as DeepCTR initialises them, projections N(0, sigma²)); the
linear part (one weight per category) stays single-layer, as in mlet.

    python deepctr_ref.py --variant shipped|sparse --cache DIR --workload JSON --embedding single|mlet --threads N --out R.json
"""
import os
import sys
import types

os.environ.setdefault("TQDM_DISABLE", "1")
import numpy as np
import torch
from torch import nn

import common
from common import EVAL_BATCH, Cache, Timer, write_result


def _offline(*args, **kwargs):
    raise OSError("the benchmark does not go online")


def _no_metrics(*args, **kwargs):
    raise RuntimeError("the benchmark compiles DeepCTR-Torch without metrics")


# DeepCTR-Torch's import starts a thread that asks PyPI for a newer version (and the process
# waits for it at exit); the benchmark reaches nothing outside the machine, so that thread gets
# a `requests` that fails at once. Its base model also imports scikit-learn's metrics (about a
# second and a half of every run's start, with scipy), which it only calls for
# `compile(metrics=...)`; the benchmark compiles without metrics and computes the test AUC
# itself, so that import gets functions that refuse.
_stubs = {
    "requests": types.SimpleNamespace(get=_offline, codes=None),
    "sklearn.metrics": types.SimpleNamespace(
        **{f: _no_metrics for f in ("accuracy_score", "log_loss", "mean_squared_error", "roc_auc_score")}
    ),
}
_saved = {name: sys.modules.get(name) for name in _stubs}
sys.modules.update(_stubs)
import deepctr_torch.models as models  # noqa: E402
from deepctr_torch.inputs import DenseFeat, SparseFeat  # noqa: E402

for _name, _module in _saved.items():
    if _module is not None:
        sys.modules[_name] = _module
    else:
        del sys.modules[_name]

MODELS = {"deepfm": "DeepFM", "dcn": "DCN", "autoint": "AutoInt", "xdeepfm": "xDeepFM"}


class Table(nn.Module):
    """A field's table as DeepCTR calls it (`[B, 1]` ids -> `[B, 1, d]`), optionally MLET's
    factorised one, optionally recording the L2 norm of the rows it looked up."""

    def __init__(self, weight, sparse, projection=None, row_l2=False):
        super().__init__()
        self.table = nn.Embedding(weight.shape[0], weight.shape[1], sparse=sparse)
        with torch.no_grad():
            self.table.weight.copy_(weight)
        self.projection = projection
        self.row_l2 = row_l2
        self.penalty = None

    def forward(self, ids):
        out = self.table(ids)
        if self.row_l2 and self.training:
            # mlet's penalty: every distinct row the batch looked up, once (and the projection)
            rows = self.table(torch.unique(ids))
            self.penalty = rows.square().sum()
            if self.projection is not None:
                self.penalty = self.penalty + self.projection.square().sum()
        return out if self.projection is None else out @ self.projection


def build(kind, cache, w, embedding, variant):
    sparse = [
        SparseFeat(f"C{i + 1}", n, embedding_dim=w["dim"])
        for i, n in enumerate(cache.cardinalities)
    ]
    dense = [DenseFeat(f"I{j + 1}", 1) for j in range(cache.num_dense)]
    columns = sparse + dense
    # the constructor seeds torch itself (DeepCTR's default seed is 1024)
    model = getattr(models, MODELS[kind])(columns, columns, device="cpu", seed=w["seed"])
    # DeepCTR's BaseModel registers the tables' L2 first, then the linear part's
    emb_entry, linear_entry = model.regularization_weight[0], model.regularization_weight[1]
    mlet = embedding == "mlet"
    row_l2 = variant == "sparse"
    for name, old in list(model.embedding_dict.items()):
        if mlet:
            n = old.weight.shape[0]
            weight = torch.empty(n, w["k"]).normal_(0.0, 1e-4)  # DeepCTR's init_std
            projection = nn.Parameter(torch.randn(w["k"], w["dim"]) * w["init_std"])
        else:
            weight, projection = old.weight.detach(), None
        if mlet or variant == "sparse":
            model.embedding_dict[name] = Table(weight, variant == "sparse", projection, row_l2)
    if variant == "sparse":
        linear = model.linear_model.embedding_dict
        for name, old in list(linear.items()):
            linear[name] = Table(old.weight.detach(), True, None, row_l2)
        tables = [(emb_entry[2], model.embedding_dict), (linear_entry[2], linear)]
        model.regularization_weight = model.regularization_weight[2:]
        dense_l2 = model.get_regularization_loss

        def get_regularization_loss():
            total = dense_l2()
            for coefficient, modules in tables:
                for table in modules.values():
                    if coefficient > 0 and table.penalty is not None:
                        total = total + coefficient * table.penalty
            return total

        model.get_regularization_loss = get_regularization_loss
    elif mlet:
        # as shipped: the L2 over every parameter of the (now factorised) tables
        model.regularization_weight[0] = (list(model.embedding_dict.parameters()),) + emb_entry[1:]
    return model


def columns_of(split):
    """DeepCTR's input: one array per feature, sparse C1..CF first, then dense I1..Im."""
    return [split.cat[:, f] for f in range(split.cat.shape[1])] + [
        split.dense[:, j] for j in range(split.dense.shape[1])
    ]


def predict(model, split):
    """The model's probabilities on `split`, in batches of EVAL_BATCH rows: the forward of
    DeepCTR's `predict` on the same input matrix (ids, then dense values, as float32, as its
    `predict` and `fit` cast them), without its DataLoader, which indexes and stacks the rows one
    by one (seconds of every run that the benchmark does not measure)."""
    x = torch.from_numpy(np.concatenate([split.cat, split.dense], axis=1, dtype=np.float32))
    model.eval()
    with torch.no_grad():
        out = [model(x[i : i + EVAL_BATCH]).reshape(-1) for i in range(0, split.rows, EVAL_BATCH)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def main():
    args = common.arguments(__doc__, variants=["shipped", "sparse"])
    variant = args.variant
    common.setup(args.threads, args.workload["seed"])
    w = args.workload
    cache = Cache(args.cache)
    model = build(w["model"], cache, w, args.embedding, variant)
    model.compile(torch.optim.Adagrad(model.parameters(), lr=w["lr"]), "binary_crossentropy")
    x = columns_of(cache.train)
    y = np.asarray(cache.train.label)
    with Timer() as timer:
        model.fit(x, y, batch_size=w["batch_size"], epochs=1, verbose=0, shuffle=False)
    steps = (cache.train.rows + w["batch_size"] - 1) // w["batch_size"]
    probabilities = predict(model, cache.test)
    write_result(
        args.out,
        cache.train.rows,
        steps,
        timer.seconds,
        np.asarray(cache.test.label),
        probabilities,
    )


if __name__ == "__main__":
    main()
