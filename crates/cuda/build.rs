//! With the `cuda` feature: compiles `kernels/*.cu` with nvcc into PTX (compute_80, what a
//! newer GPU JIT-compiles) and cubins for sm_80, sm_86, sm_89 and sm_90 (A100, A10G,
//! L4/L40S, H100/H200; `ptxas` runs here, so register or syntax errors fail the build, not
//! a job), embedded into the crate; and the per-element arithmetic (`kernels/host_check.cu`,
//! compiled by nvcc as host C++) into a static library the tests run against the Rust
//! references. No GPU is needed: nvcc from PyPI works (`scripts/cuda-toolchain.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

const MODULES: &[&str] = &["quantize", "matmul"];
const ARCHS: &[u32] = &[80, 86, 89, 90];

fn main() {
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    println!("cargo:rerun-if-changed={}", kernels.display());
    for var in ["NVCC", "CUDA_HOME", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = find_nvcc();
    let mut jobs: Vec<(Vec<String>, PathBuf)> = Vec::new();
    let mut consts = String::new();
    for m in MODULES {
        let src = kernels.join(format!("{m}.cu"));
        let ptx = out.join(format!("{m}.ptx"));
        jobs.push((args(&["-ptx", "-arch=compute_80"], &src, &ptx), ptx.clone()));
        consts.push_str(&format!(
            "pub const {}_PTX: &str = include_str!({:?});\n",
            m.to_uppercase(),
            ptx
        ));
        let mut cubins = Vec::new();
        for a in ARCHS {
            let cubin = out.join(format!("{m}.sm_{a}.cubin"));
            jobs.push((
                args(&["-cubin", &format!("-arch=sm_{a}")], &src, &cubin),
                cubin.clone(),
            ));
            cubins.push(format!("({a}, include_bytes!({cubin:?}))"));
        }
        consts.push_str(&format!(
            "pub const {}_CUBINS: &[(u32, &[u8])] = &[{}];\n",
            m.to_uppercase(),
            cubins.join(", ")
        ));
    }
    let host_obj = out.join("host_check.o");
    jobs.push((
        args(
            &["-x", "c++", "-c", "-Xcompiler", "-fPIC"],
            &kernels.join("host_check.cu"),
            &host_obj,
        ),
        host_obj.clone(),
    ));
    // Two at a time: CI machines have two cores, and each nvcc call is under a second.
    for pair in jobs.chunks(2) {
        let running: Vec<_> = pair
            .iter()
            .map(|(a, target)| {
                let child = Command::new(&nvcc)
                    .args(a)
                    .spawn()
                    .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
                (child, a, target)
            })
            .collect();
        for (mut child, a, target) in running {
            let status = child.wait().expect("nvcc runs");
            assert!(
                status.success() && target.is_file(),
                "nvcc {} failed ({status}); its messages are above",
                a.join(" ")
            );
        }
    }
    let lib = out.join("libtemper_cuda_host.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new("ar")
        .arg("crs")
        .arg(&lib)
        .arg(&host_obj)
        .status()
        .expect("ar (binutils) runs");
    assert!(
        status.success(),
        "ar failed to archive {}",
        host_obj.display()
    );
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=temper_cuda_host");
    std::fs::write(out.join("kernels.rs"), consts).expect("OUT_DIR is writable");
}

fn args(flags: &[&str], src: &Path, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    // No fast-math: the kernels must round exactly as the CPU references do.
    a.extend(["-O3".into(), "-std=c++17".into(), "-o".into()]);
    a.push(out.display().to_string());
    a.push(src.display().to_string());
    a
}

/// `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on `PATH`.
fn find_nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin/nvcc");
        if p.is_file() {
            return p;
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nvcc"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "the `cuda` feature compiles kernels/*.cu with nvcc, which was not found (NVCC, \
             CUDA_HOME/bin or PATH). Install it without a GPU: `bash scripts/cuda-toolchain.sh` \
             (nvcc from PyPI), then `export CUDA_HOME=... PATH=$CUDA_HOME/bin:$PATH` as it prints"
        )
    })
}
