"""DLRM as mlet configures it (src/models/dlrm.rs, src/layers/mlp.rs, src/layers/interaction.rs),
shared by the plain PyTorch and the TorchRec references, which differ only in their embeddings:

- bottom MLP num_dense -> bottom_mlp... -> d, ReLU after every layer (the last one too);
- dot interaction: the strictly lower triangle of the Gram matrix of [bottom output, F
  embeddings], concatenated after the bottom output (width d + (F+1)F/2);
- top MLP -> top_mlp... -> 1, ReLU between layers, a logit out;
- every Linear's weight ~ N(0, 2/(in+out)) and bias ~ N(0, 1/out), as DLRM's reference code
  and mlet initialise them; embedding tables Glorot uniform (the MLET paper's choice), MLET's
  projections N(0, sigma^2).
"""
import numpy as np
import torch
from torch import nn

from common import EVAL_BATCH, Timer, write_result


def mlp(widths, relu_last):
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.normal_(0.0, (2.0 / (fan_in + fan_out)) ** 0.5)
            linear.bias.normal_(0.0, (1.0 / fan_out) ** 0.5)
        layers.append(linear)
        if i < len(widths) - 2 or relu_last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseArch(nn.Module):
    """Everything of DLRM after the embedding lookups."""

    def __init__(self, num_dense, fields, dim, bottom_mlp, top_mlp):
        super().__init__()
        self.bottom = mlp([num_dense, *bottom_mlp, dim], relu_last=True)
        n = fields + 1
        lower = [i * n + j for i in range(n) for j in range(i)]
        self.register_buffer("lower", torch.tensor(lower, dtype=torch.int64))
        self.top = mlp([dim + n * fields // 2, *top_mlp, 1], relu_last=False)

    def forward(self, dense, emb):
        """dense [B, m], emb [B, F, d] -> logits [B]."""
        x = self.bottom(dense)
        all_ = torch.cat([x.unsqueeze(1), emb], 1)
        gram = torch.bmm(all_, all_.transpose(1, 2)).flatten(1)
        z = torch.cat([x, gram.index_select(1, self.lower)], 1)
        return self.top(z).squeeze(1)


def project(emb, projection):
    """MLET: [B, F, k] wide rows times each field's [k, d] projection."""
    return torch.einsum("bfk,fkd->bfd", emb, projection)


def batches(split, batch_size):
    """(dense, cat int64, label) tensors of consecutive rows: every tool reads the rows in
    file order, without shuffling, so all of them train on the same batches."""
    for start in range(0, split.rows, batch_size):
        end = min(start + batch_size, split.rows)
        yield (
            torch.from_numpy(np.ascontiguousarray(split.dense[start:end])),
            torch.from_numpy(split.cat[start:end].astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(split.label[start:end])),
        )


def train_and_evaluate(cache, batch_size, out, step, predict, eval_batch=EVAL_BATCH):
    """Runs `step(dense, cat, label)` over the training rows (timed), then `predict(dense, cat)`
    (logits) over the test rows, and writes the result file."""
    steps = samples = 0
    with Timer() as timer:
        for dense, cat, label in batches(cache.train, batch_size):
            step(dense, cat, label)
            steps += 1
            samples += len(label)
    probabilities = []
    with torch.no_grad():
        for dense, cat, _ in batches(cache.test, eval_batch):
            probabilities.append(torch.sigmoid(predict(dense, cat)).numpy())
    probabilities = np.concatenate(probabilities) if probabilities else np.zeros(0)
    write_result(out, samples, steps, timer.seconds, np.asarray(cache.test.label), probabilities)
