//! `--device auto|cpu|cuda[:N]`, and libtorch's CUDA library, loaded only where it can be used.
//!
//! The binaries do not link `libtorch_cuda.so` (see build.rs): with its CUDA dependencies it
//! takes about 260 MB of resident memory in every process. It registers libtorch's CUDA
//! support when loaded, which must happen before libtorch is first asked about CUDA (it
//! remembers the answer): `main` loads it at start where an NVIDIA driver is present, and
//! `parse_device` for `auto` and `cuda` in any case.
use anyhow::{bail, Result};
use std::sync::OnceLock;
use tch::{Cuda, Device};

/// Loads `libtorch_cuda.so` (once; later calls return the first result). Whether it loaded:
/// not with a CPU-only libtorch.
pub fn load_cuda_library() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let in_lib_dir = option_env!("MLET_TORCH_LIB_DIR")
            .map(|dir| format!("{dir}/libtorch_cuda.so"))
            .into_iter();
        // by name too: the rpath, LD_LIBRARY_PATH or an already loaded copy
        in_lib_dir
            .chain(["libtorch_cuda.so".to_string()])
            .any(|path| {
                let Ok(path) = std::ffi::CString::new(path) else {
                    return false;
                };
                // SAFETY: a NUL-terminated path; the handle is kept for the process's life
                let handle =
                    unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
                !handle.is_null()
            })
    })
}

/// Loads libtorch's CUDA library if this machine has an NVIDIA driver (`/dev/nvidiactl` or
/// `/proc/driver/nvidia`); call before anything else touches libtorch. Returns whether it did.
pub fn load_cuda_library_if_driver() -> bool {
    let driver = ["/dev/nvidiactl", "/proc/driver/nvidia"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    driver && load_cuda_library()
}

pub fn parse_device(spec: &str) -> Result<Device> {
    if spec != "cpu" {
        load_cuda_library();
    }
    let cuda_count = || {
        if Cuda::is_available() {
            Cuda::device_count()
        } else {
            0
        }
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => parse_device("cuda:0"),
        s if s.starts_with("cuda:") => {
            let Ok(n) = s["cuda:".len()..].parse::<usize>() else {
                bail!("device `{s}`: expected cuda:N with N a GPU number");
            };
            let count = cuda_count() as usize;
            if n >= count {
                bail!(
                    "device `{s}` was requested but libtorch sees {count} usable CUDA device(s) \
                     (a CPU-only libtorch, no driver, or CUDA_VISIBLE_DEVICES hiding them)"
                );
            }
            Ok(Device::Cuda(n))
        }
        s => bail!("device `{s}`: expected auto, cpu, cuda or cuda:N"),
    }
}

pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
