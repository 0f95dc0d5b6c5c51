//! Link settings of the `kairos` binary.

fn main() {
    // A position-dependent executable on Linux: the loader has no relative relocations to apply
    // at each start (14 000 of them, which wrote to 60 pages of the binary's data), 0.2 ms of
    // the 2 ms from exec to main. Go, which the reference server is written in, links this way
    // by default; the cost is that the binary's own code is not placed at a random address.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
