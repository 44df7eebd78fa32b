//! The house rules of ARCHITECTURE.md, checked (as rust-analyzer's `tidy` test does): each
//! test here is one rule stated there. They read the source as text, so they are fast and
//! need no build of anything else. A rule that must bend gets a stated reason in the code,
//! in the form this file looks for, never a quiet exception here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir` (relative to the root), sorted.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    out
}

/// The library and binary sources of the three crates (not tests, benches or fuzz targets).
fn product_files() -> Vec<PathBuf> {
    ["src", "crates/matrix/src", "crates/http/src"]
        .iter()
        .flat_map(|d| rust_files(d))
        .collect()
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A file's lines up to its test module: by convention the `#[cfg(test)]` module is last,
/// so everything before the first `#[cfg(test)]` line is product code.
fn product_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

/// Product lines without comments (`//` to the end of the line, outside string literals is
/// close enough for these rules: none of them looks for `//`).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    product_lines(path)
        .into_iter()
        .map(|(n, l)| {
            let code = match l.find("//") {
                Some(i) if !l[..i].contains('"') => l[..i].to_owned(),
                _ => l,
            };
            (n, code)
        })
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

/// Fails with every offending line listed.
fn report(rule: &str, offences: Vec<String>) {
    assert!(
        offences.is_empty(),
        "{rule}:\n  {}\n(see ARCHITECTURE.md, \"Invariants\")",
        offences.join("\n  ")
    );
}

/// "Errcodes and their statuses are paired in one place": every `M_…` errcode string lives
/// in `crates/matrix/src/errcode.rs`, and a `MatrixError` is built from an `ErrCode`, never
/// from a bare status number.
#[test]
fn errcodes_are_paired_with_statuses_in_one_place() {
    let mut offences = Vec::new();
    for file in product_files() {
        let name = rel(&file);
        if name == "crates/matrix/src/errcode.rs" {
            continue;
        }
        for (n, line) in code_lines(&file) {
            let errcode_literal = line.match_indices("\"M_").any(|(i, _)| {
                line[i + 3..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
            });
            let numeric_new = line.contains("MatrixError::new(")
                && line.split("MatrixError::new(").nth(1).is_some_and(|rest| {
                    rest.trim_start().starts_with(|c: char| c.is_ascii_digit())
                });
            if errcode_literal || numeric_new {
                offences.push(format!("{name}:{n}: {}", line.trim()));
            }
        }
    }
    report(
        "an errcode or status is written outside crates/matrix/src/errcode.rs",
        offences,
    );
}

/// "room_version.rs is the only place that knows how versions differ": no room-version
/// string literal ("1" … "12") in the Matrix code elsewhere (the app and the pure crate; the
/// edge knows no Matrix, see below), and none in the migrated schema's views.
#[test]
fn room_versions_are_only_named_in_the_table() {
    let mut offences = Vec::new();
    let matrix_code = rust_files("src")
        .into_iter()
        .chain(rust_files("crates/matrix/src"));
    for file in matrix_code {
        let name = rel(&file);
        if name == "crates/matrix/src/room_version.rs" {
            continue;
        }
        for (n, line) in code_lines(&file) {
            let hit = (1..=12).any(|v| {
                let quoted = format!("\"{v}\"");
                line.match_indices(&quoted).any(|(i, _)| {
                    // A version literal, not part of a longer string like "\"1\"" in a format.
                    !line[..i].ends_with('\\')
                })
            });
            if hit {
                offences.push(format!("{name}:{n}: {}", line.trim()));
            }
        }
    }
    // The schema as migrated (old migrations are history; what runs is what counts): no view
    // or trigger compares room versions.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tidy.db");
    invited::store::Store::open(&db).unwrap().close().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type IN ('view', 'trigger')")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for row in rows {
        let (name, sql) = row.unwrap();
        if sql.contains("room_version =") || sql.contains("room_version IN") {
            offences.push(format!("schema.sql: view or trigger {name}"));
        }
    }
    report(
        "a room version is named outside crates/matrix/src/room_version.rs",
        offences,
    );
}

/// "All SQL lives in schema.sql and the store": no SQL statement in a string literal outside
/// `src/store/`.
#[test]
fn sql_lives_in_the_store() {
    const KEYWORDS: [&str; 10] = [
        "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "PRAGMA ", "BEGIN", "ALTER ",
        "DROP ", "VACUUM",
    ];
    let mut offences = Vec::new();
    for file in product_files() {
        let name = rel(&file);
        if name.starts_with("src/store/") {
            continue;
        }
        for (n, line) in code_lines(&file) {
            let in_string = line
                .split('"')
                .skip(1)
                .step_by(2)
                .any(|literal| KEYWORDS.iter().any(|k| literal.trim_start().starts_with(k)));
            if in_string || line.contains("rusqlite") {
                offences.push(format!("{name}:{n}: {}", line.trim()));
            }
        }
    }
    report("SQL outside src/store/", offences);
}

/// "The store uses only plain values": nothing in `src/store/` imports another module of
/// the application (it may use the pure crate and its own submodules).
#[test]
fn the_store_imports_nothing_of_the_app() {
    let mut offences = Vec::new();
    for file in rust_files("src/store") {
        for (n, line) in code_lines(&file) {
            for (i, _) in line.match_indices("crate::") {
                if !line[i..].starts_with("crate::store") {
                    offences.push(format!("{}:{n}: {}", rel(&file), line.trim()));
                }
            }
        }
    }
    report("src/store/ uses an app module", offences);
}

/// "No unwrap on input paths": product code has no `.unwrap()` or `.expect(` at all (clippy's
/// `unwrap_used`/`expect_used` check the same for what it compiles; this also covers code
/// behind features and platforms clippy does not see).
#[test]
fn no_unwrap_in_product_code() {
    let mut offences = Vec::new();
    for file in product_files() {
        for (n, line) in code_lines(&file) {
            if line.contains(".unwrap()") || line.contains(".expect(") {
                offences.push(format!("{}:{n}: {}", rel(&file), line.trim()));
            }
        }
    }
    report("unwrap()/expect() outside tests", offences);
}

/// "One concern per file": no product file over 500 lines of non-test code unless it says
/// why, with a line `// tidy: long file: <reason>`.
#[test]
fn files_stay_small_or_say_why() {
    let mut offences = Vec::new();
    for file in product_files() {
        let lines = product_lines(&file);
        let reason = lines
            .iter()
            .any(|(_, l)| l.trim_start().starts_with("// tidy: long file:"));
        if lines.len() > 500 && !reason {
            offences.push(format!("{}: {} lines", rel(&file), lines.len()));
        }
    }
    report("a file over 500 lines without a stated reason", offences);
}

/// "Arrows point down": the pure crate and the HTTP edge depend on nothing of the project.
#[test]
fn the_library_crates_depend_on_nothing_of_the_project() {
    let mut offences = Vec::new();
    for manifest in ["crates/matrix/Cargo.toml", "crates/http/Cargo.toml"] {
        let text = fs::read_to_string(root().join(manifest)).unwrap();
        let mut section = String::new();
        for line in text.lines() {
            if line.starts_with('[') {
                section = line.to_owned();
            }
            if section == "[dependencies]" && line.contains("path =") {
                offences.push(format!("{manifest}: {line}"));
            }
        }
    }
    for file in rust_files("crates/matrix/src")
        .into_iter()
        .chain(rust_files("crates/http/src"))
    {
        for (n, line) in code_lines(&file) {
            if line.contains("invited::")
                || line.contains("invited_http") && rel(&file).starts_with("crates/matrix")
            {
                offences.push(format!("{}:{n}: {}", rel(&file), line.trim()));
            }
        }
    }
    report("a library crate depends on the project", offences);
}

/// The HTTP edge knows nothing of Matrix: no Matrix path, errcode or type in crates/http.
#[test]
fn the_edge_knows_nothing_of_matrix() {
    let mut offences = Vec::new();
    for file in rust_files("crates/http/src") {
        for (n, line) in code_lines(&file) {
            // Errcodes are string literals ("M_FORBIDDEN"); libc's M_ARENA_MAX is not one.
            if line.contains("_matrix") || line.contains("invited_matrix") || line.contains("\"M_")
            {
                offences.push(format!("{}:{n}: {}", rel(&file), line.trim()));
            }
        }
    }
    report("crates/http knows of Matrix", offences);
}

/// Sources cite the Matrix spec's own URLs: `shared/` (our digest of it, and the dependency
/// notes) is not part of this repository.
#[test]
fn no_citations_of_files_outside_the_repository() {
    let mut offences = Vec::new();
    let mut files = product_files();
    for dir in [
        "tests",
        "benches",
        "crates/matrix/tests",
        "crates/http/tests",
        "fuzz",
    ] {
        files.extend(rust_files(dir));
    }
    for doc in ["ARCHITECTURE.md", "README.md", "schema.sql"] {
        files.push(root().join(doc));
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            // Spelt in two halves so this line does not find itself.
            if line.contains(concat!("shared", "/spec"))
                || line.contains(concat!("shared", "/DEPENDENCIES"))
            {
                offences.push(format!("{}:{}: {}", rel(&file), i + 1, line.trim()));
            }
        }
    }
    report(
        "a citation of ../shared, which is not in this repository",
        offences,
    );
}

