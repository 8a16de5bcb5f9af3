//! The invariants of docs/ARCHITECTURE.md, enforced: every Rust file says
//! what it is for, the layers of a service stay apart, services never share
//! a database or know REST, and the dependency tree stays lean and safe.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use super::repository_root;

/// Folders holding the project's own Rust code.
const RUST_ROOTS: [&str; 8] = [
    "src",
    "build.rs",
    "cli",
    "gateway",
    "services",
    "test-support",
    "tests",
    "bench",
];

fn rust_files() -> Vec<PathBuf> {
    let root = repository_root();
    let mut files = Vec::new();
    for entry in RUST_ROOTS {
        collect(&root.join(entry), &mut files);
    }
    files.sort();
    files
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_file() {
        if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path.to_path_buf());
        }
        return;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let skip = path
            .file_name()
            .is_some_and(|name| name == "target" || name == "node_modules");
        if !skip {
            collect(&path, files);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repository_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_rust_file_opens_with_a_module_comment() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            let first = text
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! comment: {missing:?}"
    );
}

#[test]
fn domain_modules_name_neither_transport_nor_storage() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "domain.rs"))
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            ["tonic", "prost", "diesel"]
                .iter()
                .any(|word| text.contains(word))
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        offenders.is_empty(),
        "domain.rs naming tonic, prost or diesel: {offenders:?}"
    );
}

#[test]
fn only_the_store_touches_the_database_in_a_service() {
    // lib.rs embeds the migrations; schema.rs is diesel's table definitions.
    let allowed = ["store.rs", "schema.rs", "lib.rs"];
    let offenders: Vec<String> = rust_files()
        .into_iter()
        // Service code, not its tests (which may inspect the database).
        .filter(|path| relative(path).starts_with("services/") && relative(path).contains("/src/"))
        .filter(|path| {
            !path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| allowed.contains(&name))
        })
        .filter(|path| {
            fs::read_to_string(path)
                .unwrap_or_default()
                .contains("diesel")
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        offenders.is_empty(),
        "service files other than store.rs using diesel: {offenders:?}"
    );
}

#[test]
fn inside_a_service_api_uses_store_and_domain_and_store_uses_only_domain() {
    // Which modules of its own crate each file may name: api.rs may use
    // both others; store.rs only the domain (its error enum included);
    // domain.rs neither.
    let forbidden: [(&str, &[&str]); 2] = [
        ("store.rs", &["crate::api", "api::"]),
        (
            "domain.rs",
            &["crate::api", "crate::store", "api::", "store::"],
        ),
    ];
    let mut offenders = Vec::new();
    for path in rust_files()
        .into_iter()
        .filter(|path| relative(path).starts_with("services/") && relative(path).contains("/src/"))
    {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let text = fs::read_to_string(&path).unwrap_or_default();
        for (file, names) in forbidden {
            if name == file {
                for used in names.iter().filter(|used| {
                    text.lines()
                        .filter(|line| !line.trim_start().starts_with("//"))
                        .any(|line| line.contains(**used))
                }) {
                    offenders.push(format!("{} names {used}", relative(&path)));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "import circles in services: {offenders:?}"
    );
}

/// The unit of the library a file belongs to: its module, or for the
/// files of a folder module (`transport/client/retry.rs`) that module, and
/// inside a group folder the group's module (`contract::gate`).
fn library_unit(inside: &Path) -> String {
    let parts: Vec<String> = inside
        .with_extension("")
        .components()
        .filter_map(|part| part.as_os_str().to_str().map(str::to_owned))
        .collect();
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|part| *part != "mod")
        .collect();
    let depth = if LIBRARY_GROUPS.contains(&parts[0]) {
        2
    } else {
        1
    };
    parts[..parts.len().min(depth)].join("::")
}

/// Folders of the library that group modules by concern.
const LIBRARY_GROUPS: [&str; 5] = ["contract", "identity", "transport", "observability", "data"];

/// Every `crate::` path a file names, `use` trees expanded
/// (`use crate::{a::{b, c}}` names `a::b` and `a::c`).
fn crate_paths(text: &str) -> Vec<String> {
    fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let head = tree[..open].trim().trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let base = [prefix, head]
                .iter()
                .filter(|part| !part.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("::");
            let mut depth = 0;
            let mut start = 0;
            for (index, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&base, &inner[start..index], out);
                        start = index + 1;
                    }
                    _ => {}
                }
            }
            expand(&base, &inner[start..], out);
        } else if !tree.is_empty() {
            let leaf = tree.split(" as ").next().unwrap_or(tree).trim();
            out.push(if prefix.is_empty() {
                leaf.to_owned()
            } else {
                format!("{prefix}::{leaf}")
            });
        }
    }
    let mut paths = Vec::new();
    let statements = regex::Regex::new(r"(?s)use crate::(.*?);").expect("regex");
    for statement in statements.captures_iter(text) {
        expand("", &statement[1], &mut paths);
    }
    let inline = regex::Regex::new(r"crate::((?:[a-z_]+::)*[a-z_]+)").expect("regex");
    paths.extend(
        inline
            .captures_iter(text)
            .map(|capture| capture[1].to_owned()),
    );
    paths
}

