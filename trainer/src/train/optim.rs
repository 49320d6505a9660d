//! AdamW with global-norm gradient clipping, gradient accumulation and a saveable state.
//!
//! candle-nn has an AdamW, but its moments are private, so a resumed run could not continue with
//! the same optimizer state; this one keeps them in tensors that are saved with the checkpoint.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Result, TrainerError};

/// AdamW hyper-parameters (the reference's HF defaults).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Summed gradients of several micro-batches, by variable name.
#[derive(Default)]
pub struct GradAccumulator {
    sums: HashMap<String, Tensor>,
}

impl GradAccumulator {
    /// Add one backward pass's gradients of `vars`.
    pub fn add(&mut self, vars: &[(String, Var)], grads: &GradStore) -> Result<()> {
        for (name, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let sum = match self.sums.remove(name) {
                Some(s) => (s + g)?,
                None => g,
            };
            self.sums.insert(name.clone(), sum);
        }
        Ok(())
    }

    /// True when nothing has been added since the last step.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }
}

/// One variable's gradient: on the host for the fused update, else a tensor.
enum Grad {
    Host(Vec<f32>),
    Tensor(Tensor),
}

/// AdamW over the variables of a `VarMap`, in name order.
pub struct AdamW {
    cfg: AdamWConfig,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Per-variable `[rows, 1]` 0/1 masks: only rows with 1 are updated (`--freeze-llm`).
    row_masks: Vec<Option<Tensor>>,
    /// Per-variable factor on the learning rate (1 unless [`AdamW::scale_lr`] set one).
    lr_scales: Vec<f64>,
    step: usize,
}

