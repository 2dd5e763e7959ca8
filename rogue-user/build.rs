//! Builds the XDP programs (rogue-ebpf) with the nightly toolchain and puts
//! the objects in OUT_DIR, where `capture::xdp` embeds the meter (and
//! rogue-testkit, told the path, the testbed). `cargo xtask
//! setup` installs what this needs (rust-src for nightly, bpf-linker).
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("rogue-user has no parent directory"))?
        .join("rogue-ebpf");
    let root = root.to_str().context("rogue-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "rogue-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)")?;
    // The testbed (reference programs, the traffic generator) is for tests
    // and benchmarks: rogue-testkit embeds it, the rogue binary does not.
    let out = std::env::var("OUT_DIR").context("cargo sets OUT_DIR")?;
    println!("cargo::rustc-env=ROGUE_COMMIT={}", commit());
    println!("cargo::metadata=testbed={out}/rogue-testbed");
    Ok(())
}

/// The commit the build is of (`rogue_build_info`), `unknown` outside a git
/// checkout. Rebuilt when HEAD moves.
fn commit() -> String {
    let git = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git");
    println!("cargo::rerun-if-changed={}", git.join("HEAD").display());
    let head = std::fs::read_to_string(git.join("HEAD")).unwrap_or_default();
    if let Some(reference) = head.trim().strip_prefix("ref: ") {
        println!("cargo::rerun-if-changed={}", git.join(reference).display());
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
