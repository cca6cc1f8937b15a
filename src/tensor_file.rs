//! Safetensors files written straight from the tensors' memory, and read straight into it.
//! tch's `write_safetensors` (and `VarStore::save`) copies each tensor into a fresh buffer
//! before writing it, so saving a run briefly held a second copy of its largest table (and of
//! its optimizer state); here a contiguous CPU tensor is written from its own memory, and only
//! other tensors (on a GPU, or strided) are copied, one at a time. The files are the same: the
//! `safetensors` crate writes the header and the order. Loading (`VarStore::load`) read the
//! whole file into memory and made tensors of it before copying them into the variables; here
//! each variable is copied from a memory map of the file, whose pages are let go after each
//! (`load_into`; `read` does the same into fresh tensors, for the optimizer's state).
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

/// The tensor kinds safetensors files hold, with their safetensors types.
const KINDS: [(Kind, Dtype); 10] = [
    (Kind::Bool, Dtype::BOOL),
    (Kind::Uint8, Dtype::U8),
    (Kind::Int8, Dtype::I8),
    (Kind::Int16, Dtype::I16),
    (Kind::Int, Dtype::I32),
    (Kind::Int64, Dtype::I64),
    (Kind::BFloat16, Dtype::BF16),
    (Kind::Half, Dtype::F16),
    (Kind::Float, Dtype::F32),
    (Kind::Double, Dtype::F64),
];

/// The safetensors type of a tensor kind.
fn dtype_of(name: &str, kind: Kind) -> Result<Dtype> {
    match KINDS.iter().find(|(k, _)| *k == kind) {
        Some(&(_, dtype)) => Ok(dtype),
        None => anyhow::bail!("tensor {name}: {kind:?} cannot be written as safetensors"),
    }
}

/// The tensor kind of a safetensors type.
fn kind_of(name: &str, dtype: Dtype) -> Result<Kind> {
    match KINDS.iter().find(|(_, d)| *d == dtype) {
        Some(&(kind, _)) => Ok(kind),
        None => anyhow::bail!("tensor {name}: {dtype:?} has no tensor kind here"),
    }
}

impl<'a> TensorView<'a> {
    fn new(name: &str, tensor: &'a Tensor) -> Result<TensorView<'a>> {
        let dtype = dtype_of(name, tensor.kind())?;
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

/// A memory map of the safetensors file at `path`, the length of its header and its metadata.
fn map_file(path: &Path) -> Result<(memmap2::Mmap, usize, safetensors::tensor::Metadata)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the file is only read, and not expected to change while it is (the run's own files)
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    let (header, metadata) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file ({e:?})", path.display()))?;
    Ok((map, header, metadata))
}

/// Bytes of a variable copied from the file before its pages are let go.
const LOAD_PIECE_BYTES: usize = 8 << 20;

/// Copies the tensors of the safetensors file at `path` into `vars`, by name, in place: each
/// variable must be in the file with its shape and kind (what the file has beyond them is
/// ignored, as `VarStore::load` does). Holds the variables and 8 MiB of the file's pages (a
/// whole tensor's where it is not a contiguous CPU one), not the file and a tensor of each
/// beside them.
pub fn load_into<S: AsRef<str>, T: AsRef<Tensor>>(vars: &[(S, T)], path: &Path) -> Result<()> {
    copy_from_map(vars, &map_file(path)?, path)
}

/// `load_into` from the file's map, header length and metadata (`map_file`).
fn copy_from_map<S: AsRef<str>, T: AsRef<Tensor>>(
    vars: &[(S, T)],
    (map, header, metadata): &(memmap2::Mmap, usize, safetensors::tensor::Metadata),
    path: &Path,
) -> Result<()> {
    let infos = metadata.tensors();
    let data_start = 8 + header;
    for (name, var) in vars {
        let (name, var) = (name.as_ref(), var.as_ref());
        let info = infos
            .get(name)
            .with_context(|| format!("{}: no tensor {name}", path.display()))?;
        let shape: Vec<usize> = var.size().iter().map(|&n| n as usize).collect();
        if info.shape != shape || info.dtype != dtype_of(name, var.kind())? {
            anyhow::bail!(
                "{}: tensor {name} is {:?} {:?}, the model's {:?} {shape:?}",
                path.display(),
                info.dtype,
                info.shape,
                var.kind()
            );
        }
        let (start, end) = (
            data_start + info.data_offsets.0,
            data_start + info.data_offsets.1,
        );
        // the pages of what was copied leave the process (the page cache keeps them)
        // SAFETY: nothing borrows those bytes any more; a later read would fault them in
        let let_go = |from: usize, to: usize| {
            if to > from {
                unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from)
                }
                .ok();
            }
        };
        if var.device() == Device::Cpu && var.is_contiguous() {
            // in pieces, so that a table's file pages are not all resident beside it
            let dst = var.data_ptr() as *mut u8;
            for from in (start..end).step_by(LOAD_PIECE_BYTES) {
                let to = (from + LOAD_PIECE_BYTES).min(end);
                // SAFETY: a contiguous CPU tensor holds exactly `end - start` bytes (same shape
                // and kind, checked above) at `data_ptr`, which the read-only map cannot overlap
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        map[from..to].as_ptr(),
                        dst.add(from - start),
                        to - from,
                    )
                };
                let_go(from, to);
            }
        } else {
            let sizes: Vec<i64> = var.size();
            let host = Tensor::f_from_data_size(&map[start..end], &sizes, var.kind())?;
            tch::no_grad(|| var.shallow_clone().f_copy_(&host))?;
            let_go(start, end);
        }
    }
    Ok(())
}