/// "No module imports a module that imports it back": per crate, the graph of `crate::…`
/// references between modules has no cycle. A module and its own submodules count as one
/// (a parent declares its children; `super::` is how children reach it).
#[test]
fn no_import_circles() {
    for (crate_dir, root_file) in [
        ("src", "lib.rs"),
        ("crates/matrix/src", "lib.rs"),
        ("crates/http/src", "lib.rs"),
    ] {
        let base = root().join(crate_dir);
        // Module path (e.g. "federation::keyring") of each file.
        let mut modules: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in rust_files(crate_dir) {
            let relative = file.strip_prefix(&base).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name == "main" || file.ends_with(root_file) && parts.len() == 1 {
                continue;
            }
            modules.insert(name, file);
        }
        let resolve = |path: &str| -> Option<String> {
            // The longest module prefix of `a::b::c`.
            let parts: Vec<&str> = path.split("::").collect();
            (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|m| modules.contains_key(m))
        };
        let related = |a: &str, b: &str| {
            a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
        };
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, file) in &modules {
            for (_, line) in code_lines(file) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let path: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let mut targets = vec![path.trim_end_matches(':').to_owned()];
                    // `use crate::a::{b, c::d}`: each item of a group.
                    if let Some(group) = rest.strip_prefix(&format!("{path}{{")) {
                        let inner = group.split('}').next().unwrap_or("");
                        targets = inner
                            .split(',')
                            .map(|item| format!("{path}{}", item.trim()))
                            .collect();
                    }
                    for target in targets {
                        if let Some(m) = resolve(&target)
                            && !related(name, &m)
                        {
                            edges.entry(name.clone()).or_default().insert(m);
                        }
                    }
                }
            }
        }
        // Depth-first search for a cycle.
        fn visit(
            node: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = stack.iter().position(|n| n == node) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            stack.push(node.to_owned());
            for next in edges.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, stack, done) {
                    return Some(cycle);
                }
            }
            stack.pop();
            done.insert(node.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        for node in modules.keys() {
            if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
                panic!(
                    "{crate_dir}: import circle {} (see ARCHITECTURE.md, \"Invariants\")",
                    cycle.join(" → ")
                );
            }
        }
    }
}

