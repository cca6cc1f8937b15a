"""A dataset cache holding the first rows of another one's splits (stdlib only).

The comparative benchmark bounds each workload's work by training on the first N training rows
and testing on the first M test rows of one prepared cache. Cutting the cache itself (rather than
asking each tool to stop early) lets every tool, mlet included, read exactly those rows with its
ordinary data path. The arrays are row-major (docs/data.md, "Cache format"), so the first rows
are a byte prefix of each file; the vocabularies, cardinalities and training counts (`freq.u32`,
`vocab.json`) are the full cache's, so every table has the same size as on the whole data set.
"""
import json
import os
import shutil

SPLIT_FILES = {"dense.f32": "num_dense", "cat.u32": "fields", "label.f32": None}


def make_subset(cache, out, rows):
    """Writes into `out` a cache with `rows[split]` first rows of each split (`train`, `valid`,
    `test`) of `cache`, unless `out` already holds exactly that. Returns `out`."""
    with open(os.path.join(cache, "meta.json")) as f:
        meta = json.load(f)
    for split, n in rows.items():
        if n > meta["rows"][split]:
            raise SystemExit(
                f"{cache}: the {split} split has {meta['rows'][split]} rows, fewer than the "
                f"{n} the benchmark asks for; generate more rows (ROWS=) or ask for fewer"
            )
    meta["rows"] = dict(rows)
    meta["source"] = f"first rows of {meta['source']}"
    meta.pop("fingerprint", None)  # not the raw file's cache: a `cache:` section uses it as is
    marker = os.path.join(out, "meta.json")
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == meta:
                return out
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    widths = {"num_dense": meta["num_dense"], "fields": len(meta["cardinalities"])}
    for split, n in rows.items():
        os.makedirs(os.path.join(tmp, split))
        for name, width_key in SPLIT_FILES.items():
            size = n * (widths[width_key] if width_key else 1) * 4
            with open(os.path.join(cache, split, name), "rb") as src, open(
                os.path.join(tmp, split, name), "wb"
            ) as dst:
                dst.write(src.read(size))
    for name in ("freq.u32", "vocab.json"):
        if os.path.exists(os.path.join(cache, name)):
            shutil.copyfile(os.path.join(cache, name), os.path.join(tmp, name))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return out
