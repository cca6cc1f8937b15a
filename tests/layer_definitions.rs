//! The layers of paper 004's models against their definitions: small random inputs and weights
//! (in f64), and the expected outputs computed by explicit loops over the formulas.
use std::collections::HashMap;

use tch::{nn, Device, Kind, Tensor};

use mlet::layers::{
    AggregationInit, CrossNetV2, FeatureSelection, FieldWeightedPooling, InnerProduct,
    InteractionAggregation, LinearInit, MlpBlock, MlpBlockConfig,
};

const TOL: f64 = 1e-10;

fn v1(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn v2(t: &Tensor) -> Vec<Vec<f64>> {
    let cols = t.size()[1] as usize;
    v1(t).chunks(cols).map(|c| c.to_vec()).collect()
}

fn v3(t: &Tensor) -> Vec<Vec<Vec<f64>>> {
    let s = t.size();
    let (b, r) = (s[0] as usize, s[1] as usize);
    let flat = v1(t);
    let per = flat.len() / (b * r);
    (0..b)
        .map(|i| {
            (0..r)
                .map(|j| flat[(i * r + j) * per..(i * r + j + 1) * per].to_vec())
                .collect()
        })
        .collect()
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Double, Device::Cpu))
}

/// A double-precision VarStore whose variables are redrawn N(0, 0.5²) (running variances
/// |N| + 0.5, positive).
fn randomise(vs: &mut nn::VarStore) {
    vs.double();
    // in name order, so that a seed draws the same weights in every process
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut v) in variables {
            let mut noise = Tensor::randn_like(&v) * 0.5;
            if name.ends_with("running_var") {
                noise = noise.abs() + 0.5;
            }
            v.copy_(&noise);
        }
    });
}

fn vars(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOL * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn affine(w: &[Vec<f64>], b: &[f64], x: &[f64]) -> Vec<f64> {
    w.iter()
        .zip(b)
        .map(|(row, bias)| bias + row.iter().zip(x).map(|(a, c)| a * c).sum::<f64>())
        .collect()
}

/// pytorch-fm's MLP in eval mode by the formula, from the weights under our names.
fn mlp_eval_by_hand(
    v: &HashMap<String, Tensor>,
    prefix: &str,
    hidden: usize,
    batch_norm: bool,
    output: bool,
    x: &[f64],
) -> Vec<f64> {
    let stride = if batch_norm { 4 } else { 3 };
    let get1 = |n: String| v1(&v[&format!("{prefix}mlp.{n}")]);
    let get2 = |n: String| v2(&v[&format!("{prefix}mlp.{n}")]);
    let mut h = x.to_vec();
    for i in 0..hidden {
        let k = stride * i;
        h = affine(&get2(format!("{k}.weight")), &get1(format!("{k}.bias")), &h);
        if batch_norm {
            let k = k + 1;
            let (g, b) = (get1(format!("{k}.weight")), get1(format!("{k}.bias")));
            let (m, var) = (
                get1(format!("{k}.running_mean")),
                get1(format!("{k}.running_var")),
            );
            for j in 0..h.len() {
                h[j] = (h[j] - m[j]) / (var[j] + 1e-5).sqrt() * g[j] + b[j];
            }
        }
        h = h.iter().map(|a| a.max(0.0)).collect();
    }
    if output {
        let k = stride * hidden;
        h = affine(&get2(format!("{k}.weight")), &get1(format!("{k}.bias")), &h);
    }
    h
}

#[test]
fn mlp_block_eval_matches_definition() {
    for batch_norm in [true, false] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let cfg = MlpBlockConfig {
            hidden: vec![4, 3],
            dropout: 0.4,
            batch_norm,
            output: Some(1),
            ..Default::default()
        };
        let block = MlpBlock::new(&vs.root(), 5, &cfg);
        randomise(&mut vs);
        let x = randn(&[6, 5]);
        let got = tch::no_grad(|| block.forward(&x, false));
        assert_eq!(got.size(), [6, 1]);
        assert_eq!(block.output_width(), 1);
        let v = vars(&vs);
        let want: Vec<f64> = v2(&x)
            .iter()
            .flat_map(|row| mlp_eval_by_hand(&v, "", 2, batch_norm, true, row))
            .collect();
        assert_close(&v1(&got), &want, &format!("eval, batch_norm {batch_norm}"));
        let stride = if batch_norm { 4 } else { 3 };
        let wss: f64 = [0, stride, 2 * stride]
            .iter()
            .flat_map(|k| v1(&v[&format!("mlp.{k}.weight")]))
            .map(|w| w * w)
            .sum();
        assert_close(&v1(&block.weight_square_sum()), &[wss], "weight_square_sum");
    }
}

