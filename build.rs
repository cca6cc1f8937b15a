//! Makes the `mlet` binaries find libtorch at run time without `LD_LIBRARY_PATH`, and keeps
//! libtorch's CUDA library linked even though no symbol of it is referenced directly (otherwise
//! the linker's `--as-needed` drops it and `Cuda::is_available()` is false on a GPU machine;
//! tch-rs issues 177, 907, 980).
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
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for lib in ["torch_cuda", "torch_cpu", "torch", "c10"] {
        if Path::new(&lib_dir).join(format!("lib{lib}.so")).exists() {
            println!("cargo:rustc-link-arg=-L{lib_dir}");
            println!("cargo:rustc-link-arg=-l{lib}");
        }
    }
    // libtorch's own C++ runtime dependency, needed once its libraries are linked explicitly.
    println!("cargo:rustc-link-arg=-lstdc++");
}
