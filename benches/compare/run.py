"""The comparative benchmark (`make bench-compare`): mlet against PyTorch references on the same
rows, model configuration, batch size, optimizer, learning rate and thread count, one process at
a time, several repeats. See docs/benchmarks.md.

    python benches/compare/run.py [--rows N] [--repeats N] [--workloads a,b] [--tools a,b] ...

Writes OUT/results.csv (one row per tool x workload x embedding x repeat, then one `median` row
per tool x workload x embedding with the ratio mlet / tool) and OUT/compare_samples_per_s.png
(via `mlet plot --kind bench-compare`), and prints the table. Stdlib only (the references of
`--python` start from benches/compare/forkserver.py, see `Launcher`).
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time

from subset import make_subset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# The model settings of mlet's model families (src/config/experiment.rs `Family`,
# src/config/models.rs): DLRM as the MLET paper trains it, the DeepCTR-Torch models with
# DeepCTR-Torch 0.3.0's defaults and their tables initialised as DeepCTR does (N(0, 1e-4²)).
DLRM = {
    "model": "dlrm", "dim": 16, "k": 64, "init_std": 0.25, "optimizer": "sgd", "lr": 0.2,
    "loss": "mean", "table_init": "xavier", "bottom_mlp": [512, 256, 128], "top_mlp": [512, 256],
}
DEEPCTR = {
    "dim": 16, "k": 64, "init_std": 0.1, "optimizer": "adagrad", "lr": 0.02, "loss": "sum",
    "table_init": "normal",
}
DLRM_TOOLS = ["mlet", "pytorch", "torchrec"]
DEEPCTR_TOOLS = ["mlet", "deepctr", "deepctr-sparse"]
FORKED_TOOLS = ["pytorch", "deepctr", "deepctr-sparse"]  # run in --python's venv (Launcher)


def workload(name, base, batch_size, train_rows, test_rows, **extra):
    w = dict(base, name=name, batch_size=batch_size, train_rows=train_rows, test_rows=test_rows)
    w.update(extra)
    w["tools"] = DLRM_TOOLS if w["model"] == "dlrm" else DEEPCTR_TOOLS
    return w


# Rows per workload, chosen so that the whole default benchmark (3 repeats of 60 runs) finishes
# in about 25 minutes on an idle 2-core machine (docs/benchmarks.md, "Workloads and defaults"):
# a whole number of batches, enough steps that the timed window of the fastest tool is seconds
# long, and for the slowest tools no more than that. DeepCTR-Torch as shipped updates every row
# of every table each step (its cost is per step, so fewer steps measure it as well);
# xDeepFM's CIN costs every tool milliseconds per sample, in training and in evaluation, so
# its steps and test rows are fewest (a b2048 step is seconds long).
WORKLOADS = [
    workload("dlrm-b128", DLRM, 128, 25_600, 10_000),
    workload("dlrm-b2048", DLRM, 2048, 40_960, 10_000),
    workload("deepfm-b256", dict(DEEPCTR, model="deepfm"), 256, 7_680, 10_000),
    workload("deepfm-b2048", dict(DEEPCTR, model="deepfm"), 2048, 24_576, 10_000),
    workload("dcn-b256", dict(DEEPCTR, model="dcn"), 256, 7_680, 10_000),
    workload("dcn-b2048", dict(DEEPCTR, model="dcn"), 2048, 24_576, 10_000),
    workload("autoint-b256", dict(DEEPCTR, model="autoint"), 256, 7_680, 10_000),
    workload("autoint-b2048", dict(DEEPCTR, model="autoint"), 2048, 24_576, 10_000),
    workload("xdeepfm-b256", dict(DEEPCTR, model="xdeepfm"), 256, 2_560, 2_048),
    workload("xdeepfm-b2048", dict(DEEPCTR, model="xdeepfm"), 2048, 4_096, 2_048),
]

COLUMNS = [
    "workload", "model", "batch_size", "embedding", "tool", "repeat", "samples_per_s",
    "train_seconds", "steps", "samples", "peak_rss_mib", "test_auc", "test_logloss",
    "test_rows", "load_1m", "wall_seconds", "mlet_ratio", "status",
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic data set")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workloads", default="", help="comma-separated names or models (default all)")
    p.add_argument("--tools", default="", help="comma-separated tools (default all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-rows", type=int, help="training rows of every workload (default: each its own)")
    p.add_argument("--test-rows", type=int, help="test rows of every workload")
    p.add_argument("--out", default=os.path.join(ROOT, "target", "bench-compare"))
    p.add_argument("--mlet", default=os.path.join(ROOT, "target", "release", "mlet"))
    p.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    p.add_argument("--torchrec-python", default=os.path.join(ROOT, ".venv-torchrec", "bin", "python"))
    p.add_argument("--timeout", type=int, default=900, help="seconds one run may take")
    p.add_argument(
        "--no-fork", action="store_true",
        help="start the references of --python as commands too, not as forks of forkserver.py "
        "(slower; their peak RSS then counts the pages only the imports touched, as mlet's does)",
    )
    p.add_argument(
        "--report-only", action="store_true",
        help="recompute the medians, table and chart from OUT/results.csv (e.g. of an interrupted run)",
    )
    args = p.parse_args()
    # the runs start in this directory: every path must be absolute
    for key in ("out", "mlet", "python", "torchrec_python"):
        setattr(args, key, os.path.abspath(getattr(args, key)))
    return args


def select(args):
    wanted = [w for w in args.workloads.split(",") if w]
    chosen = [w for w in WORKLOADS if not wanted or w["name"] in wanted or w["model"] in wanted]
    unknown = [x for x in wanted if not any(x in (w["name"], w["model"]) for w in WORKLOADS)]
    if unknown:
        sys.exit(f"WORKLOADS: unknown {', '.join(unknown)}; known: {', '.join(w['name'] for w in WORKLOADS)}")
    tools = [t for t in args.tools.split(",") if t]
    known = set(DLRM_TOOLS + DEEPCTR_TOOLS)
    if set(tools) - known:
        sys.exit(f"TOOLS: unknown {', '.join(sorted(set(tools) - known))}; known: {', '.join(sorted(known))}")
    for w in chosen:
        if args.train_rows:
            w["train_rows"] = args.train_rows - args.train_rows % w["batch_size"] or w["batch_size"]
        if args.test_rows:
            w["test_rows"] = args.test_rows
        w["tools"] = [t for t in w["tools"] if not tools or t in tools]
    return chosen


def prepare_data(args):
    """The synthetic raw file and mlet's cache of it (made once per row count)."""
    data = os.path.join(args.out, "data")
    os.makedirs(data, exist_ok=True)
    raw = os.path.join(data, f"synth-{args.rows}.txt")
    cache = os.path.join(data, f"synth-{args.rows}")
    if not os.path.exists(os.path.join(cache, "meta.json")):
        if not os.path.exists(raw):
            check([args.mlet, "data", "synth", "--rows", str(args.rows), "--seed", "0", "--out", raw])
        check([args.mlet, "data", "prepare", raw, "--format", "criteo", "--out", cache])
    return cache