/// "Nothing logs a private key or an `Authorization` header": no log macro's arguments name
/// the header, a request's headers, a key seed or our signing key. (A heuristic over the
/// text, as the other rules are: a log line that needs one of these words for a good reason
/// says why in a `// tidy: logs:` comment above it.)
#[test]
fn nothing_logs_keys_or_credentials() {
    const FORBIDDEN: &[&str] = &[
        "authorization",
        ".header(",
        ".headers",
        "seed",
        "signing_key",
        "sign_bytes",
        "private_key",
    ];
    let mut offences = Vec::new();
    for file in product_files() {
        let name = rel(&file);
        let lines = code_lines(&file);
        let text: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
        for (i, (n, line)) in lines.iter().enumerate() {
            let Some(start) = ["trace!(", "debug!(", "info!(", "warn!(", "error!("]
                .iter()
                .filter_map(|m| line.find(&format!("log::{m}")))
                .min()
            else {
                continue;
            };
            // The macro's arguments, up to the parenthesis that closes it.
            let mut depth = 0i32;
            let mut args = String::new();
            'lines: for (j, l) in text[i..].iter().enumerate() {
                let from = if j == 0 { start } else { 0 };
                for c in l[from..].chars() {
                    args.push(c);
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break 'lines;
                            }
                        }
                        _ => {}
                    }
                }
            }
            let lower = args.to_lowercase();
            let explained = i > 0
                && fs::read_to_string(&file)
                    .unwrap()
                    .lines()
                    .nth(n - 2)
                    .is_some_and(|above| above.contains("// tidy: logs:"));
            if !explained && FORBIDDEN.iter().any(|f| lower.contains(f)) {
                offences.push(format!("{name}:{n}: {}", line.trim()));
            }
        }
    }
    report(
        "a log line names a credential or a key (Authorization, headers, seeds, our key)",
        offences,
    );
}