#[test]
fn mlp_block_training_normalises_by_the_batch_and_updates_running_statistics() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let cfg = MlpBlockConfig {
        hidden: vec![3],
        batch_norm: true,
        ..Default::default()
    };
    let block = MlpBlock::new(&vs.root(), 4, &cfg);
    randomise(&mut vs);
    let v = vars(&vs);
    let before_mean = v1(&v["mlp.1.running_mean"]);
    let before_var = v1(&v["mlp.1.running_var"]);
    let x = randn(&[7, 4]);
    let got = v2(&tch::no_grad(|| block.forward(&x, true)));
    let (w, b) = (v2(&v["mlp.0.weight"]), v1(&v["mlp.0.bias"]));
    let (g, beta) = (v1(&v["mlp.1.weight"]), v1(&v["mlp.1.bias"]));
    let h: Vec<Vec<f64>> = v2(&x).iter().map(|r| affine(&w, &b, r)).collect();
    let n = h.len() as f64;
    for j in 0..3 {
        let mean = h.iter().map(|r| r[j]).sum::<f64>() / n;
        let ss = h.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>();
        for (r, out) in h.iter().zip(&got) {
            let want = ((r[j] - mean) / (ss / n + 1e-5).sqrt() * g[j] + beta[j]).max(0.0);
            assert!((out[j] - want).abs() < TOL, "{} vs {want}", out[j]);
        }
        // running statistics: momentum 0.1, the unbiased batch variance
        let m = v1(&v["mlp.1.running_mean"])[j];
        let var = v1(&v["mlp.1.running_var"])[j];
        assert!((m - (0.9 * before_mean[j] + 0.1 * mean)).abs() < TOL);
        assert!((var - (0.9 * before_var[j] + 0.1 * ss / (n - 1.0))).abs() < TOL);
    }
}

#[test]
fn mlp_block_dropout_is_inverted_and_only_in_training() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let cfg = MlpBlockConfig {
        hidden: vec![64],
        dropout: 0.5,
        ..Default::default()
    };
    let block = MlpBlock::new(&vs.root(), 3, &cfg);
    randomise(&mut vs);
    let x = randn(&[16, 3]);
    let eval = v1(&block.forward(&x, false));
    assert_eq!(eval, v1(&block.forward(&x, false)));
    let train = v1(&block.forward(&x, true));
    let mut dropped = 0;
    for (t, e) in train.iter().zip(&eval) {
        if *t == 0.0 && *e != 0.0 {
            dropped += 1;
        } else {
            assert!((t - 2.0 * e).abs() < TOL, "{t} vs 2 x {e}");
        }
    }
    let kept = eval.iter().filter(|e| **e != 0.0).count();
    assert!(
        dropped > kept / 4 && dropped < 3 * kept / 4,
        "{dropped} of {kept}"
    );
}

