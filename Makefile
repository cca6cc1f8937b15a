# Everything a fresh machine needs is installed by these targets: the torch venv (libtorch comes
# from the PyTorch wheel that tch 0.26 expects) and the release build.
VENV ?= .venv
TORCH_VERSION := 2.13.0
PYTHON := $(VENV)/bin/python
TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
# The reference implementation the model-parity tests compare against (and what it imports
# without declaring it).
DEEPCTR_STAMP := $(VENV)/.deepctr-torch-0.3.0
# FuxiCTR, the reference of the layer-parity tests (tests/parity/layer_parity.py): its layers
# from the wheel, and FinalMLP's FeatureSelection and InteractionAggregation from the model zoo,
# which only the source distribution carries (unpacked under $(FUXICTR_SRC)). Its declared
# dependencies (ray, polars, h5py, pandas, ...) serve its data pipeline, which the script stubs
# out, so only numpy and pyyaml (imported by the layers' modules) are installed with it.
FUXICTR_VERSION := 2.3.10
FUXICTR_STAMP := $(VENV)/.fuxictr-$(FUXICTR_VERSION)
FUXICTR_SRC := $(VENV)/fuxictr-src
# The comparative benchmark's TorchRec reference (benches/compare/torchrec_dlrm.py) in a venv of
# its own: torchrec 1.9.2 and fbgemm-gpu-cpu 1.9.0 are built for torch 2.14, not the 2.13 that
# tch needs. torchrec names the CUDA package fbgemm-gpu as a dependency, so it is installed
# without dependencies, next to fbgemm-gpu-cpu and what it imports on the path the benchmark
# uses (tensordict, tqdm, pyre-extensions); the stamp runs its self-check (the FBGEMM kernel's
# fused SGD update against a plain PyTorch gradient).
TORCHREC_VENV ?= .venv-torchrec
TORCHREC_PYTHON := $(TORCHREC_VENV)/bin/python
TORCHREC_STAMP := $(TORCHREC_VENV)/.torchrec-1.9.2
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)
CARGO ?= cargo
MLET := target/release/mlet

.PHONY: all venv build test fuzz bench bench-compare smoke reproduce-fig5 reproduce-fig4 reproduce-fig7 reproduce-table3 reproduce-table5 reproduce-fig8 reproduce-me-table1 fmt clippy clean

all: build

venv: $(TORCH_STAMP)

$(TORCH_STAMP):
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PYTHON) -c "import torch; assert torch.__version__.split('+')[0] == '$(TORCH_VERSION)', torch.__version__"
	touch $@

$(DEEPCTR_STAMP): $(TORCH_STAMP)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps deepctr-torch==0.3.0
	$(PYTHON) -m pip install --quiet --disable-pip-version-check numpy scikit-learn tqdm requests
	$(PYTHON) -c "import deepctr_torch.models, numpy"
	touch $@

$(FUXICTR_STAMP): $(TORCH_STAMP)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check numpy pyyaml
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps fuxictr==$(FUXICTR_VERSION)
	rm -rf $(FUXICTR_SRC) && mkdir -p $(FUXICTR_SRC)
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
		--dest $(FUXICTR_SRC) fuxictr==$(FUXICTR_VERSION)
	tar -xzf $(FUXICTR_SRC)/fuxictr-$(FUXICTR_VERSION).tar.gz -C $(FUXICTR_SRC) --strip-components 1 \
		fuxictr-$(FUXICTR_VERSION)/model_zoo/LongCTR/FinalMLP/FinalMLP.py
	$(PYTHON) tests/parity/layer_parity.py --check-imports
	touch $@

