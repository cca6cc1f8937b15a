"""Reference (b): the same DLRM (dlrm_model.DenseArch) on TorchRec 1.9.2 with FBGEMM's fused CPU
embeddings, as TorchRec's own examples train it: an `EmbeddingBagCollection` (one table per
field) created on the meta device, SGD applied inside the backward pass
(`apply_optimizer_in_backward`), the whole model wrapped in `DistributedModelParallel` over a
world-size-1 gloo process group, which shards the tables onto FBGEMM's table-batched embedding
kernel with the optimizer fused into it; the dense parameters get a plain SGD
(`KeyedOptimizerWrapper`), averaged BCE with logits. Ids go in as a `KeyedJaggedTensor` with one
id per field and example. With `--embedding mlet` the tables are `n x k` and each field's bag is
multiplied by its `k x d` projection (a dense parameter).

Runs in its own venv (`.venv-torchrec`: torch 2.14, fbgemm-gpu-cpu 1.9.0, torchrec 1.9.2).

    python torchrec_dlrm.py --cache DIR --workload JSON --embedding single|mlet --threads N --out R.json
    python torchrec_dlrm.py --self-check     # the installation check (see self_check)
"""
import os
import socket
import sys

import torch
import torch.distributed as dist
from torch import nn

import common
from common import Cache
from dlrm_model import DenseArch, project, train_and_evaluate

from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter


class TorchRecDlrm(nn.Module):
    def __init__(self, cardinalities, width, dim, projection_std, dense_arch):
        super().__init__()
        self.keys = [f"f{i}" for i in range(len(cardinalities))]
        tables = [
            EmbeddingBagConfig(
                name=f"t{i}",
                embedding_dim=width,
                num_embeddings=n,
                feature_names=[key],
                # Glorot uniform, as the other tools (the fused kernel draws U(min, max))
                weight_init_min=-((6.0 / (n + width)) ** 0.5),
                weight_init_max=(6.0 / (n + width)) ** 0.5,
            )
            for i, (n, key) in enumerate(zip(cardinalities, self.keys))
        ]
        self.ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
        self.projection = (
            common.mlet_projection(len(cardinalities), width, dim, projection_std)
            if projection_std is not None
            else None
        )
        self.fields, self.width = len(cardinalities), width
        self.dense_arch = dense_arch

    def forward(self, dense, ids):
        emb = self.ebc(ids).values().view(-1, self.fields, self.width)
        if self.projection is not None:
            emb = project(emb, self.projection)
        return self.dense_arch(dense, emb)


def jagged(keys, cat):
    """`[B, F]` ids -> a KeyedJaggedTensor (key-major values, one id per example and field)."""
    return KeyedJaggedTensor(
        keys=keys,
        values=cat.t().contiguous().view(-1),
        lengths=torch.ones(cat.numel(), dtype=torch.int32),
    )


def shard(model, lr, batch_size):
    """SGD in the tables' backward, every table on FBGEMM's fused kernel (left alone, the planner
    keeps small tables data-parallel with a dense kernel), DMP over the world-size-1 group.
    Returns the sharded model, the dense parameters' optimizer and the compute kernels used."""
    apply_optimizer_in_backward(torch.optim.SGD, model.ebc.parameters(), {"lr": lr})
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=1, compute_device="cpu"),
        batch_size=batch_size,
        constraints={
            table.name: ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
            for table in model.ebc.embedding_bag_configs()
        },
    )
    model = DistributedModelParallel(
        module=model,
        device=torch.device("cpu"),
        env=ShardingEnv.from_process_group(dist.group.WORLD),
        plan=planner.collective_plan(model, pg=dist.group.WORLD),
    )
    kernels = sorted({s.compute_kernel for p in model.plan.plan.values() for s in p.values()})
    dense_optimizer = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(model.named_parameters())),
        lambda params: torch.optim.SGD(params, lr=lr),
    )
    return model, dense_optimizer, kernels