#[test]
fn mlp_block_names_and_torch_default_init() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MlpBlockConfig {
        hidden: vec![40, 30],
        batch_norm: true,
        output: Some(1),
        ..Default::default()
    };
    let block = MlpBlock::new(&vs.root(), 50, &cfg);
    let state: Vec<String> = block.state_dict("p.").into_iter().map(|(n, _)| n).collect();
    let mut want = Vec::new();
    for k in [0, 4] {
        want.push(format!("p.mlp.{k}.weight"));
        want.push(format!("p.mlp.{k}.bias"));
        for s in ["weight", "bias", "running_mean", "running_var"] {
            want.push(format!("p.mlp.{}.{s}", k + 1));
        }
    }
    want.extend(["p.mlp.8.weight".to_string(), "p.mlp.8.bias".to_string()]);
    assert_eq!(state, want);
    let mut vs_names: Vec<String> = vs
        .variables()
        .into_keys()
        .map(|n| format!("p.{n}"))
        .collect();
    vs_names.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(vs_names, sorted, "state_dict names are the VarStore's");
    let trainable = vs.trainable_variables().len();
    assert_eq!(
        trainable,
        want.len() - 4,
        "running statistics are not trainable"
    );

    let v = vars(&vs);
    for (k, fan_in) in [(0, 50.0), (4, 40.0), (8, 30.0)] {
        let bound = 1.0 / f64::sqrt(fan_in);
        for p in ["weight", "bias"] {
            let t = v1(&v[&format!("mlp.{k}.{p}")]);
            let max = t.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(max <= bound, "mlp.{k}.{p}: max {max}, bound {bound}");
            if t.len() >= 30 {
                assert!(
                    max > 0.8 * bound,
                    "mlp.{k}.{p}: max {max}: narrower than U(±{bound})"
                );
            }
        }
    }
    for k in [1, 5] {
        assert!(v1(&v[&format!("mlp.{k}.weight")]).iter().all(|x| *x == 1.0));
        assert!(v1(&v[&format!("mlp.{k}.bias")]).iter().all(|x| *x == 0.0));
        assert!(v1(&v[&format!("mlp.{k}.running_mean")])
            .iter()
            .all(|x| *x == 0.0));
        assert!(v1(&v[&format!("mlp.{k}.running_var")])
            .iter()
            .all(|x| *x == 1.0));
    }

    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MlpBlockConfig {
        hidden: vec![200],
        init: LinearInit::XavierNormalZeroBias,
        ..Default::default()
    };
    let block = MlpBlock::new(&vs.root(), 300, &cfg);
    let names: Vec<String> = block.state_dict("").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["mlp.0.weight", "mlp.0.bias"]);
    let v = vars(&vs);
    let std = v1(&v["mlp.0.weight"].std(true))[0];
    let want = (2.0 / 500.0f64).sqrt();
    assert!((std / want - 1.0).abs() < 0.05, "std {std} vs {want}");
    assert!(v1(&v["mlp.0.bias"]).iter().all(|x| *x == 0.0));
}

/// Paper 004's multi-embedding splits the MLP after its first hidden layer: the two blocks
/// with the whole one's weights compute what the whole one does, in training too.
#[test]
fn mlp_block_split_after_the_first_layer_equals_the_whole() {
    let mut whole_vs = nn::VarStore::new(Device::Cpu);
    let cfg = |hidden: Vec<usize>, output| MlpBlockConfig {
        hidden,
        batch_norm: true,
        output,
        ..Default::default()
    };
    let whole = MlpBlock::new(&whole_vs.root(), 6, &cfg(vec![5, 4], Some(1)));
    randomise(&mut whole_vs);
    let mut split_vs = nn::VarStore::new(Device::Cpu);
    let first = MlpBlock::new(&(split_vs.root() / "first"), 6, &cfg(vec![5], None));
    let rest = MlpBlock::new(&(split_vs.root() / "rest"), 5, &cfg(vec![4], Some(1)));
    split_vs.double();
    let w = vars(&whole_vs);
    let s = vars(&split_vs);
    tch::no_grad(|| {
        for (name, t) in &w {
            let (k, param) = name["mlp.".len()..].split_once('.').unwrap();
            let k: usize = k.parse().unwrap();
            let target = if k < 4 {
                format!("first.mlp.{k}.{param}")
            } else {
                format!("rest.mlp.{}.{param}", k - 4)
            };
            s[&target].shallow_clone().copy_(t);
        }
    });
    let x = randn(&[8, 6]);
    for train in [false, true] {
        let a = v1(&whole.forward(&x, train));
        let b = v1(&rest.forward(&first.forward(&x, train), train));
        assert_close(&b, &a, &format!("split, train {train}"));
    }
    assert_eq!(first.output_width(), 5);
    assert_eq!(rest.input_width(), 5);
}

