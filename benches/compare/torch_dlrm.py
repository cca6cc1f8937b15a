"""Reference (a): DLRM in plain PyTorch as the DLRM paper's code trains it: one sparse
`nn.EmbeddingBag` per field (sum pooling of one id), `torch.optim.SGD` over all parameters (the
tables' gradients are sparse, so SGD updates only the rows a batch touched), BCE with logits
averaged over the batch. With `--embedding mlet` each field's table is `n x k` and its bag is
multiplied by the field's `k x d` projection (as DLRM's `PrEmbeddingBag` does).

    python torch_dlrm.py --cache DIR --workload JSON --embedding single|mlet --threads N --out R.json
"""
import torch
from torch import nn

import common
from common import Cache
from dlrm_model import DenseArch, project, train_and_evaluate


class PlainEmbeddings(nn.Module):
    def __init__(self, cardinalities, width, dim, projection_std):
        super().__init__()
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(n, width, mode="sum", sparse=True) for n in cardinalities
        )
        for bag in self.bags:
            common.xavier_(bag.weight)
        self.projection = (
            common.mlet_projection(len(cardinalities), width, dim, projection_std)
            if projection_std is not None
            else None
        )

    def forward(self, cat):
        emb = torch.stack([bag(cat[:, f : f + 1]) for f, bag in enumerate(self.bags)], 1)
        return emb if self.projection is None else project(emb, self.projection)


def main():
    args = common.arguments(__doc__)
    common.setup(args.threads, args.workload["seed"])
    w = args.workload
    cache = Cache(args.cache)
    mlet = args.embedding == "mlet"
    width = w["k"] if mlet else w["dim"]
    embeddings = PlainEmbeddings(
        cache.cardinalities, width, w["dim"], w["init_std"] if mlet else None
    )
    dense_arch = DenseArch(
        cache.num_dense, len(cache.cardinalities), w["dim"], w["bottom_mlp"], w["top_mlp"]
    )
    params = list(embeddings.parameters()) + list(dense_arch.parameters())
    optimizer = torch.optim.SGD(params, lr=w["lr"])
    loss_fn = nn.BCEWithLogitsLoss()

    def step(dense, cat, label):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(dense_arch(dense, embeddings(cat)), label)
        loss.backward()
        optimizer.step()

    def predict(dense, cat):
        return dense_arch(dense, embeddings(cat))

    train_and_evaluate(cache, w["batch_size"], args.out, step, predict)


if __name__ == "__main__":
    main()
