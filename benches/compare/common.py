"""What every reference implementation of the comparative benchmark shares: reading mlet's
dataset cache (the same rows and vocabularies mlet trains on), the test AUC and LogLoss, the
timed training loop's result file, and MLET's embedding definition.

Stdlib, numpy and torch only, so that it runs in both the torch venv and the TorchRec venv.
The cache layout is documented in docs/data.md ("Cache format"): per split, headerless
little-endian row-major arrays `dense.f32` [rows, num_dense], `cat.u32` [rows, F] (field-local
indices, 0 = out of vocabulary) and `label.f32` [rows]; `meta.json` holds the row counts and
cardinalities.
"""
import argparse
import json
import os
import time

import numpy as np


# Rows per evaluation batch, for every tool (mlet's `eval.batch_size` in the runner's configs):
# small enough that xDeepFM's CIN intermediate ([B, F*H, d]) stays a few hundred MB.
EVAL_BATCH = 1024


class Split:
    """One split of a cache, memory-mapped as mlet maps it."""

    def __init__(self, cache, name, meta):
        rows = meta["rows"][name]
        m, f = meta["num_dense"], len(meta["cardinalities"])
        path = os.path.join(cache, name)
        self.rows = rows
        self.dense = _map(os.path.join(path, "dense.f32"), np.float32, (rows, m))
        self.cat = _map(os.path.join(path, "cat.u32"), np.uint32, (rows, f))
        self.label = _map(os.path.join(path, "label.f32"), np.float32, (rows,))


def _map(path, dtype, shape):
    if shape[0] == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


class Cache:
    def __init__(self, path):
        with open(os.path.join(path, "meta.json")) as f:
            self.meta = json.load(f)
        self.cardinalities = self.meta["cardinalities"]
        self.num_dense = self.meta["num_dense"]
        self.train = Split(path, "train", self.meta)
        self.test = Split(path, "test", self.meta)


def auc(labels, scores):
    """ROC AUC with ties counted half (the Mann-Whitney statistic), as mlet computes it."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    # average rank of each group of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s))
    for a, b in zip(starts, ends):
        ranks[a:b] = (a + b + 1) / 2.0
    pos = labels[order] > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels, probabilities):
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def arguments(description, variants=None):
    """The command line every reference takes: the runner passes the workload as JSON;
    `variants`, when given, are the choices of a required `--variant`."""
    parser = argparse.ArgumentParser(description=description)
    if variants:
        parser.add_argument("--variant", choices=variants, required=True)
    parser.add_argument("--cache", required=True, help="mlet dataset cache (the workload's rows)")
    parser.add_argument("--workload", required=True, help="workload as JSON (see run.py)")
    parser.add_argument("--embedding", choices=["single", "mlet"], required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--out", required=True, help="result JSON written here")
    args = parser.parse_args()
    args.workload = json.loads(args.workload)
    return args


def setup(threads, seed):
    """The thread count and the seed of every random draw (the runner passes the repeat's)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)


def write_result(path, samples, steps, train_seconds, labels, probabilities, **extra):
    """The result file the runner reads: training throughput (training loop wall time, data
    loading included, model construction and evaluation excluded, as mlet's
    `train.samples_per_s`) and the test metrics."""
    result = {
        "samples": samples,
        "steps": steps,
        "train_seconds": train_seconds,
        "samples_per_s": samples / max(train_seconds, 1e-9),
        "test_auc": auc(labels, probabilities),
        "test_logloss": logloss(labels, probabilities),
        "test_rows": int(len(labels)),
    }
    result.update(extra)
    with open(path, "w") as f:
        json.dump(result, f)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def mlet_projection(fields, k, d, std):
    """MLET's per-field `[k, d]` projections, N(0, std²) (src/embedding: `init_std`)."""
    import torch

    return torch.nn.Parameter(torch.randn(fields, k, d) * std)


def xavier_(weight):
    """Glorot uniform over one field's `[n, width]` table, bound sqrt(6 / (n + width)), as
    mlet's `table_init: xavier` (src/embedding/init.rs)."""
    import torch

    n, width = weight.shape
    bound = (6.0 / (n + width)) ** 0.5
    with torch.no_grad():
        weight.uniform_(-bound, bound)
