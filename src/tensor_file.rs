//! Safetensors files written straight from the tensors' memory. tch's `write_safetensors` (and
//! `VarStore::save`) copies each tensor into a fresh buffer before writing it, so saving a run
//! briefly held a second copy of its largest table (and of its optimizer state); here a
//! contiguous CPU tensor is written from its own memory, and only other tensors (on a GPU, or
//! strided) are copied, one at a time. The files are the same: the `safetensors` crate writes
//! the header and the order.
use anyhow::{Context, Result};
use safetensors::tensor::{Dtype, View};
use std::borrow::Cow;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A tensor as the `safetensors` crate sees it.
struct TensorView<'a> {
    tensor: &'a Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl<'a> TensorView<'a> {
    fn new(name: &str, tensor: &'a Tensor) -> Result<TensorView<'a>> {
        let dtype = match tensor.kind() {
            Kind::Bool => Dtype::BOOL,
            Kind::Uint8 => Dtype::U8,
            Kind::Int8 => Dtype::I8,
            Kind::Int16 => Dtype::I16,
            Kind::Int => Dtype::I32,
            Kind::Int64 => Dtype::I64,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Half => Dtype::F16,
            Kind::Float => Dtype::F32,
            Kind::Double => Dtype::F64,
            kind => anyhow::bail!("tensor {name}: {kind:?} cannot be written as safetensors"),
        };
        let shape = tensor.size().iter().map(|&n| n as usize).collect();
        Ok(TensorView {
            tensor,
            dtype,
            shape,
        })
    }

    /// Whether the tensor's memory is its data in row-major order on the host.
    fn borrowable(&self) -> bool {
        self.tensor.device() == Device::Cpu && self.tensor.is_contiguous()
    }
}

impl View for TensorView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let len = self.data_len();
        if len == 0 {
            return Cow::Borrowed(&[]);
        }
        if self.borrowable() {
            // SAFETY: a contiguous CPU tensor holds `len` bytes of its data at `data_ptr`; the
            // borrow of `self.tensor` keeps it alive and the caller only reads while writing.
            let bytes =
                unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, len) };
            return Cow::Borrowed(bytes);
        }
        let host = self.tensor.to_device(Device::Cpu).contiguous();
        let mut data = vec![0u8; len];
        host.copy_data_u8(&mut data, host.numel());
        Cow::Owned(data)
    }

    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

/// Writes `tensors` as a safetensors file at `path` (what `Tensor::write_safetensors` writes),
/// without copying contiguous CPU tensors.
pub fn write_safetensors<S: AsRef<str>, T: AsRef<Tensor>>(
    tensors: &[(S, T)],
    path: &Path,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_ref(), TensorView::new(name.as_ref(), t.as_ref())?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize_to_file(views, &None, path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes every variable of `vs` (what `VarStore::save` writes for a `.safetensors` path).
pub fn save_var_store(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    write_safetensors(&vars, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_as_tch_for_contiguous_strided_and_empty_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let table = Tensor::randn([1000, 7], (Kind::Float, Device::Cpu));
        let tensors: Vec<(&str, Tensor)> = vec![
            ("table", table.shallow_clone()),
            ("strided", table.transpose(0, 1)),
            ("slice", table.narrow(0, 10, 5)),
            ("ids", Tensor::from_slice(&[3i64, 1, 2])),
            ("empty", Tensor::zeros([0, 4], (Kind::Double, Device::Cpu))),
            ("scalar", Tensor::from(2.5f32)),
        ];
        let (ours, theirs) = (dir.path().join("a.safetensors"), dir.path().join("b"));
        write_safetensors(&tensors, &ours).unwrap();
        let contiguous: Vec<(&str, Tensor)> =
            tensors.iter().map(|(n, t)| (*n, t.contiguous())).collect();
        Tensor::write_safetensors(&contiguous, &theirs).unwrap();
        assert_eq!(
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap()
        );
        for (name, t) in Tensor::read_safetensors(&ours).unwrap() {
            let (_, original) = tensors.iter().find(|(n, _)| *n == name).unwrap();
            assert!(t.equal(original), "{name}");
        }
    }

    #[test]
    fn refuses_kinds_safetensors_lacks_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu));
        let err = write_safetensors(&[("z", t)], &dir.path().join("x")).unwrap_err();
        assert!(format!("{err:#}").contains("tensor z"), "{err:#}");
    }
}