def check(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def mlet_config(w, embedding, cache, threads, output):
    """The experiment file of one mlet run (YAML is a superset of JSON)."""
    model = {"kind": w["model"]}
    if w["model"] == "dlrm":
        model.update(bottom_mlp=w["bottom_mlp"], top_mlp=w["top_mlp"])
    emb = {"dim": w["dim"], "kind": embedding, "table_init": w["table_init"]}
    if embedding == "mlet":
        emb.update(k=w["k"], init_std=w["init_std"])
    if w["table_init"] == "normal":
        emb["table_std"] = 1e-4
    return {
        "name": f"{w['name']}-{embedding}",
        "data": {"cache": os.path.abspath(cache)},
        "model": model,
        "embedding": emb,
        "optimizer": {"kind": w["optimizer"], "lr": w["lr"]},
        "training": {
            "epochs": 1, "batch_size": w["batch_size"], "seed": w["seed"], "shuffle": False,
            "threads": threads, "loss_reduction": w["loss"], "log_every": 1_000_000,
        },
        "eval": {"batch_size": 1024},  # common.EVAL_BATCH
        "output": os.path.abspath(output),
    }


def command(tool, w, embedding, cache, args, work):
    """The command line of one run and where its result will be."""
    result = os.path.join(work, "result.json")
    if tool == "mlet":
        config = mlet_config(w, embedding, cache, args.threads, os.path.join(work, "runs"))
        path = os.path.join(work, "experiment.yaml")
        with open(path, "w") as f:
            json.dump(config, f, indent=1)
        run_dir = os.path.join(config["output"], config["name"], "default")
        return [args.mlet, "--quiet", "train", path, "--force"], os.path.join(run_dir, "metrics.json")
    script, python, extra = {
        "pytorch": ("torch_dlrm.py", args.python, []),
        "torchrec": ("torchrec_dlrm.py", args.torchrec_python, []),
        "deepctr": ("deepctr_ref.py", args.python, ["--variant", "shipped"]),
        "deepctr-sparse": ("deepctr_ref.py", args.python, ["--variant", "sparse"]),
    }[tool]
    return [
        python, "-W", "ignore", os.path.join(HERE, script), *extra, "--cache", cache,
        "--workload", json.dumps(w), "--embedding", embedding, "--threads", str(args.threads),
        "--out", result,
    ], result


class Launcher:
    """Starts each run as a process of its own and returns its wait status and peak RSS (KiB).
    mlet and TorchRec (another venv) start as commands; the references of `--python` as forks
    of benches/compare/forkserver.py, which imports torch and DeepCTR-Torch once per benchmark
    instead of once per run."""

    def __init__(self, args, forks):
        self.python = args.python
        self.server = None
        if forks:  # started before the first run, so that no run's wall time counts it
            self.server = subprocess.Popen(
                [self.python, "-W", "ignore", os.path.join(HERE, "forkserver.py")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE,
            )
            if json.loads(self.server.stdout.readline() or "{}").get("ready") is not True:
                sys.exit(f"{os.path.join(HERE, 'forkserver.py')} did not start under {self.python}")

    def run(self, cmd, log_path, timeout):
        if self.server is not None and cmd[0] == self.python:
            return self._forked(cmd[3:], log_path, timeout)  # python -W ignore SCRIPT ARGS...
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)
            deadline = time.perf_counter() + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped above
        return status, usage.ru_maxrss

    def _forked(self, argv, log_path, timeout):
        self.server.stdin.write(json.dumps({"argv": argv, "log": log_path, "timeout": timeout}) + "\n")
        self.server.stdin.flush()
        line = self.server.stdout.readline()
        if not line:
            sys.exit(f"{os.path.join(HERE, 'forkserver.py')} exited (its output is above); the CSV keeps the runs so far")
        answer = json.loads(line)
        return answer["status"], answer["maxrss_kib"]

    def close(self):
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait()


def run_one(tool, w, embedding, cache, args, repeat, launcher):
    # repeat r initialises every tool's model from seed r, so the AUC range shows the seeds' spread
    w = dict(w, seed=repeat)
    work = os.path.join(args.out, "work", f"{w['name']}-{embedding}-{tool}-r{repeat}")
    os.makedirs(work, exist_ok=True)
    cmd, result_path = command(tool, w, embedding, cache, args, work)
    if os.path.exists(result_path):
        os.remove(result_path)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    status, maxrss_kib = launcher.run(cmd, os.path.join(work, "log.txt"), args.timeout)
    returncode = os.waitstatus_to_exitcode(status)
    row = {
        "workload": w["name"], "model": w["model"], "batch_size": w["batch_size"],
        "embedding": embedding if embedding == "single" else f"mlet-k{w['k']}", "tool": tool,
        "repeat": repeat, "peak_rss_mib": round(maxrss_kib / 1024, 1), "load_1m": round(load, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if returncode != 0 or not os.path.exists(result_path):
        row["status"] = f"failed (exit {returncode}; see {os.path.join(work, 'log.txt')})"
        return row
    with open(result_path) as f:
        r = json.load(f)
    if tool == "mlet":
        r = {
            "samples_per_s": r["train"]["samples_per_s"], "train_seconds": r["train"]["seconds"],
            "steps": r["train"]["steps"], "samples": r["train"]["samples"],
            "test_auc": r["test"]["auc"], "test_logloss": r["test"]["logloss"],
            "test_rows": r["test"].get("samples", w["test_rows"]),
        }
    for key in ("samples_per_s", "train_seconds", "steps", "samples", "test_auc", "test_logloss", "test_rows"):
        row[key] = r[key]
    row["status"] = "ok"
    return row


def medians(rows):
    """One `median` row per workload x embedding x tool, with mlet's throughput over the tool's."""
    out = []
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["workload"], r["embedding"], r["tool"]), []).append(r)
    for (workload, embedding, tool), rs in groups.items():
        m = {k: rs[0][k] for k in ("workload", "model", "batch_size", "embedding", "tool")}
        m["repeat"] = "median"
        for key in ("samples_per_s", "train_seconds", "peak_rss_mib", "test_auc", "test_logloss", "load_1m", "wall_seconds"):
            m[key] = statistics.median(r[key] for r in rs)
        for key in ("steps", "samples", "test_rows"):
            m[key] = rs[0][key]
        m["status"] = f"{len(rs)} runs"
        out.append(m)
    for m in out:
        ref = [x for x in out if (x["workload"], x["embedding"], x["tool"]) == (m["workload"], m["embedding"], "mlet")]
        if ref:
            m["mlet_ratio"] = round(ref[0]["samples_per_s"] / m["samples_per_s"], 2)
    return out


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in COLUMNS})


