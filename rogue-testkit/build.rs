//! Where the tests' artefacts are: the testbed XDP object rogue-user's build
//! script made (passed through its `links` metadata, so the production
//! binary does not embed it), and the `rogue` binary and the tests' scratch
//! directory of this build (in the profile's directory, three levels above
//! OUT_DIR: target/PROFILE/build/rogue-testkit-HASH/out).
fn main() {
    let testbed = std::env::var("DEP_ROGUE_BPF_TESTBED").expect("rogue-user's build script names the testbed object");
    println!("cargo::rustc-env=ROGUE_TESTBED_OBJECT={testbed}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let profile = out.ancestors().nth(3).expect("OUT_DIR is target/PROFILE/build/CRATE/out");
    println!("cargo::rustc-env=ROGUE_BINARY={}", profile.join("rogue").display());
    let target = profile.parent().expect("the profile's directory is in the target directory");
    println!("cargo::rustc-env=ROGUE_TESTS_TMPDIR={}", target.join("tmp").display());
}
