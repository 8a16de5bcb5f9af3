//! Embeds the console's built assets (`console/dist/`, made by `npm run
//! build` in `gateway/console`, which the set-up scripts run) into the
//! binary. Without a build the table is empty and `/` says how to make one.

use std::{env, error::Error, fs, path::Path};

fn main() -> Result<(), Box<dyn Error>> {
    let console = Path::new(&env::var("CARGO_MANIFEST_DIR")?).join("console");
    let dist = console.join("dist");
    // Cargo reruns a script on every build when a path it names does not
    // exist: name the dist folder only when it is there, and otherwise the
    // console folder (which always is), so that its first build is noticed.
    if dist.is_dir() {
        println!("cargo:rerun-if-changed={}", dist.display());
    } else {
        println!("cargo:rerun-if-changed={}", console.display());
    }
    let mut entries = String::from("&[\n");
    if dist.is_dir() {
        let mut files: Vec<_> = fs::read_dir(&dist)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        for file in files {
            println!("cargo:rerun-if-changed={}", file.display());
            let Some(name) = file.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            entries.push_str(&format!(
                "    ({name:?}, include_bytes!({path:?})),\n",
                path = file.display().to_string()
            ));
        }
    }
    entries.push(']');
    let out = Path::new(&env::var("OUT_DIR")?).join("console_assets.rs");
    fs::write(out, entries)?;
    Ok(())
}
