//! The chaos demo, small: 30 orders while a worker and the Kairos server are SIGKILLed and
//! restarted on the same database; the audit must pass. Runs the `pizza` and `kairos`
//! binaries cargo built for this test run.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn thirty_orders_survive_a_worker_and_a_server_sigkill() {
    let pizza = PathBuf::from(env!("CARGO_BIN_EXE_pizza"));
    let kairos = pizza.parent().expect("target dir").join("kairos");
    assert!(
        kairos.is_file(),
        "the kairos binary is built by `cargo test --workspace` beside {}",
        pizza.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(&pizza)
        .args(["chaos", "--orders", "30", "--deadline-secs", "180"])
        .arg("--kairos-bin")
        .arg(&kairos)
        .arg("--workdir")
        .arg(dir.path())
        .args(["--kairos-port", &free_port().to_string()])
        .args(["--sim-port", &free_port().to_string()])
        .output()
        .expect("pizza chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("chaos.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "chaos failed:\n{stdout}\n{}\n--- log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.chars()
            .rev()
            .take(4000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    assert!(stdout.contains("worker SIGKILL"), "{stdout}");
    assert!(stdout.contains("server SIGKILL"), "{stdout}");
    assert!(
        stdout.contains("Audit: every order reached a final state"),
        "{stdout}"
    );
    assert!(!stdout.contains("stuck"), "{stdout}");
}