def tables(model):
    """The sharded tables' weights (world size 1: each table is one local shard)."""
    out = {}
    for name, value in model.state_dict().items():
        if ".ebc." in f".{name}" and name.endswith(".weight"):
            shards = value.local_shards() if hasattr(value, "local_shards") else None
            out[name] = (shards[0].tensor if shards else value).detach().clone()
    return out


def self_check():
    """The installation check of `make bench-compare`: TorchRec imports, shards onto FBGEMM's
    fused CPU kernel, and one step's SGD (run inside backward) moves exactly the table rows the
    batch looked up, by lr times their gradient."""
    torch.manual_seed(0)
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{free_port()}")
    cardinalities, dim, lr = [10, 7], 4, 0.5
    dense_arch = DenseArch(3, len(cardinalities), dim, [8], [8])
    model, dense_optimizer, kernels = shard(
        TorchRecDlrm(cardinalities, dim, dim, None, dense_arch), lr, 2
    )
    assert kernels == ["fused"], f"expected FBGEMM's fused kernel for every table, got {kernels}"
    before = tables(model)
    assert len(before) == 2, f"expected 2 tables, found {sorted(before)}"
    keys = ["f0", "f1"]
    cat = torch.tensor([[1, 2], [3, 2]])
    dense = torch.rand(2, 3)
    # the expected update: the gradient of the looked-up rows, from a plain copy of the model
    emb = {n: w.clone().requires_grad_(True) for n, w in before.items()}
    names = sorted(emb, key=lambda n: int(n.split(".t")[-1].split(".")[0]))
    rows = torch.stack([emb[names[f]][cat[:, f]] for f in range(2)], 1)
    reference_arch = DenseArch(3, len(cardinalities), dim, [8], [8])
    reference_arch.load_state_dict({k.split("dense_arch.", 1)[1]: v for k, v in model.state_dict().items() if "dense_arch." in k})
    loss_fn = nn.BCEWithLogitsLoss()
    label = torch.tensor([1.0, 0.0])
    loss_fn(reference_arch(dense, rows), label).backward()
    dense_optimizer.zero_grad()
    loss_fn(model(dense, jagged(keys, cat)), label).backward()
    dense_optimizer.step()
    after = tables(model)
    for f, name in enumerate(names):
        expected = before[name] - lr * emb[name].grad
        if not torch.allclose(after[name], expected, atol=1e-6):
            raise SystemExit(f"{name}: FBGEMM's fused SGD did not apply lr x gradient to the looked-up rows")
        untouched = [r for r in range(before[name].shape[0]) if r not in cat[:, f].tolist()]
        assert torch.equal(after[name][untouched], before[name][untouched]), name
    dist.destroy_process_group()
    print("torchrec self-check: imports, FBGEMM fused CPU kernel, fused SGD update: ok")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if sys.argv[1:] == ["--self-check"]:
        return self_check()
    args = common.arguments(__doc__)
    common.setup(args.threads, args.workload["seed"])
    w = args.workload
    cache = Cache(args.cache)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    mlet = args.embedding == "mlet"
    width = w["k"] if mlet else w["dim"]
    dense_arch = DenseArch(
        cache.num_dense, len(cache.cardinalities), w["dim"], w["bottom_mlp"], w["top_mlp"]
    )
    model = TorchRecDlrm(
        cache.cardinalities, width, w["dim"], w["init_std"] if mlet else None, dense_arch
    )
    model, dense_optimizer, kernels = shard(model, w["lr"], w["batch_size"])
    loss_fn = nn.BCEWithLogitsLoss()
    keys = [f"f{i}" for i in range(len(cache.cardinalities))]

    def step(dense, cat, label):
        dense_optimizer.zero_grad()
        loss = loss_fn(model(dense, jagged(keys, cat)), label)
        loss.backward()  # the tables' SGD runs inside this, in FBGEMM's kernel
        dense_optimizer.step()

    def predict(dense, cat):
        return model(dense, jagged(keys, cat))

    model.train()
    train_and_evaluate(cache, w["batch_size"], args.out, step, predict)
    dist.destroy_process_group()
    print("compute kernels:", ", ".join(kernels))


if __name__ == "__main__":
    main()