#[test]
fn cross_v2_matches_definition_and_the_authors_init() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = CrossNetV2::new(&vs.root(), 12, 4);
    let v = vars(&vs);
    let bound = (3.0f64 / 12.0).sqrt();
    for l in 0..4 {
        let w = v1(&v[&format!("W.{l}")]);
        let max = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(max <= bound && max > 0.8 * bound, "W.{l} max {max}");
        assert!(v1(&v[&format!("b.{l}")]).iter().all(|x| *x == 0.0));
    }
    let names: Vec<String> = net.state_dict("cn.").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[..4], ["cn.W.0", "cn.b.0", "cn.W.1", "cn.b.1"]);

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = CrossNetV2::new(&vs.root(), 5, 3);
    randomise(&mut vs);
    let v = vars(&vs);
    let x = randn(&[4, 5]);
    let got = v1(&net.forward(&x));
    let mut want = Vec::new();
    for x0 in v2(&x) {
        let mut xl = x0.clone();
        for l in 0..3 {
            let wx = affine(&v2(&v[&format!("W.{l}")]), &v1(&v[&format!("b.{l}")]), &xl);
            xl = (0..5).map(|i| x0[i] * wx[i] + xl[i]).collect();
        }
        want.extend(xl);
    }
    assert_close(&got, &want, "cross v2");
    let wss = v1(&net.weight_square_sum())[0];
    let want_wss: f64 = (0..3)
        .flat_map(|l| v1(&v[&format!("W.{l}")]))
        .map(|w| w * w)
        .sum();
    assert!((wss - want_wss).abs() < 1e-9);
}

#[test]
fn inner_product_matches_definition_in_deepctr_pair_order() {
    let (b, f, d) = (3, 5, 4);
    let emb = randn(&[b, f, d]);
    let layer = InnerProduct::new(f as usize, Device::Cpu);
    let got = layer.forward(&emb);
    assert_eq!(got.size(), [b, 10]);
    assert_eq!(InnerProduct::output_width(5), 10);
    let e = v3(&emb);
    let mut want = Vec::new();
    for row in &e {
        for i in 0..f as usize {
            for j in i + 1..f as usize {
                want.push((0..d as usize).map(|k| row[i][k] * row[j][k]).sum::<f64>());
            }
        }
    }
    assert_close(&v1(&got), &want, "inner products");
}

/// The formula's indices, as written: clearer here than iterators.
#[allow(clippy::needless_range_loop)]
#[test]
fn fwfm_pooling_sums_all_ordered_field_pairs() {
    let (b, f, d) = (3, 4, 5);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let pool = FieldWeightedPooling::new(&vs.root(), f);
    randomise(&mut vs);
    let w = v3(&vars(&vs)["weight"]);
    assert_eq!((w.len(), w[0].len()), (1, f));
    let emb = randn(&[b, f as i64, d]);
    let got = pool.forward(&emb);
    assert_eq!(got.size(), [b, d]);
    let mut want = Vec::new();
    for e in v3(&emb) {
        for k in 0..d as usize {
            let mut s = 0.0;
            for i in 0..f {
                for j in 0..f {
                    s += w[0][i][j] * e[i][k] * e[j][k];
                }
            }
            want.push(s);
        }
    }
    assert_close(&v1(&got), &want, "fwfm");
    // The authors' computation: the [B, d, F, F] outer products times the weight, summed.
    let a = emb.transpose(1, 2).unsqueeze(-1);
    let outer = a.matmul(&emb.transpose(1, 2).unsqueeze(-2));
    let authors = (outer * vars(&vs)["weight"].unsqueeze(0)).sum_dim_intlist(
        [-1, -2].as_slice(),
        false,
        Kind::Double,
    );
    assert_close(
        &v1(&got),
        &v1(&authors),
        "fwfm against the materialised form",
    );
}