/// Every tensor of the safetensors file at `path`, in name order, each in a fresh CPU tensor
/// (in huge pages where large: optimizer state is read at the rows a batch touches) filled by
/// `load_into`: unlike `Tensor::read_safetensors`, which reads the whole file into memory and
/// copies each tensor out of it, the file is never held beside the tensors.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let mapped = map_file(path)?;
    let (_, _, metadata) = &mapped;
    let mut tensors = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let kind = kind_of(&name, info.dtype)?;
            let shape: Vec<i64> = info.shape.iter().map(|&n| n as i64).collect();
            let tensor = crate::huge_pages::empty(&shape, (kind, Device::Cpu));
            Ok((name, tensor))
        })
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("in {}", path.display()))?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    copy_from_map(&tensors, &mapped, path)?;
    Ok(tensors)
}

/// Loads every variable of `vs` from the safetensors file at `path` (`load_into`).
pub fn load_var_store(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    load_into(&vars, path)
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
    fn load_into_restores_what_was_written_and_names_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = Tensor::randn([300, 5], (Kind::Float, Device::Cpu));
        let b = Tensor::from_slice(&[7i64, -1]);
        // larger than a piece (8 MiB) and not a multiple of it
        let big = Tensor::randn([2_500_001], (Kind::Float, Device::Cpu));
        write_safetensors(&[("a", &a), ("b", &b), ("extra", &a), ("big", &big)], &path).unwrap();
        let into_big = big.zeros_like();
        load_into(&[("big", &into_big)], &path).unwrap();
        assert!(into_big.equal(&big));
        let (into_a, into_b) = (a.zeros_like(), b.zeros_like());
        // a strided destination goes through a temporary
        let strided = Tensor::zeros([5, 300], (Kind::Float, Device::Cpu)).transpose(0, 1);
        load_into(&[("a", &into_a), ("b", &into_b), ("a", &strided)], &path).unwrap();
        assert!(into_a.equal(&a) && into_b.equal(&b) && strided.equal(&a));
        let err = |vars: &[(&str, Tensor)]| format!("{:#}", load_into(vars, &path).unwrap_err());
        assert!(err(&[("c", a.zeros_like())]).contains("no tensor c"));
        let wrong_shape = err(&[("a", Tensor::zeros([5, 300], (Kind::Float, Device::Cpu)))]);
        assert!(
            wrong_shape.contains("tensor a is F32 [300, 5]"),
            "{wrong_shape}"
        );
        assert!(err(&[("b", Tensor::zeros([2], (Kind::Int, Device::Cpu)))]).contains("tensor b"));
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(err(&[("a", a.zeros_like())]).contains("not a safetensors file"));
    }

    /// `read` gives what `Tensor::read_safetensors` gives: every tensor, of every kind and
    /// shape (empty, scalar, larger than a huge page), with its values.
    #[test]
    fn read_gives_every_tensor_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        let tensors: Vec<(&str, Tensor)> = vec![
            ("big", Tensor::randn([1 << 20], (Kind::Float, Device::Cpu))),
            ("ids", Tensor::from_slice(&[3i64, 1, 2])),
            ("empty", Tensor::zeros([0, 4], (Kind::Double, Device::Cpu))),
            ("scalar", Tensor::from(2.5f32)),
            ("flags", Tensor::from_slice(&[true, false])),
        ];
        write_safetensors(&tensors, &path).unwrap();
        let read = read(&path).unwrap();
        let names: Vec<&str> = read.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["big", "empty", "flags", "ids", "scalar"]);
        for (name, t) in &read {
            let (_, original) = tensors.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(t.kind(), original.kind(), "{name}");
            assert!(t.equal(original), "{name}");
        }
        std::fs::write(&path, b"not safetensors").unwrap();
        let err = format!("{:#}", super::read(&path).unwrap_err());
        assert!(err.contains("not a safetensors file"), "{err}");
    }

    #[test]
    fn refuses_kinds_safetensors_lacks_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu));
        let err = write_safetensors(&[("z", t)], &dir.path().join("x")).unwrap_err();
        assert!(format!("{err:#}").contains("tensor z"), "{err:#}");
    }
}
