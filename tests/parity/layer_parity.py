"""Runs one reference layer (FuxiCTR 2.3.10 or DeepCTR-Torch 0.3.0) on weights and inputs
written by the Rust layer-parity tests (tests/parity_layers.rs).

    python layer_parity.py SPECS.json
    python layer_parity.py --check-imports     (what `make` runs after installing FuxiCTR)

SPECS.json: a list of cases (one process for many: importing torch takes seconds), each
{"layer": a name handled in `build` below, "kwargs": {...} (the reference constructor's
arguments), "weights": "w.npz" or null (our state_dict: arrays under our names), "inputs":
"x.npz" (arrays `x` and, for two-input layers, `y`), "train": false, "output": "out.npz"}.

Our names are mapped onto the reference's explicitly per layer; MLP stacks are matched module
by module in order (Linear to Linear, BatchNorm1d to BatchNorm1d), since our indices follow
pytorch-fm's Sequential (a Dropout module always present) and FuxiCTR's leave out absent
modules. Loading is strict: every reference parameter and buffer must be given (except batch
norm's `num_batches_tracked`, which tch does not keep and torch ignores with momentum 0.1) with
its exact shape, and every array we wrote must be used. Writes `out` (and `out2` for two-output
layers) and, in training mode, the layer's batch-norm running statistics after the forward pass
under our names.

FuxiCTR's layer modules import its data pipeline's tokenizer (for pretrained embeddings), which
imports polars, ray and h5py, and FinalMLP.py imports its BaseModel (training loop: polars,
scikit-learn): neither is used by the layers compared here, so both are stubbed instead of
installing those packages.
"""
import importlib.util
import json
import os
import re
import sys
import types

import numpy as np
import torch
from torch import nn

FUXICTR_VERSION = "2.3.10"
FINALMLP_PY = os.path.join(sys.prefix, "fuxictr-src", "model_zoo", "LongCTR", "FinalMLP", "FinalMLP.py")


def import_fuxictr():
    """fuxictr.pytorch.layers and FinalMLP.py's module, with the data pipeline stubbed."""
    if "fuxictr.preprocess" not in sys.modules:
        preprocess = types.ModuleType("fuxictr.preprocess")
        tokenizer = types.ModuleType("fuxictr.preprocess.tokenizer")

        def load_pretrain_emb(*args, **kwargs):
            raise RuntimeError("stubbed by layer_parity.py")

        tokenizer.load_pretrain_emb = load_pretrain_emb
        preprocess.tokenizer = tokenizer
        sys.modules["fuxictr.preprocess"] = preprocess
        sys.modules["fuxictr.preprocess.tokenizer"] = tokenizer
        models = types.ModuleType("fuxictr.pytorch.models")
        models.BaseModel = nn.Module
        sys.modules["fuxictr.pytorch.models"] = models
    import fuxictr
    import fuxictr.pytorch.layers as layers

    assert fuxictr.__version__ == FUXICTR_VERSION, fuxictr.__version__
    spec = importlib.util.spec_from_file_location("fuxictr_finalmlp", FINALMLP_PY)
    finalmlp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(finalmlp)
    return layers, finalmlp


def mlp_groups(ours, prefix):
    """Our `{prefix}mlp.{k}.{param}` arrays grouped by k, in increasing k."""
    groups = {}
    pattern = re.compile(re.escape(prefix) + r"mlp\.(\d+)\.(\w+)$")
    for name in ours:
        m = pattern.match(name)
        if m:
            groups.setdefault(int(m.group(1)), {})[m.group(2)] = name
    return [groups[k] for k in sorted(groups)]