/// The library units each unit names.
fn library_module_uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = repository_root().join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let units: BTreeSet<String> = files
        .iter()
        .filter_map(|file| file.strip_prefix(&src).ok())
        .filter(|inside| *inside != Path::new("lib.rs"))
        .map(library_unit)
        .collect();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Ok(inside) = file.strip_prefix(&src) else {
            continue;
        };
        if inside == Path::new("lib.rs") {
            continue;
        }
        let unit = library_unit(inside);
        let text = fs::read_to_string(file).unwrap_or_default();
        let named: BTreeSet<String> = crate_paths(&text)
            .into_iter()
            .filter_map(|path| {
                // The longest unit the path starts with.
                units
                    .iter()
                    .filter(|candidate| {
                        path == **candidate || path.starts_with(&format!("{candidate}::"))
                    })
                    .max_by_key(|candidate| candidate.len())
                    .cloned()
            })
            .filter(|named| *named != unit)
            .collect();
        uses.entry(unit).or_default().extend(named);
    }
    uses
}

#[test]
fn the_librarys_modules_form_no_import_circle() {
    let uses = library_module_uses();
    let mut circles = Vec::new();
    for start in uses.keys() {
        // Depth-first from each module, back to itself.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((module, path)) = stack.pop() {
            for next in uses.get(&module).into_iter().flatten() {
                if next == start {
                    circles.push(format!("{} -> {start}", path.join(" -> ")));
                } else if !path.contains(next) && next > start {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles in the safra library: {circles:?}"
    );
    assert!(
        uses.get("transport::client")
            .is_some_and(|names| names.contains("identity::auth")),
        "the check reads the modules' uses: {uses:?}"
    );
}

#[derive(serde::Deserialize)]
struct Manifest {
    package: Option<ManifestPackage>,
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
}

#[derive(serde::Deserialize)]
struct ManifestPackage {
    name: String,
}

fn manifest(path: &Path) -> Manifest {
    let text =
        fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    toml::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn service_manifests() -> Vec<(String, Manifest)> {
    let services = repository_root().join("services");
    let mut found: Vec<(String, Manifest)> = fs::read_dir(&services)
        .expect("services/ exists")
        .flatten()
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| {
            let folder = entry.file_name().to_string_lossy().into_owned();
            (folder, manifest(&entry.path().join("Cargo.toml")))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[test]
fn crate_names_match_their_folders() {
    for (folder, manifest) in service_manifests() {
        let name = manifest
            .package
            .map(|package| package.name)
            .unwrap_or_default();
        assert_eq!(name, format!("safra-{folder}"), "services/{folder}");
    }
    for (folder, expected) in [
        ("cli", "safra-cli"),
        ("gateway", "safra-gateway"),
        ("test-support", "safra-test-support"),
        ("tests", "safra-tests"),
    ] {
        let found = manifest(&repository_root().join(folder).join("Cargo.toml"))
            .package
            .map(|package| package.name)
            .unwrap_or_default();
        assert_eq!(found, expected, "{folder}");
    }
}

#[test]
fn services_share_no_database_and_know_no_rest() {
    for (folder, manifest) in service_manifests() {
        for dependency in manifest.dependencies.keys() {
            assert!(
                !(dependency.starts_with("safra-") && dependency != "safra-test-support"),
                "services/{folder} depends on {dependency}: services talk over gRPC, never through another's crate or database"
            );
            assert!(
                !["axum", "serde_json", "hyper"].contains(&dependency.as_str()),
                "services/{folder} depends on {dependency}: only the gateway knows REST and JSON"
            );
        }
    }
}

#[derive(serde::Deserialize)]
struct Lockfile {
    package: Vec<LockedPackage>,
}

#[derive(serde::Deserialize)]
struct LockedPackage {
    name: String,
    version: String,
}

fn locked_packages() -> Vec<LockedPackage> {
    let text =
        fs::read_to_string(repository_root().join("Cargo.lock")).expect("Cargo.lock is committed");
    toml::from_str::<Lockfile>(&text)
        .expect("Cargo.lock parses")
        .package
}

/// The compatibility "major" of a semver version: `0.14.2` -> `0.14`, `1.5.0` -> `1`.
fn major(version: &str) -> String {
    let mut parts = version.split('.');
    let first = parts.next().unwrap_or("0");
    if first == "0" {
        format!("0.{}", parts.next().unwrap_or("0"))
    } else {
        first.to_owned()
    }
}

fn version_tuple(version: &str) -> Vec<u64> {
    version
        .split(['.', '-', '+'])
        .take(3)
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

#[test]
fn no_duplicate_majors_of_the_core_stack() {
    let mut majors: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let packages = locked_packages();
    for package in &packages {
        if let Some(name) = [
            "tonic", "prost", "hyper", "h2", "rustls", "http", "axum", "tower",
        ]
        .into_iter()
        .find(|name| *name == package.name)
        {
            majors
                .entry(name)
                .or_default()
                .insert(major(&package.version));
        }
    }
    for (name, versions) in majors {
        assert_eq!(
            versions.len(),
            1,
            "{name} appears in several majors: {versions:?}"
        );
    }
}

#[test]
fn no_aws_lc_and_no_versions_below_known_security_fixes() {
    let packages = locked_packages();
    let aws: Vec<&str> = packages
        .iter()
        .map(|package| package.name.as_str())
        .filter(|name| name.starts_with("aws-lc"))
        .collect();
    assert!(
        aws.is_empty(),
        "aws-lc must stay out of the tree (ring is the one provider): {aws:?}"
    );
    // h2 0.4.16 fixes the empty-DATA-frame flood (RUSTSEC-2026-0258).
    for (name, minimum) in [("h2", "0.4.16")] {
        for package in packages.iter().filter(|package| package.name == name) {
            assert!(
                version_tuple(&package.version) >= version_tuple(minimum),
                "{name} {} is below {minimum}",
                package.version
            );
        }
    }
}

#[test]
fn the_toolchain_is_pinned_to_the_installed_one() {
    let text = fs::read_to_string(repository_root().join("rust-toolchain.toml"))
        .expect("rust-toolchain.toml");
    assert!(text.contains("channel = \"1.95.0\""), "{text}");
}

#[test]
fn crypto_crates_are_optimised_in_debug_builds() {
    #[derive(serde::Deserialize)]
    struct Root {
        profile: BTreeMap<String, toml::Value>,
    }
    let text = fs::read_to_string(repository_root().join("Cargo.toml")).expect("Cargo.toml");
    let root: Root = toml::from_str(&text).expect("Cargo.toml parses");
    let optimised = |name: &str| {
        root.profile
            .get("dev")
            .and_then(|dev| dev.get("package"))
            .and_then(|packages| packages.get(name))
            .and_then(|package| package.get("opt-level"))
            .and_then(toml::Value::as_integer)
            == Some(3)
    };
    let crypto = [
        "argon2",
        "blake2",
        "ed25519-dalek",
        "curve25519-dalek",
        "p256",
        "ring",
        "sha2",
    ];
    for package in locked_packages() {
        if crypto.contains(&package.name.as_str()) {
            assert!(
                optimised(&package.name),
                "{} is in the tree: give it [profile.dev.package.{}] opt-level = 3",
                package.name,
                package.name
            );
        }
    }
}
