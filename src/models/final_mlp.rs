//! FinalMLP (Mao et al. 2023) as paper 004 runs it: two MLP streams over
//! x = [flattened embeddings, dense], each behind its own feature-selection gate (optional),
//! fused by multi-head bilinear aggregation into the logit. Under multi-embedding every set has
//! its own gates and streams; each stream's output is averaged over the sets before the fusion
//! (the streams' MLPs are the non-linear projection after each set).
use tch::{nn, Tensor};

use super::setwise::mean_over_sets;
use super::{Features, Network, NetworkShape};
use crate::config::FinalMlpConfig;
use crate::layers::{
    AggregationInit, FeatureSelection, InteractionAggregation, LinearInit, MlpBlock, MlpBlockConfig,
};

struct SetStreams {
    selection: Option<FeatureSelection>,
    streams: [MlpBlock; 2],
}

pub struct FinalMlp {
    sets: Vec<SetStreams>,
    fusion: InteractionAggregation,
    /// `Network::activation_floats_per_row`, from the shapes.
    activation_floats: usize,
}

impl FinalMlp {
    pub fn new(path: &nn::Path, shape: &NetworkShape, cfg: &FinalMlpConfig) -> FinalMlp {
        let (dim, width) = (shape.dim, shape.flat_width());
        let stream = |hidden: &[usize]| MlpBlockConfig {
            hidden: hidden.to_vec(),
            dropout: cfg.dropout,
            batch_norm: cfg.batch_norm,
            output: None,
            init: LinearInit::TorchDefault,
        };
        let sets = (0..shape.sets)
            .map(|m| {
                let p = path / format!("set{m}");
                SetStreams {
                    selection: cfg.feature_selection.then(|| {
                        FeatureSelection::new(&(&p / "fs"), width, dim, &cfg.fs_hidden_units)
                    }),
                    streams: [
                        MlpBlock::new(&(&p / "stream1"), width, &stream(&cfg.stream1_hidden_units)),
                        MlpBlock::new(&(&p / "stream2"), width, &stream(&cfg.stream2_hidden_units)),
                    ],
                }
            })
            .collect();
        let last = |h: &[usize]| *h.last().expect("validated: at least one layer");
        let sum = |h: &[usize]| h.iter().sum::<usize>();
        // per set: the input, both gated copies and the gates' hidden layers, both streams;
        // then the fusion's x·W_xy
        let per_set = 5 * width
            + 2 * sum(&cfg.fs_hidden_units)
            + sum(&cfg.stream1_hidden_units)
            + sum(&cfg.stream2_hidden_units);
        let activation_floats = shape.sets * per_set
            + last(&cfg.stream1_hidden_units)
            + last(&cfg.stream2_hidden_units);
        FinalMlp {
            activation_floats,
            sets,
            fusion: InteractionAggregation::new(
                &(path / "fusion"),
                last(&cfg.stream1_hidden_units),
                last(&cfg.stream2_hidden_units),
                1,
                cfg.fusion_heads,
                AggregationInit::MultiEmbeddingAuthors,
            ),
        }
    }
}

impl Network for FinalMlp {
    fn activation_floats_per_row(&self) -> usize {
        self.activation_floats
    }

    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for (set, emb) in self.sets.iter().zip(x.set_embeddings()) {
            let flat = Tensor::cat(&[emb.flatten(1, -1), x.dense.shallow_clone()], 1);
            let (a, b) = match &set.selection {
                Some(fs) => fs.forward(&flat),
                None => (flat.shallow_clone(), flat),
            };
            first.push(set.streams[0].forward(&a, train));
            second.push(set.streams[1].forward(&b, train));
        }
        self.fusion
            .forward(&mean_over_sets(first), &mean_over_sets(second))
            .squeeze_dim(1)
    }
}