/// The variables of `varmap` sorted by name.
pub fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainerError::Invalid("VarMap lock poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

impl AdamW {
    /// An optimizer over `vars` with zero moments.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v2 = m.clone();
        let row_masks = vec![None; vars.len()];
        let lr_scales = vec![1.0; vars.len()];
        Ok(Self {
            cfg,
            vars,
            m,
            v: v2,
            row_masks,
            lr_scales,
            step: 0,
        })
    }

    /// Restrict the updates of variable `name` (a matrix) to `rows`: every other row keeps its
    /// exact value (no gradient, no moment, no weight decay reaches it).
    pub fn train_only_rows(&mut self, name: &str, rows: &[u32]) -> Result<()> {
        let i = self.var_index(name, "mask")?;
        let var = self.vars[i].1.as_tensor();
        let n = var.dim(0)?;
        let mut mask = vec![0f32; n];
        for &r in rows {
            let slot = mask.get_mut(r as usize).ok_or_else(|| {
                TrainerError::Invalid(format!("row {r} is outside `{name}` ({n} rows)"))
            })?;
            *slot = 1.0;
        }
        let mask = Tensor::from_vec(mask, (n, 1), var.device())?.to_dtype(var.dtype())?;
        self.row_masks[i] = Some(mask);
        Ok(())
    }

    /// Multiply the learning rate of variable `name` by `factor` (its update and its weight
    /// decay, as a parameter group of its own).
    pub fn scale_lr(&mut self, name: &str, factor: f64) -> Result<()> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(TrainerError::Invalid(format!(
                "learning-rate factor {factor} of `{name}` is not a positive finite number"
            )));
        }
        let i = self.var_index(name, "scale")?;
        self.lr_scales[i] = factor;
        Ok(())
    }

    /// Position of variable `name`, or an error naming what it was wanted for (`to {purpose}`).
    fn var_index(&self, name: &str, purpose: &str) -> Result<usize> {
        self.vars
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| TrainerError::Invalid(format!("no variable `{name}` to {purpose}")))
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// The variables being optimized.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update from accumulated gradients, clipped to global L2 norm `clip` (if any).
    /// Returns the gradient norm before clipping.
    ///
    /// f32 CPU variables without a row mask take a fused path: one pass over each variable's
    /// gradient, moments and weights instead of a dozen tensor ops (same arithmetic, in f32).
    pub fn step(&mut self, acc: &mut GradAccumulator, lr: f64, clip: Option<f64>) -> Result<f64> {
        let grads: Vec<Option<Grad>> = self
            .vars
            .iter()
            .zip(&self.row_masks)
            .map(|((name, var), mask)| match (acc.sums.remove(name), mask) {
                (Some(g), Some(mask)) => Ok(Some(Grad::Tensor(g.broadcast_mul(mask)?))),
                (Some(g), None) if sidrec::model::kernels::applies(var.as_tensor()) => {
                    Ok(Some(Grad::Host(g.flatten_all()?.to_vec1::<f32>()?)))
                }
                (g, _) => Ok(g.map(Grad::Tensor)),
            })
            .collect::<candle_core::Result<_>>()?;
        acc.sums.clear();
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += match g {
                Grad::Host(g) => g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>(),
                Grad::Tensor(g) => g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?,
            };
        }
        let norm = sq.sqrt();
        let scale = match clip {
            Some(c) if norm > c && norm > 0.0 => c / norm,
            _ => 1.0,
        };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let base_lr = lr;
        for (i, g) in grads.into_iter().enumerate() {
            let lr = base_lr * self.lr_scales[i];
            let var = &self.vars[i].1;
            let theta = var.as_tensor();
            match g {
                None => continue,
                Some(Grad::Host(g)) => {
                    let shape = theta.shape().clone();
                    let mut w = theta.flatten_all()?.to_vec1::<f32>()?;
                    let mut m = self.m[i].flatten_all()?.to_vec1::<f32>()?;
                    let mut v = self.v[i].flatten_all()?.to_vec1::<f32>()?;
                    let (b1, b2, sc) = (b1 as f32, b2 as f32, scale as f32);
                    let (lr_bc1, bc2) = ((lr / bc1) as f32, bc2 as f32);
                    let (eps, decay) = (self.cfg.eps as f32, (lr * self.cfg.weight_decay) as f32);
                    for j in 0..w.len() {
                        let g = g[j] * sc;
                        m[j] = b1 * m[j] + (1.0 - b1) * g;
                        v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                        let update = lr_bc1 * m[j] / ((v[j] / bc2).sqrt() + eps);
                        w[j] -= update + decay * w[j];
                    }
                    let dev = theta.device();
                    var.set(&Tensor::from_vec(w, &shape, dev)?)?;
                    self.m[i] = Tensor::from_vec(m, &shape, dev)?;
                    self.v[i] = Tensor::from_vec(v, &shape, dev)?;
                }
                Some(Grad::Tensor(g)) => {
                    let g = (g * scale)?;
                    let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
                    let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.cfg.eps)?)?;
                    let delta = ((update * lr)? + (theta * (lr * self.cfg.weight_decay))?)?;
                    let delta = match &self.row_masks[i] {
                        Some(mask) => delta.broadcast_mul(mask)?,
                        None => delta,
                    };
                    var.set(&(theta - delta)?)?;
                    self.m[i] = m;
                    self.v[i] = v;
                }
            }
        }
        Ok(norm)
    }

    /// The moments and the step count as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            map.insert(format!("m.{name}"), self.m[i].clone());
            map.insert(format!("v.{name}"), self.v[i].clone());
        }
        map.insert(
            "step".into(),
            Tensor::new(&[self.step as u32], &Device::Cpu)?,
        );
        safetensors_bytes(&map)
    }

    /// Save [`AdamW::to_bytes`] to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        sidrec::io::write_bytes_atomic(path, &self.to_bytes()?)?;
        Ok(())
    }

    /// Restore moments and step count saved by [`AdamW::save`].
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let map = candle_core::safetensors::load(path, &device)
            .map_err(|e| TrainerError::Invalid(format!("{}: {e}", path.display())))?;
        for (i, (name, _)) in self.vars.iter().enumerate() {
            let get = |k: String| {
                map.get(&k).cloned().ok_or_else(|| {
                    TrainerError::Invalid(format!("{}: no tensor {k}", path.display()))
                })
            };
            self.m[i] = get(format!("m.{name}"))?;
            self.v[i] = get(format!("v.{name}"))?;
        }
        let step = map
            .get("step")
            .ok_or_else(|| TrainerError::Invalid(format!("{}: no step", path.display())))?;
        self.step = step.to_vec1::<u32>()?.first().copied().unwrap_or(0) as usize;
        Ok(())
    }
}

fn safetensors_bytes(map: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut items: Vec<(&String, &Tensor)> = map.iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let owned: Vec<(String, Tensor)> = items
        .into_iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(owned.iter().map(|(k, t)| (k.as_str(), t)), None)
        .map_err(|e| TrainerError::Invalid(format!("serialising optimizer state: {e}")))
}