def map_mlp(ours, our_prefix, sequential, ref_prefix):
    """{reference name: our name} for an MLP stack, module by module in order."""
    modules = [(i, m) for i, m in enumerate(sequential) if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    groups = mlp_groups(ours, our_prefix)
    if len(groups) != len(modules):
        sys.exit(f"{our_prefix}: {len(groups)} modules of ours, {len(modules)} in the reference")
    mapping = {}
    for group, (i, module) in zip(groups, modules):
        is_bn = "running_mean" in group
        if is_bn != isinstance(module, nn.BatchNorm1d):
            sys.exit(f"{our_prefix}: {sorted(group)} against reference {module}")
        for param, name in group.items():
            mapping[f"{ref_prefix}{i}.{param}"] = name
    return mapping


def build(layer, kwargs, ours):
    """(reference module, {reference name: our name}, forward(module, inputs) -> outputs)."""
    if layer == "deepctr.InnerProductLayer":
        from deepctr_torch.layers.interaction import InnerProductLayer

        def forward(m, x):
            fields = [x["x"][:, i : i + 1, :] for i in range(x["x"].shape[1])]
            return [torch.flatten(m(fields), start_dim=1)]

        return InnerProductLayer(**kwargs), {}, forward
    layers, finalmlp = import_fuxictr()
    if layer == "fuxictr.InnerProductInteraction":
        return layers.InnerProductInteraction(**kwargs), {}, lambda m, x: [m(x["x"])]
    if layer == "fuxictr.MLP_Block":
        m = layers.MLP_Block(**kwargs)
        return m, map_mlp(ours, "", m.mlp, "mlp."), lambda m, x: [m(x["x"])]
    if layer == "fuxictr.CrossNetV2":
        m = layers.CrossNetV2(**kwargs)
        mapping = {}
        for l in range(kwargs["num_layers"]):
            mapping[f"cross_layers.{l}.weight"] = f"W.{l}"
            mapping[f"cross_layers.{l}.bias"] = f"b.{l}"
        return m, mapping, lambda m, x: [m(x["x"])]
    if layer == "fuxictr.FeatureSelection":
        m = finalmlp.FeatureSelection(None, **kwargs)
        mapping = {}
        for s in (1, 2):
            mapping[f"fs{s}_ctx_bias"] = f"fs{s}_ctx_bias"
            gate = getattr(m, f"fs{s}_gate")
            mapping.update(map_mlp(ours, f"fs{s}_gate.", gate.mlp, f"fs{s}_gate.mlp."))
        return m, mapping, lambda m, x: list(m(None, x["x"]))
    if layer == "fuxictr.InteractionAggregation":
        m = finalmlp.InteractionAggregation(**kwargs)
        mapping = {n: n for n in ["w_x.weight", "w_x.bias", "w_y.weight", "w_y.bias", "w_xy"]}
        return m, mapping, lambda m, x: [m(x["x"], x["y"])]
    sys.exit(f"unknown layer {layer}")


def load(module, mapping, ours):
    expected = module.state_dict()
    skip = {n for n in expected if n.endswith("num_batches_tracked") or n == "triu_mask"}
    missing = set(expected) - skip - set(mapping)
    unknown = set(mapping) - set(expected)
    unused = set(ours) - set(mapping.values())
    if missing or unknown or unused:
        sys.exit(f"reference names not given: {sorted(missing)}; not in the reference: {sorted(unknown)}; "
                 f"ours unused: {sorted(unused)}")
    state = {}
    for ref, name in mapping.items():
        value = torch.from_numpy(np.array(ours[name]))
        if tuple(value.shape) != tuple(expected[ref].shape):
            sys.exit(f"{name} -> {ref}: shape {tuple(value.shape)}, reference {tuple(expected[ref].shape)}")
        state[ref] = value.to(expected[ref].dtype)
    module.load_state_dict(state, strict=False)


def run(spec):
    ours = {}
    if spec.get("weights") is not None:
        weights = np.load(spec["weights"])
        ours = {name: weights[name] for name in weights.files}
    module, mapping, forward = build(spec["layer"], spec.get("kwargs", {}), ours)
    load(module, mapping, ours)
    train = spec.get("train", False)
    module.train(train)
    inputs = np.load(spec["inputs"])
    x = {name: torch.from_numpy(np.array(inputs[name])) for name in inputs.files}
    with torch.no_grad():
        outputs = forward(module, x)
    arrays = {("out" if i == 0 else f"out{i + 1}"): y.numpy() for i, y in enumerate(outputs)}
    if train:
        state = module.state_dict()
        for ref, name in mapping.items():
            if ref.endswith(("running_mean", "running_var")):
                arrays[name] = state[ref].numpy()
    np.savez(spec["output"], **arrays)


def main(specs_path):
    with open(specs_path) as f:
        for spec in json.load(f):
            run(spec)


if __name__ == "__main__":
    if sys.argv[1:] == ["--check-imports"]:
        layers, finalmlp = import_fuxictr()
        for name in ["MLP_Block", "CrossNetV2", "InnerProductInteraction"]:
            getattr(layers, name)
        for name in ["FeatureSelection", "InteractionAggregation"]:
            getattr(finalmlp, name)
    else:
        main(sys.argv[1])
