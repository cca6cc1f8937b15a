//! `--device auto|cpu|cuda[:N]`.
use anyhow::{bail, Result};
use tch::{Cuda, Device};

pub fn parse_device(spec: &str) -> Result<Device> {
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
