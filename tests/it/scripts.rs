//! The shell scripts' shared pieces, run as the scripts run them: the one
//! lookup of a built binary (`built_binary` in scripts/lib.sh) honours
//! CARGO_TARGET_DIR, and every script that runs a built binary goes
//! through it. Nothing is built here: the lookup only names a path.

use std::process::Command;

use super::repository_root;

/// What `built_binary <args>` prints in the repository root, with
/// CARGO_TARGET_DIR set to `target_dir` (or unset).
fn built_binary(target_dir: Option<&str>, args: &str) -> String {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!(". scripts/lib.sh && built_binary {args}"))
        .current_dir(repository_root())
        .env_remove("CARGO_TARGET_DIR");
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    let output = command.output().expect("bash runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("a path")
        .trim_end()
        .to_owned()
}

#[test]
fn the_built_binary_is_found_in_the_target_directory_in_use() {
    let root = repository_root();
    assert_eq!(
        built_binary(None, "debug"),
        root.join("target/debug/safra").display().to_string()
    );
    assert_eq!(
        built_binary(Some("/var/cache/safra-target"), "release"),
        "/var/cache/safra-target/release/safra"
    );
    // Relative, as cargo reads it: from where it runs (the repository root).
    assert_eq!(
        built_binary(Some("out"), "release safra-bench"),
        root.join("out/release/safra-bench").display().to_string()
    );
}

#[test]
fn scripts_run_built_binaries_only_through_the_shared_lookup() {
    let root = repository_root();
    for script in [
        "scripts/up",
        "scripts/test",
        "bench/lib.sh",
        "bench/peer.sh",
    ] {
        let Ok(text) = std::fs::read_to_string(root.join(script)) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or_default();
            assert!(
                !code.contains("target/debug") && !code.contains("target/release"),
                "{script}:{}: a hard-coded target directory; use built_binary from scripts/lib.sh",
                number + 1
            );
        }
    }
}