#[test]
fn feature_selection_matches_definition_and_starts_as_identity() {
    let (emb_dim, feature_dim, hidden) = (3, 6, 4);
    let vs = nn::VarStore::new(Device::Cpu);
    let fs = FeatureSelection::new(&vs.root(), feature_dim, emb_dim, &[hidden]);
    let x = Tensor::randn([5, feature_dim as i64], (Kind::Float, Device::Cpu));
    let (a, b) = fs.forward(&x);
    assert_eq!(v1(&a), v1(&x), "zero context and biases: gate 2·σ(0) = 1");
    assert_eq!(v1(&b), v1(&x));
    let names: Vec<String> = fs.state_dict("").into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "fs1_ctx_bias",
            "fs1_gate.mlp.0.weight",
            "fs1_gate.mlp.0.bias",
            "fs1_gate.mlp.3.weight",
            "fs1_gate.mlp.3.bias",
            "fs2_ctx_bias",
            "fs2_gate.mlp.0.weight",
            "fs2_gate.mlp.0.bias",
            "fs2_gate.mlp.3.weight",
            "fs2_gate.mlp.3.bias"
        ]
    );

    let mut vs = nn::VarStore::new(Device::Cpu);
    let fs = FeatureSelection::new(&vs.root(), feature_dim, emb_dim, &[hidden]);
    randomise(&mut vs);
    let v = vars(&vs);
    let x = randn(&[5, feature_dim as i64]);
    let (a, b) = fs.forward(&x);
    for (s, got) in [(1, a), (2, b)] {
        let ctx = v1(&v[&format!("fs{s}_ctx_bias")]);
        let g = |n: &str| format!("fs{s}_gate.mlp.{n}");
        let h: Vec<f64> = affine(&v2(&v[&g("0.weight")]), &v1(&v[&g("0.bias")]), &ctx)
            .into_iter()
            .map(|z| z.max(0.0))
            .collect();
        let gate: Vec<f64> = affine(&v2(&v[&g("3.weight")]), &v1(&v[&g("3.bias")]), &h)
            .into_iter()
            .map(|z| 2.0 / (1.0 + (-z).exp()))
            .collect();
        let want: Vec<f64> = v2(&x)
            .iter()
            .flat_map(|row| {
                row.iter()
                    .zip(&gate)
                    .map(|(e, g)| e * g)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_close(&v1(&got), &want, &format!("stream {s}"));
    }
}

#[test]
fn interaction_aggregation_matches_definition() {
    let (x_dim, y_dim, out, heads) = (4usize, 6usize, 3usize, 2usize);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let agg = InteractionAggregation::new(
        &vs.root(),
        x_dim,
        y_dim,
        out,
        heads,
        AggregationInit::FuxiCtr,
    );
    randomise(&mut vs);
    let v = vars(&vs);
    assert_eq!(v["w_xy"].size(), [(heads * 2 * 3) as i64, out as i64]);
    let x = randn(&[5, x_dim as i64]);
    let y = randn(&[5, y_dim as i64]);
    let got = v1(&agg.forward(&x, &y));
    let (hx, hy) = (x_dim / heads, y_dim / heads);
    // W_xy [H·hx·hy, O] read as [H, hx, O·hy]: W3[h, a, o·hy + c] = flat[h·hx·O·hy + a·O·hy + o·hy + c].
    let flat = v1(&v["w_xy"]);
    let mut want = Vec::new();
    for (xr, yr) in v2(&x).iter().zip(v2(&y)) {
        let lin = affine(&v2(&v["w_x.weight"]), &v1(&v["w_x.bias"]), xr);
        let lin_y = affine(&v2(&v["w_y.weight"]), &v1(&v["w_y.bias"]), &yr);
        for o in 0..out {
            let mut s = lin[o] + lin_y[o];
            for h in 0..heads {
                for a in 0..hx {
                    for c in 0..hy {
                        let w = flat[h * hx * out * hy + a * out * hy + o * hy + c];
                        s += xr[h * hx + a] * w * yr[h * hy + c];
                    }
                }
            }
            want.push(s);
        }
    }
    assert_close(&got, &want, "aggregation");
}

/// Paper 004's `FinalMLPFusion`: w_x(x) + w_y(y) + Σ_ab x_a W[a, b] y_b, W zero at the start.
#[test]
fn interaction_aggregation_as_the_authors_fusion() {
    let (x_dim, y_dim) = (4usize, 3usize);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let agg = InteractionAggregation::new(
        &vs.root(),
        x_dim,
        y_dim,
        1,
        1,
        AggregationInit::MultiEmbeddingAuthors,
    );
    assert!(v1(&vars(&vs)["w_xy"]).iter().all(|w| *w == 0.0));
    let bound = 0.5;
    assert!(v1(&vars(&vs)["w_x.weight"])
        .iter()
        .all(|w| w.abs() <= bound));
    randomise(&mut vs);
    let v = vars(&vs);
    let x = randn(&[6, x_dim as i64]);
    let y = randn(&[6, y_dim as i64]);
    let w = v["w_xy"].view([x_dim as i64, y_dim as i64]);
    let authors = agg_authors(&v, &x, &y, &w);
    assert_close(&v1(&agg.forward(&x, &y)), &v1(&authors), "authors' fusion");
}

fn agg_authors(v: &HashMap<String, Tensor>, x: &Tensor, y: &Tensor, w: &Tensor) -> Tensor {
    x.linear(&v["w_x.weight"], Some(&v["w_x.bias"]))
        + y.linear(&v["w_y.weight"], Some(&v["w_y.bias"]))
        + (x.matmul(w) * y).sum_dim_intlist(1, true, Kind::Double)
}
