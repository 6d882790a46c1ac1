//! Passes the optimisation level this build is compiled at to the program, which names an
//! unoptimised build where it trains and times (its speed means nothing there).
fn main() {
    let level = std::env::var("OPT_LEVEL").unwrap_or_default();
    println!("cargo:rustc-env=TRAIN_OPT_LEVEL={level}");
    println!("cargo:rerun-if-changed=build.rs");
}
