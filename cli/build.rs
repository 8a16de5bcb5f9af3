//! Stamps the binary with the git revision it was built from, for
//! `safra --version` and the `safra_build_info` metric: `SAFRA_GIT_REVISION`
//! when the build is given one (a container build without `.git`), else
//! what git says.

use std::process::Command;

fn main() {
    // An image built without .git passes the revision in (a build argument).
    println!("cargo:rerun-if-env-changed=SAFRA_GIT_REVISION");
    if let Ok(given) = std::env::var("SAFRA_GIT_REVISION")
        && !given.trim().is_empty()
    {
        println!("cargo:rustc-env=SAFRA_GIT_REVISION={}", given.trim());
        return;
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |text| text.trim().to_owned());
    println!("cargo:rustc-env=SAFRA_GIT_REVISION={revision}");
    // A path that does not exist would make cargo rerun this on every
    // build (a checkout without .git, refs packed away): name only those
    // that exist.
    for path in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
