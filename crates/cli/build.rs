//! Link settings of the `kairos` binary.

fn main() {
    // A position-dependent executable: the loader has no relative relocations to apply at each
    // start (14 000 of them, which wrote to 60 pages of the binary's data), 0.2 ms of the
    // 2 ms from exec to main. Go, which the reference server is written in, links this way by
    // default; the cost is that the binary's own code is not placed at a random address.
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
