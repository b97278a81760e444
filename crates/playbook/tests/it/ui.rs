//! Golden tests: `tests/ui/valid/*.yaml` must compile; each `tests/ui/invalid/*.yaml` must produce
//! exactly the diagnostics in the `.stderr` file beside it. `UPDATE_GOLDEN=1` rewrites those files.
//! Playbooks and connectors alike: a file whose top level has `connector:` is a connector.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

/// The file's diagnostics, as a playbook or as a connector.
fn diagnostics(source: &str) -> Vec<playbook::Diagnostic> {
    if playbook::connector::is_connector(source) {
        playbook::connector::compile(source)
            .err()
            .unwrap_or_default()
    } else {
        playbook::compile(source).err().unwrap_or_default()
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn valid_fixtures_compile() {
    let files = yaml_files(&workspace_root().join("tests/ui/valid"));
    assert!(!files.is_empty(), "no valid fixtures found");
    for file in files {
        let source = std::fs::read_to_string(&file).expect("readable fixture");
        let problems = diagnostics(&source);
        assert!(
            problems.is_empty(),
            "{} should be valid but has:\n{}",
            relative(&file),
            problems
                .iter()
                .map(|d| d.render(&relative(&file), &source))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn example_playbooks_are_valid() {
    let files = yaml_files(&workspace_root().join("playbooks"));
    assert!(
        files.len() >= 3,
        "expected at least three example playbooks"
    );
    for file in files {
        let checked = playbook::check_file(&file).expect("readable playbook");
        assert!(
            !checked.has_errors(),
            "{} is invalid:\n{}",
            relative(&file),
            checked.render()
        );
    }
}

#[test]
fn catalogue_connectors_are_valid() {
    let files = yaml_files(&workspace_root().join("connectors"));
    assert!(
        files.len() >= 12,
        "expected the catalogue's twelve connectors or more"
    );
    for file in files {
        let checked = playbook::connector::check_file(&file).expect("readable connector");
        assert!(
            !checked.has_errors(),
            "{} is invalid:\n{}",
            relative(&file),
            checked.render()
        );
    }
}

#[test]
fn invalid_fixtures_match_their_golden_diagnostics() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = yaml_files(&workspace_root().join("tests/ui/invalid"));
    assert!(!files.is_empty(), "no invalid fixtures found");
    let mut mismatches = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("readable fixture");
        let diagnostics = diagnostics(&source);
        assert!(
            !diagnostics.is_empty(),
            "{} should be invalid but compiles",
            relative(&file)
        );
        let rendered: String = diagnostics
            .iter()
            .map(|d| d.render(&relative(&file), &source))
            .collect::<Vec<_>>()
            .join("\n");
        let golden_path = file.with_extension("stderr");
        if update {
            std::fs::write(&golden_path, &rendered).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
        if golden != rendered {
            mismatches.push(format!(
                "--- {} (expected)\n{golden}\n+++ actual\n{rendered}",
                relative(&golden_path)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "diagnostics changed (rerun with UPDATE_GOLDEN=1 if intended):\n{}",
        mismatches.join("\n")
    );
}