/// Learning rate at optimizer step `step` (0-based): linear warmup, then linear or cosine decay
/// to zero at `total` steps (the reference uses HF's linear schedule with 20 warmup steps).
pub fn learning_rate(base: f64, step: usize, warmup: usize, total: usize, cosine: bool) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    if cosine {
        base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    } else {
        base * (1.0 - progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_shapes() {
        assert!((learning_rate(1.0, 0, 4, 10, false) - 0.25).abs() < 1e-12);
        assert!((learning_rate(1.0, 3, 4, 10, false) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 7, 4, 10, false) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, 10, 4, 10, true).abs() < 1e-12);
        assert!((learning_rate(1.0, 7, 4, 10, true) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn fused_update_equals_the_tensor_op_update() {
        // A row mask over every row sends a variable down the tensor-op path: both paths must
        // then give the same weights and moments, clipping and weight decay included.
        let make = || {
            let varmap = VarMap::new();
            varmap
                .get(
                    (3, 4),
                    "w",
                    candle_nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                    DType::F32,
                    &Device::Cpu,
                )
                .unwrap();
            let w = sorted_vars(&varmap).unwrap()[0].1.clone();
            (varmap, w)
        };
        let (vm_a, wa) = make();
        let (vm_b, wb) = make();
        wb.set(wa.as_tensor()).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut fused = AdamW::new(sorted_vars(&vm_a).unwrap(), cfg).unwrap();
        let mut plain = AdamW::new(sorted_vars(&vm_b).unwrap(), cfg).unwrap();
        plain.train_only_rows("w", &[0, 1, 2]).unwrap();
        for step in 0..5 {
            let mut norms = Vec::new();
            for (opt, w) in [(&mut fused, &wa), (&mut plain, &wb)] {
                let loss = (w.sqr().unwrap().sum_all().unwrap() * (step + 1) as f64).unwrap();
                let mut acc = GradAccumulator::default();
                acc.add(opt.vars(), &loss.backward().unwrap()).unwrap();
                norms.push(opt.step(&mut acc, 0.1, Some(1.0)).unwrap());
            }
            assert!((norms[0] - norms[1]).abs() < 1e-4 * norms[1], "{norms:?}");
        }
        let diff = sidrec::testing::max_abs_diff;
        assert!(diff(wa.as_tensor(), wb.as_tensor()) < 1e-5);
        assert!(diff(&fused.m[0], &plain.m[0]) < 1e-5);
        assert!(diff(&fused.v[0], &plain.v[0]) < 1e-5);
        // The weights did move.
        assert!(
            diff(
                wa.as_tensor(),
                &Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap()
            ) > 0.0
        );
    }

    #[test]
    fn a_scaled_variable_moves_by_its_factor_on_both_update_paths() {
        let varmap = VarMap::new();
        for name in ["a", "b", "c"] {
            varmap
                .get(
                    (2, 3),
                    name,
                    candle_nn::Init::Const(1.0),
                    DType::F32,
                    &Device::Cpu,
                )
                .unwrap();
        }
        let vars = sorted_vars(&varmap).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(vars.clone(), cfg).unwrap();
        opt.scale_lr("b", 3.0).unwrap();
        opt.scale_lr("c", 3.0).unwrap();
        // `c` takes the tensor-op path (a row mask over every row), `a` and `b` the fused one.
        opt.train_only_rows("c", &[0, 1]).unwrap();
        for err in [opt.scale_lr("d", 2.0), opt.scale_lr("a", 0.0)] {
            assert!(err.is_err());
        }
        let before: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let mut acc = GradAccumulator::default();
        let loss = vars
            .iter()
            .map(|(_, v)| v.as_tensor().sqr().unwrap().sum_all().unwrap())
            .reduce(|x, y| (x + y).unwrap())
            .unwrap();
        acc.add(&vars, &loss.backward().unwrap()).unwrap();
        opt.step(&mut acc, 0.01, None).unwrap();
        let moved: Vec<f32> = vars
            .iter()
            .zip(&before)
            .map(|((_, v), b)| {
                b[0] - v
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()[0]
            })
            .collect();
        assert!(moved[0] > 0.0, "{moved:?}");
        for scaled in [moved[1], moved[2]] {
            assert!((scaled - 3.0 * moved[0]).abs() < 1e-5, "{moved:?}");
        }
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_clips() {
        let varmap = VarMap::new();
        let x = varmap
            .get(
                (2,),
                "x",
                candle_nn::Init::Const(3.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let vars = sorted_vars(&varmap).unwrap();
        let mut opt = AdamW::new(vars.clone(), AdamWConfig::default()).unwrap();
        let mut acc = GradAccumulator::default();
        for _ in 0..300 {
            let loss = x.sqr().unwrap().sum_all().unwrap();
            acc.add(&vars, &loss.backward().unwrap()).unwrap();
            let norm = opt.step(&mut acc, 0.05, Some(0.5)).unwrap();
            assert!(norm >= 0.0);
        }
        let v = vars[0].1.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.abs() < 0.05), "{v:?}");
        let dir = tempfile::tempdir().unwrap();
        opt.save(&dir.path().join("o.safetensors")).unwrap();
        let mut back = AdamW::new(vars, AdamWConfig::default()).unwrap();
        back.load(&dir.path().join("o.safetensors")).unwrap();
        assert_eq!(back.steps(), 300);
        assert_eq!(
            back.m[0].to_vec1::<f32>().unwrap(),
            opt.m[0].to_vec1::<f32>().unwrap()
        );
    }
}
