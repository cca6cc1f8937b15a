//! Makes the `mlet` binaries find libtorch at run time without `LD_LIBRARY_PATH`. libtorch's CUDA
//! library (`libtorch_cuda.so`, and `libtorch.so`, which only pulls it in) is deliberately not
//! linked: loading it with its CUDA dependencies costs about 260 MB of resident memory in every
//! process, GPU or not. `training::device` loads it at run time where a GPU driver is present,
//! before libtorch is asked about CUDA (without it `Cuda::is_available()` is false on a GPU
//! machine; tch-rs issues 177, 907, 980), from the directory recorded here.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    // Recorded in every run directory, so a result can be traced to the code that made it.
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLET_GIT_COMMIT={commit}");
    let torch_version = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| std::fs::read_to_string(Path::new(&lib).join("../version.py")).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLET_TORCH_VERSION={torch_version}");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-env=MLET_TORCH_LIB_DIR={lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for lib in ["torch_cpu", "c10"] {
        if Path::new(&lib_dir).join(format!("lib{lib}.so")).exists() {
            println!("cargo:rustc-link-arg=-L{lib_dir}");
            println!("cargo:rustc-link-arg=-l{lib}");
        }
    }
    // libtorch's own C++ runtime dependency, needed once its libraries are linked explicitly.
    println!("cargo:rustc-link-arg=-lstdc++");
}
