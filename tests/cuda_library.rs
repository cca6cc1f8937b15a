//! libtorch's CUDA library is not linked into the binaries (it costs about 260 MB of resident
//! memory in every process, GPU or not) and is loaded on demand (`training::device`). Its own
//! test binary, so that no other test has loaded it first.
use std::path::Path;

fn mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .contains("libtorch_cuda.so")
}

#[test]
fn cuda_library_is_loaded_only_when_asked_for() {
    // CPU work does not load it
    let t = tch::Tensor::ones([4], (tch::Kind::Float, tch::Device::Cpu)).sum(tch::Kind::Float);
    assert_eq!(t.double_value(&[]), 4.0);
    assert_eq!(
        mlet::training::parse_device("cpu").unwrap(),
        tch::Device::Cpu
    );
    assert!(
        !mapped(),
        "libtorch_cuda.so is mapped without being asked for"
    );
    let lib_dir = option_env!("MLET_TORCH_LIB_DIR").map(Path::new);
    let cuda_build = lib_dir.is_some_and(|d| d.join("libtorch_cuda.so").exists());
    assert_eq!(mlet::training::load_cuda_library(), cuda_build);
    assert_eq!(mapped(), cuda_build);
    // with it loaded, a machine without a GPU still refuses cuda clearly
    if !Path::new("/dev/nvidiactl").exists() {
        let err = mlet::training::parse_device("cuda")
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 usable CUDA device"), "{err}");
    }
}