$(TORCHREC_STAMP):
	test -x $(TORCHREC_PYTHON) || python3 -m venv $(TORCHREC_VENV)
	$(TORCHREC_PYTHON) -m pip install --quiet --disable-pip-version-check torch==2.14.0 fbgemm-gpu-cpu==1.9.0
	$(TORCHREC_PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps torchrec==1.9.2
	$(TORCHREC_PYTHON) -m pip install --quiet --disable-pip-version-check torch==2.14.0 \
		tensordict==0.15.3 tqdm pyre-extensions numpy
	$(TORCHREC_PYTHON) -W ignore benches/compare/torchrec_dlrm.py --self-check
	touch $@

build: $(TORCH_STAMP)
	$(CARGO) build --release

test: $(TORCH_STAMP) $(DEEPCTR_STAMP) $(FUXICTR_STAMP)
	MLET_PYTHON=$(abspath $(PYTHON)) $(CARGO) test --release

# Property-based fuzzing of the readers and loaders (src/fuzz.rs) with FUZZ_CASES inputs per
# target; `make test` runs a few hundred per target with a fixed seed, `make fuzz` a fresh seed
# (FUZZ_SEED=N repeats a run).
FUZZ_CASES ?= 1000000
FUZZ_SEED ?= $(shell date +%s)
fuzz: $(TORCH_STAMP)
	MLET_FUZZ_CASES=$(FUZZ_CASES) MLET_FUZZ_SEED=$(FUZZ_SEED) $(CARGO) test --release --lib fuzz:: -- --nocapture --test-threads 1

# The benchmark parts (benches/sparse_step.rs): `overhead` (MLET's step against single-layer,
# DLRM and DeepFM, on 1 and 2 threads), `dlrm` (10^4 vs 10^7 rows), `multi` (multi-embedding; CSV in
# target/bench/multi_embedding.csv), `compute` (matmul rate, CIN and AutoInt against it),
# `memory` (peak RSS of whole runs against their budget, at 1M and 4M rows), `prepare` (rows/s of `mlet data
# prepare`). BENCH_ARGS: part names for only those, `--threads N`, `--rounds N`, `--batch N`,
# `--steps N`, `--warmup N`, `--csv PATH`, `--rows N[,N...]`, `--max-steps N`, `--prepare-rows N`,
# `--prepare-runs N`.
BENCH_ARGS ?=
bench: build
	$(CARGO) bench --bench sparse_step -- $(BENCH_ARGS)

# The comparative benchmark (docs/benchmarks.md): mlet against plain PyTorch and TorchRec (DLRM)
# and DeepCTR-Torch as shipped and with sparse embeddings (DeepFM, DCN, AutoInt, xDeepFM), each
# with single and MLET embeddings, on the same rows; table, target/bench-compare/results.csv and
# a bar chart. ROWS= (synthetic rows), REPEATS=, WORKLOADS= (names or models, comma-separated),
# TOOLS=, THREADS=, COMPARE_ARGS= (more options of benches/compare/run.py). The defaults (180
# runs, each its own process) are sized for about 25 minutes on an idle 2-core machine; the
# first run also creates .venv-torchrec (torch 2.14 with its CUDA wheels: about 5.5 GB, minutes).
ROWS ?= 1000000
REPEATS ?= 3
WORKLOADS ?=
TOOLS ?=
THREADS ?= 2
COMPARE_ARGS ?=
bench-compare: build $(DEEPCTR_STAMP) $(TORCHREC_STAMP)
	$(PYTHON) benches/compare/run.py --rows $(ROWS) --repeats $(REPEATS) --threads $(THREADS) \
		--workloads "$(WORKLOADS)" --tools "$(TOOLS)" --python $(abspath $(PYTHON)) \
		--torchrec-python $(abspath $(TORCHREC_PYTHON)) $(COMPARE_ARGS)

smoke: build
	$(MLET) train experiments/smoke.yaml

# Parallel training processes for the grids (the cores are split between them).
JOBS ?= 2

# Fig. 5 on the synthetic Criteo-shaped default (about 15 minutes on 2 cores); with
# CRITEO=/path/to/train.txt, the paper-scale grid on the real Criteo-Kaggle file.
reproduce-fig5: build
ifdef CRITEO
	$(MLET) grid experiments/fig5_dlrm_criteo.yaml --raw $(CRITEO) --jobs 1
else
	$(MLET) grid experiments/fig5_dlrm_synthetic.yaml --jobs $(JOBS)
endif

# Fig. 4 (AUC against MLET's init sigma, k = 32) on the synthetic default, or on CRITEO=...
reproduce-fig4: build
ifdef CRITEO
	$(MLET) grid experiments/fig4_init_std_criteo.yaml --raw $(CRITEO) --jobs 1
else
	$(MLET) grid experiments/fig4_init_std.yaml --jobs $(JOBS)
endif

# Fig. 7 (DCN, NFM and AutoInt: AUC and LogLoss vs d, baseline vs MLET k = 64) on the synthetic
# default (about 15 minutes on 2 cores); with AVAZU=/path/to/avazu/train, the paper-scale grid.
reproduce-fig7: build
ifdef AVAZU
	$(MLET) grid experiments/fig7_dcn_nfm_autoint_avazu.yaml --raw $(AVAZU) --jobs 1
else
	$(MLET) grid experiments/fig7_synthetic.yaml --jobs $(JOBS)
endif

# Table 5 (single-layer DLRM at d = 32, 64 truncated to rank r by SVD, against MLET at d = r) on
# the synthetic default: the grid, then the truncations.
reproduce-table5: build
	$(MLET) grid experiments/table5_svd.yaml --jobs $(JOBS)
	$(MLET) analyze table5 runs/table5_svd --plots plots/table5

# Fig. 8 (DCN: fp32, int8, hashing, int8 + hashing; baseline vs MLET) on the synthetic default.
reproduce-fig8: build
	$(MLET) grid experiments/fig8_dcn_synthetic.yaml --jobs $(JOBS)
	$(MLET) analyze fig8 runs/fig8_dcn_synthetic --plots plots/fig8

# Table 3 (baseline vs MLET k = 64 at d = 2..16, maximum memory reduction) for all seven models
# on the synthetic default: the per-model σ sweep first, then the grid that uses its best σ
# (189 runs; 23 minutes on 2 cores). Table and reading: plots/table3/README.md.
reproduce-table3: build
	$(MLET) grid experiments/table3_sigma_sweep.yaml --jobs $(JOBS)
	$(MLET) grid experiments/table3_all_models.yaml --jobs $(JOBS)

# Paper 004's Table 1 (test AUC as the embedding grows, single vs multi-embedding; DCNv2 and DNN,
# plus MLET x multi-embedding) on the synthetic default (14 minutes on 2 cores); with
# CRITEO=/path/to/train.txt or AVAZU=/path/to/avazu/train, all six models at paper scale.
reproduce-me-table1: build
ifdef CRITEO
	$(MLET) grid experiments/me_table1_criteo.yaml --raw $(CRITEO) --jobs 1
else ifdef AVAZU
	$(MLET) grid experiments/me_table1_avazu.yaml --raw $(AVAZU) --jobs 1
else
	$(MLET) grid experiments/me_table1_synthetic.yaml --jobs $(JOBS)
endif

fmt:
	$(CARGO) fmt

clippy: $(TORCH_STAMP)
	$(CARGO) clippy --release --all-targets

clean:
	$(CARGO) clean
