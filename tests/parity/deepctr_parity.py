"""Runs a DeepCTR-Torch 0.3.0 model on weights and a batch written by the Rust tests.

    python deepctr_parity.py SPEC.json

SPEC.json: {"model": "WDL" (a class of deepctr_torch.models), "kwargs": {...} (constructor
arguments besides the feature columns), "cardinalities": [n_1, ..., n_F], "dim": d,
"num_dense": m, "weights": "w.npz" (arrays named as the model's state_dict keys),
"inputs": "x.npz" (arrays `cat` [B, F] int64 and `dense` [B, m] float32), "output": "y.npy"}.

Features are declared sparse first (C1..CF, embedding_dim d) then dense (I1..Im), and both
lists serve as linear and DNN feature columns, so the input matrix is [cat, dense]. The weights
must cover the state_dict exactly (strict loading), so a Rust model that forgets or invents a
parameter fails here. Writes the model's click probabilities in eval mode to "output".
"""
import json
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")
import numpy as np
import torch

import deepctr_torch.models as models
from deepctr_torch.inputs import DenseFeat, SparseFeat


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    sparse = [
        SparseFeat(f"C{i + 1}", n, embedding_dim=spec["dim"])
        for i, n in enumerate(spec["cardinalities"])
    ]
    dense = [DenseFeat(f"I{j + 1}", 1) for j in range(spec["num_dense"])]
    columns = sparse + dense
    # PNN takes DNN columns only; the others linear and DNN columns
    args = (columns,) if spec["model"] == "PNN" else (columns, columns)
    model = getattr(models, spec["model"])(*args, device="cpu", **spec.get("kwargs", {}))
    weights = np.load(spec["weights"])
    state = {name: torch.from_numpy(np.array(weights[name])) for name in weights.files}
    expected = model.state_dict()
    for name, value in state.items():
        if name in expected and tuple(expected[name].shape) != tuple(value.shape):
            sys.exit(f"{name}: shape {tuple(value.shape)}, DeepCTR-Torch expects {tuple(expected[name].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()}, strict=True)
    model.eval()
    inputs = np.load(spec["inputs"])
    x = torch.cat(
        [torch.from_numpy(inputs["cat"]).double(), torch.from_numpy(inputs["dense"]).double()], dim=1
    ).float()
    with torch.no_grad():
        y = model(x).reshape(-1).numpy().astype(np.float32)
    np.save(spec["output"], y)


if __name__ == "__main__":
    main(sys.argv[1])
