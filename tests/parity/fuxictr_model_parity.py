"""Runs FuxiCTR 2.3.10's DCNv2 and FinalMLP models on the weights and batches of the Rust
multi-embedding parity tests (tests/parity_multi_embedding.rs).

    python fuxictr_model_parity.py SPECS.json

SPECS.json: a list of cases (one process for all: importing torch takes seconds), each
{"model": "DCNv2" | "FinalMLP", "kwargs": {...} (the model's constructor arguments besides the
feature map and BaseModel's bookkeeping), "cardinalities": [n_1, ..., n_F], "dim": d,
"weights": "w.npz" (our VarStore variables under our names, `net.*`, plus the collapsed tables
as `embedding_dict.C{i}.weight`), "inputs": "x.npz" (`cat` [B, F] int64), "feature_selection":
bool (FinalMLP only, see below), "output": "y.npy"}.

The models are the files of FuxiCTR's sdist (`model_zoo/LongCTR/{DCNv2,FinalMLP}/*.py`, read
from the tarball the Makefile downloads into the venv), built by their own constructors on a real
`fuxictr.features.FeatureMap` of F categorical fields (no numeric fields: FuxiCTR embeds a
number with a Linear(1, d), we concatenate it raw, so the tests have no dense features), with
FuxiCTR's real BaseModel (its metrics module, which imports polars, and the tokenizer, which
imports polars, ray and h5py, are stubbed: neither runs). Loading is strict: every parameter and
buffer of the model (except batch norm's `num_batches_tracked`) is given from ours with its exact
shape, and every array we wrote is used.

The forward pass is the model's `forward` from the embedding on. Its sequence-feature branch
(`item_dict`, `mask`) cannot run without item features (it views the item embeddings as
[B, -1, 0]) and contributes nothing to a model without them, so it is left out: the flattened
embedding of the F fields goes through the model's own modules exactly as `forward` composes
them (checked against the installed source below). One deviation, on purpose: FuxiCTR 2.3.10's
LongCTR `FinalMLP.forward` never calls its `fs_module` (`feat1, feat2 = flat_emb, flat_emb`
whatever `use_fs` says), whereas FinalMLP's feature selection, and FuxiCTR's other FinalMLP
versions, apply `feat1, feat2 = self.fs_module(X, flat_emb)` when `use_fs`; with
`"feature_selection": true` the gates are applied that way, with the model's own `fs_module`.
"""
import json
import os
import sys
import tarfile
import tempfile
import types
from collections import OrderedDict

os.environ.setdefault("TQDM_DISABLE", "1")
import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layer_parity import FUXICTR_VERSION, mlp_groups  # noqa: E402

SDIST = os.path.join(sys.prefix, "fuxictr-src", f"fuxictr-{FUXICTR_VERSION}.tar.gz")


def stub_pipeline():
    """Stubs the two FuxiCTR modules that import the data pipeline's heavy dependencies."""
    if "fuxictr.preprocess" in sys.modules:
        return
    preprocess = types.ModuleType("fuxictr.preprocess")
    tokenizer = types.ModuleType("fuxictr.preprocess.tokenizer")

    def unavailable(*args, **kwargs):
        raise RuntimeError("stubbed by fuxictr_model_parity.py")

    tokenizer.load_pretrain_emb = unavailable
    preprocess.tokenizer = tokenizer
    sys.modules["fuxictr.preprocess"] = preprocess
    sys.modules["fuxictr.preprocess.tokenizer"] = tokenizer
    metrics = types.ModuleType("fuxictr.metrics")
    metrics.evaluate_metrics = unavailable
    sys.modules["fuxictr.metrics"] = metrics


def model_class(name):
    stub_pipeline()
    import fuxictr

    assert fuxictr.__version__ == FUXICTR_VERSION, fuxictr.__version__
    member = f"fuxictr-{FUXICTR_VERSION}/model_zoo/LongCTR/{name}/{name}.py"
    with tarfile.open(SDIST) as tar:
        source = tar.extractfile(member).read().decode()
    module = types.ModuleType(f"fuxictr_{name.lower()}")
    module.__file__ = member
    exec(compile(source, member, "exec"), module.__dict__)
    cls = getattr(module, name)
    cls._parity_source = source
    return cls