def table(rows, summary):
    """The printed table: per workload, embedding and tool, the median and range of samples/s."""
    lines = [
        "| workload | embedding | tool | samples/s median (min-max) | mlet / tool | peak RSS MiB | test AUC (min-max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in summary:
        rs = [r for r in rows if r["status"] == "ok" and (r["workload"], r["embedding"], r["tool"]) == (m["workload"], m["embedding"], m["tool"])]
        speeds = [r["samples_per_s"] for r in rs]
        aucs = [r["test_auc"] for r in rs]
        lines.append(
            f"| {m['workload']} | {m['embedding']} | {m['tool']} | {m['samples_per_s']:,.0f} "
            f"({min(speeds):,.0f}-{max(speeds):,.0f}) | {m.get('mlet_ratio', ''):}x | "
            f"{m['peak_rss_mib']:,.0f} | {m['test_auc']:.4f} ({min(aucs):.4f}-{max(aucs):.4f}) |"
        )
    return "\n".join(lines)


def read_runs(path):
    """The run rows of a results.csv (its `median` rows are recomputed)."""
    numeric = ("samples_per_s", "train_seconds", "peak_rss_mib", "test_auc", "test_logloss", "load_1m", "wall_seconds")
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["repeat"] == "median":
                continue
            for key in numeric:
                if r[key] != "":
                    r[key] = float(r[key])
            rows.append(r)
    return rows


def report(args, rows, csv_path):
    """Writes the CSV with its medians, prints the table and draws the chart."""
    summary = medians(rows)
    write_csv(csv_path, rows + summary)
    print(table(rows, summary))
    print(f"\nwrote {csv_path}")
    chart = subprocess.run(
        [args.mlet, "plot", csv_path, "--kind", "bench-compare", "--out", args.out],
        capture_output=True, text=True,
    )
    print(chart.stdout.strip() or chart.stderr.strip())


def main():
    args = parse_args()
    if args.report_only:
        csv_path = os.path.join(args.out, "results.csv")
        if not os.path.exists(csv_path):
            sys.exit(f"--report-only: {csv_path} does not exist (run the benchmark first)")
        return report(args, read_runs(csv_path), csv_path)
    chosen = select(args)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    cache = prepare_data(args)
    with open(os.path.join(cache, "meta.json")) as f:
        meta = json.load(f)
    subsets = {}
    for w in chosen:
        rows = {"train": w["train_rows"], "valid": 0, "test": w["test_rows"]}
        name = f"first-train{w['train_rows']}-test{w['test_rows']}"
        subsets[w["name"]] = make_subset(cache, os.path.join(os.path.dirname(cache), f"synth-{args.rows}-{name}"), rows)
    print(
        f"{len(chosen)} workloads, {args.repeats} repeats, {args.threads} threads; data: {args.rows} "
        f"synthetic rows ({meta['rows']['train']} train, {sum(meta['cardinalities'])} categories); "
        "every tool of a workload trains one pass over the same first training rows in file order "
        "(no shuffling) and is tested on the same first test rows",
        flush=True,
    )
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load + args.threads > cores + 0.5:
        print(
            f"warning: load average {load:.1f} on {cores} cores: {args.threads} more threads per "
            "run will wait for cores, and libtorch's threads wait for each other, so every tool "
            "runs slower than on an idle machine (see load_1m in the CSV)",
            flush=True,
        )
    forks = not args.no_fork and any(t in FORKED_TOOLS for w in chosen for t in w["tools"])
    launcher = Launcher(args, forks)
    rows = []
    csv_path = os.path.join(args.out, "results.csv")
    for repeat in range(1, args.repeats + 1):
        for w in chosen:
            for embedding in ("single", "mlet"):
                # rotate the tools' order each repeat, so that none always runs first
                shift = (repeat - 1) % len(w["tools"])
                for tool in w["tools"][shift:] + w["tools"][:shift]:
                    row = run_one(tool, w, embedding, subsets[w["name"]], args, repeat, launcher)
                    rows.append(row)
                    speed = f"{row['samples_per_s']:,.0f} samples/s, AUC {row['test_auc']:.4f}" if row["status"] == "ok" else row["status"]
                    print(
                        f"[repeat {repeat}] {w['name']} {row['embedding']} {tool}: {speed}, "
                        f"peak {row['peak_rss_mib']:,.0f} MiB, {row['wall_seconds']:.0f} s (load {row['load_1m']})",
                        flush=True,
                    )
                    write_csv(csv_path, rows)
    launcher.close()
    print()
    for w in chosen:
        print(f"{w['name']}: {w['train_rows']} training rows ({w['train_rows'] // w['batch_size']} steps of {w['batch_size']}), {w['test_rows']} test rows")
    report(args, rows, csv_path)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"total {time.perf_counter() - started:.0f} s; {len(rows) - len(failed)} runs ok, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