def feature_map(cardinalities, dim, data_dir):
    from fuxictr.features import FeatureMap

    spec = {
        "dataset_id": "parity",
        "labels": ["label"],
        "features": [
            {f"C{i + 1}": {"source": "", "type": "categorical", "vocab_size": n}}
            for i, n in enumerate(cardinalities)
        ],
    }
    path = os.path.join(data_dir, "feature_map.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    fm = FeatureMap("parity", data_dir)
    fm.load(path, {"embedding_dim": dim})
    assert fm.sum_emb_out_dim() == len(cardinalities) * dim
    return fm


def require_source(cls, *lines):
    """The forward we compose must be the sdist's: its lines we copy must be there."""
    source = cls._parity_source
    forward = source[source.index("def forward(self, inputs)"):]
    forward = forward[: forward.index("def get_inputs")]
    for line in lines:
        if line not in forward:
            sys.exit(f"{cls.__name__}.forward no longer contains `{line}`")


def map_stack(ours, our_prefixes, sequential, ref_prefix, tail=None):
    """{reference name: our name} for an MLP stack spread over our blocks `our_prefixes` (their
    `mlp.{k}` groups in order), module by module; with `tail`, our last Linear is `tail`."""
    groups = [g for p in our_prefixes for g in mlp_groups(ours, p)]
    mapping = {}
    if tail is not None:
        last = groups.pop()
        if "running_mean" in last:
            sys.exit(f"{our_prefixes}: the last module is a batch norm, not the output layer")
        for param, name in last.items():
            mapping[f"{tail}.{param}"] = name
    modules = [(i, m) for i, m in enumerate(sequential) if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    if len(groups) != len(modules):
        sys.exit(f"{our_prefixes}: {len(groups)} modules of ours, {len(modules)} in the reference")
    for group, (i, module) in zip(groups, modules):
        if ("running_mean" in group) != isinstance(module, nn.BatchNorm1d):
            sys.exit(f"{our_prefixes}: {sorted(group)} against reference {module}")
        for param, name in group.items():
            mapping[f"{ref_prefix}{i}.{param}"] = name
    return mapping


def build(spec, ours, data_dir):
    """(model, {reference name: our name}, forward(model, X) -> probabilities [B, 1])."""
    name = spec["model"]
    cls = model_class(name)
    fm = feature_map(spec["cardinalities"], spec["dim"], data_dir)
    bookkeeping = dict(optimizer="adam", loss="binary_crossentropy", verbose=0,
                       model_root=data_dir, metrics=["logloss"], gpu=-1)
    model = cls(fm, embedding_dim=spec["dim"], **spec["kwargs"], **bookkeeping)
    mapping = {}
    for i in range(len(spec["cardinalities"])):
        mapping[f"embedding_layer.embedding_layer.embedding_layers.C{i + 1}.weight"] = \
            f"embedding_dict.C{i + 1}.weight"

    def flat_emb(model, X):
        # forward's `emb_list`: the batch features' embedding; the item branch is empty here
        assert model.item_info_dim == 0
        return torch.cat([model.embedding_layer(X, flatten_emb=True)], dim=-1)

    if name == "DCNv2":
        assert spec["kwargs"]["model_structure"] == "stacked"
        require_source(cls, "cross_out = self.crossnet(feature_emb)",
                       "final_out = self.stacked_dnn(cross_out)",
                       "y_pred = self.fc(final_out)",
                       "y_pred = self.output_activation(y_pred)")
        for l in range(spec["kwargs"]["num_cross_layers"]):
            mapping[f"crossnet.cross_layers.{l}.weight"] = f"net.set0.cross.W.{l}"
            mapping[f"crossnet.cross_layers.{l}.bias"] = f"net.set0.cross.b.{l}"
        mapping.update(map_stack(ours, ["net.set0.first.", "net.rest."], model.stacked_dnn.mlp,
                                 "stacked_dnn.mlp.", tail="fc"))

        def forward(model, X):
            feature_emb = flat_emb(model, X)
            cross_out = model.crossnet(feature_emb)
            final_out = model.stacked_dnn(cross_out)
            return model.output_activation(model.fc(final_out))

        return model, mapping, forward
    if name == "FinalMLP":
        require_source(cls, "y_pred = self.fusion_module(self.mlp1(feat1), self.mlp2(feat2))",
                       "y_pred = self.output_activation(y_pred)")
        use_fs = spec["feature_selection"]
        assert use_fs == spec["kwargs"]["use_fs"]
        for s in (1, 2):
            mapping.update(map_stack(ours, [f"net.set0.stream{s}."], getattr(model, f"mlp{s}").mlp,
                                     f"mlp{s}.mlp."))
            if use_fs:
                mapping[f"fs_module.fs{s}_ctx_bias"] = f"net.set0.fs.fs{s}_ctx_bias"
                gate = getattr(model.fs_module, f"fs{s}_gate")
                mapping.update(map_stack(ours, [f"net.set0.fs.fs{s}_gate."], gate.mlp,
                                         f"fs_module.fs{s}_gate.mlp."))
        for p in ["w_x.weight", "w_x.bias", "w_y.weight", "w_y.bias", "w_xy"]:
            mapping[f"fusion_module.{p}"] = f"net.fusion.{p}"

        def forward(model, X):
            flat = flat_emb(model, X)
            if use_fs:
                feat1, feat2 = model.fs_module(X, flat)
            else:
                feat1, feat2 = flat, flat
            y_pred = model.fusion_module(model.mlp1(feat1), model.mlp2(feat2))
            return model.output_activation(y_pred)

        return model, mapping, forward
    sys.exit(f"unknown model {name}")


def load(model, mapping, ours):
    expected = model.state_dict()
    skip = {n for n in expected if n.endswith("num_batches_tracked")}
    missing = set(expected) - skip - set(mapping)
    unknown = set(mapping) - set(expected)
    unused = set(ours) - set(mapping.values())
    if missing or unknown or unused:
        sys.exit(f"reference names not given: {sorted(missing)}; not in the reference: "
                 f"{sorted(unknown)}; ours unused: {sorted(unused)}")
    state = {}
    for ref, name in mapping.items():
        value = torch.from_numpy(np.array(ours[name]))
        if tuple(value.shape) != tuple(expected[ref].shape):
            sys.exit(f"{name} -> {ref}: shape {tuple(value.shape)}, reference "
                     f"{tuple(expected[ref].shape)}")
        state[ref] = value.to(expected[ref].dtype)
    model.load_state_dict(state, strict=False)


def run(spec):
    weights = np.load(spec["weights"])
    ours = {name: weights[name] for name in weights.files}
    with tempfile.TemporaryDirectory() as data_dir:
        model, mapping, forward = build(spec, ours, data_dir)
    load(model, mapping, ours)
    model.eval()
    cat = torch.from_numpy(np.load(spec["inputs"])["cat"])
    X = OrderedDict((f"C{i + 1}", cat[:, i]) for i in range(cat.shape[1]))
    with torch.no_grad():
        y = forward(model, X)
    np.save(spec["output"], y.reshape(-1).numpy().astype(np.float32))


def main(specs_path):
    with open(specs_path) as f:
        for spec in json.load(f):
            run(spec)


if __name__ == "__main__":
    main(sys.argv[1])
