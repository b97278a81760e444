//! Playbooks tested like code: `riposte record` turns a finished run into a test file, and
//! `riposte test` replays test files (recorded or written by hand) against the playbooks beside
//! them, with every plugin call answered from the file (docs/testing.md).
//!
//! A test file (`*.test.yaml`) holds the triggering event, the answers of the calls the run made
//! (in the order made, per step and item), the approval decisions, and what must come out: which
//! steps ran with which inputs, their outcomes, the run's status and outputs, the case. Expected
//! values match when every field they give is there with the same value (a hand-written test can
//! check only what it cares about); recorded tests give everything.

mod record;
mod replay;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use record::record;

/// Largest test file read, in bytes: recordings of long runs are big, but not this big.
const MAX_TEST_BYTES: usize = 8 * 1024 * 1024;

/// One test: an event, the answers of the calls it leads to, and what must come out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestFile {
    /// What the test checks, in a sentence.
    pub(crate) name: String,
    /// The playbook's `name`.
    pub(crate) playbook: String,
    /// The run it was recorded from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) recorded_from: Option<String>,
    /// The event, as the SIEM posted it.
    pub(crate) event: Value,
    /// What each call answered, in the order the calls were made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) answers: Vec<Answer>,
    /// How each approval gate is decided, by step: approved, denied, or left to time out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) approvals: BTreeMap<String, Verdict>,
    #[serde(default)]
    pub(crate) expect: Expect,
}

/// One call's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Answer {
    pub(crate) step: String,
    /// The `foreach` item, for steps that loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) item: Option<usize>,
    /// The request (the step's rendered input, secrets redacted): when given, the call must be
    /// made with exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) input: Option<Value>,
    /// The answer: an output, or an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<AnswerError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerError {
    /// `invalid_input`, `unauthorized`, `not_found`, `rate_limited`, `upstream`, `timeout`,
    /// `internal`.
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Approve,
    Deny,
    /// Nobody decides: the gate's deadline passes and its `on_timeout` applies.
    Timeout,
}

/// What must come out. Every field is optional; what is left out is not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// `matched` (the default) or `ignored`: whether the trigger's filter takes the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) screened: Option<Screened>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dedupe_key: Option<String>,
    /// The run's status: `succeeded`, `failed`, `waiting_for_approval`, `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<String>,
    /// By step id (or handler).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) steps: BTreeMap<String, ExpectStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) outputs: Option<Value>,
    /// The case the run opens: `title`, `severity`, `key`, `observables`, and `phase` (the
    /// furthest phase its succeeded steps reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) case: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Screened {
    Matched,
    Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpectStep {
    /// `succeeded`, `failed`, `skipped`, `waiting_for_approval`, or `not_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<String>,
    /// The input of its last attempt (secrets redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<Value>,
    /// Words its error message must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct TestArgs {
    /// Test files (`*.test.yaml`) or folders searched for them; the playbooks are the other
    /// YAML files of the same folders and of the folders above `tests/` folders.
    #[arg(default_value = "playbooks")]
    paths: Vec<PathBuf>,
    /// Also write the results as JUnit XML, for CI systems.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Only the tests whose name or file contains this.
    #[arg(long)]
    filter: Option<String>,
}

/// `riposte test`: runs every test found, prints what differed, exits 1 if any failed.
pub(crate) fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut tests = Vec::new();
    let mut playbook_dirs = Vec::new();
    for path in &args.paths {
        collect(path, &mut tests, &mut playbook_dirs)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    // Once each, also when two paths reach it (`playbooks` and `./playbooks`).
    let mut tests: Vec<(PathBuf, PathBuf)> = tests
        .into_iter()
        .map(|test| (test.canonicalize().unwrap_or_else(|_| test.clone()), test))
        .collect();
    tests.sort();
    tests.dedup_by(|a, b| a.0 == b.0);
    if tests.is_empty() {
        anyhow::bail!("no tests (*.test.yaml) found in the given paths");
    }
    // Read before the filter, which also looks at each test's name; an unreadable test is kept
    // when its file matches, to say why.
    let mut tests: Vec<(PathBuf, anyhow::Result<TestFile>)> = tests
        .into_iter()
        .map(|(_, path)| {
            let test = read_test(&path);
            (path, test)
        })
        .collect();
    if let Some(filter) = &args.filter {
        let filter = filter.as_str();
        tests.retain(|(path, test)| {
            path.display().to_string().contains(filter)
                || test.as_ref().is_ok_and(|test| test.name.contains(filter))
        });
        if tests.is_empty() {
            anyhow::bail!("no test's name or file contains `{filter}`");
        }
    }
    let playbooks = load_playbooks(&playbook_dirs)?;
    let runtime = replay::runtime()?;
    let mut results = Vec::with_capacity(tests.len());
    for (path, test) in &tests {
        let started = std::time::Instant::now();
        let outcome = match test {
            Ok(test) => runtime.block_on(replay::replay(test, &playbooks)),
            Err(error) => replay::Outcome::broken(format!("{error:#}")),
        };
        let result = report::TestResult {
            file: path.display().to_string(),
            name: outcome.name.clone(),
            problems: outcome.problems,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!("{}", result.render());
        results.push(result);
    }
    let failed = results.iter().filter(|r| !r.problems.is_empty()).count();
    eprintln!(
        "{} test(s): {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    if let Some(junit) = &args.junit {
        std::fs::write(junit, report::junit(&results))
            .with_context(|| format!("cannot write {}", junit.display()))?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Test files under `path`, and the folders whose playbooks they test.
fn collect(
    path: &Path,
    tests: &mut Vec<PathBuf>,
    playbook_dirs: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    // A path that does not exist is an error here, before its parent folder (`/` for a typo
    // like `/playbook`) is searched for playbooks.
    std::fs::metadata(path)?;
    if !path.is_dir() {
        tests.push(path.to_owned());
        if let Some(dir) = path.parent() {
            playbook_dirs.push(playbooks_beside(dir));
        }
        return Ok(());
    }
    playbook_dirs.push(path.to_owned());
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if playbook::is_test_file(&path)
                && path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                playbook_dirs.push(playbooks_beside(&dir));
                tests.push(path);
            }
        }
    }
    Ok(())
}

/// Tests kept in a `tests/` folder test the playbooks of the folder above it.
fn playbooks_beside(dir: &Path) -> PathBuf {
    match dir.file_name().and_then(|name| name.to_str()) {
        Some("tests") => dir.parent().unwrap_or(dir).to_owned(),
        _ => dir.to_owned(),
    }
}

/// Every valid playbook in `dirs`, by name. A broken one is left out: a test of it says so.
fn load_playbooks(
    dirs: &[PathBuf],
) -> anyhow::Result<BTreeMap<String, Result<playbook::Playbook, String>>> {
    let mut playbooks = BTreeMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        files.extend(
            playbook::files_in(dir).with_context(|| format!("cannot read {}", dir.display()))?,
        );
    }
    // The same file reached by two paths (`playbooks` and `./playbooks`) is one file.
    let mut files: Vec<(PathBuf, PathBuf)> = files
        .into_iter()
        .map(|file| (file.canonicalize().unwrap_or_else(|_| file.clone()), file))
        .collect();
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    // Which file declared each name: two playbooks with one name make the tests of that name
    // fail, rather than test whichever was read last.
    let mut declared: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (_, file) in files {
        let Ok(source) = std::fs::read_to_string(&file) else {
            continue;
        };
        if playbook::connector::is_connector(&source) {
            continue;
        }
        match playbook::compile(&source) {
            Ok(compiled) => {
                let name = compiled.name.clone();
                if let Some(first) = declared.get(&name) {
                    let reason = format!(
                        "two playbooks are named `{name}`: {} and {}",
                        first.display(),
                        file.display()
                    );
                    playbooks.insert(name, Err(reason));
                    continue;
                }
                declared.insert(name.clone(), file.clone());
                playbooks.insert(name, Ok(compiled));
            }
            Err(diagnostics) => {
                let rendered: Vec<String> = diagnostics
                    .iter()
                    .map(|d| d.render(&file.display().to_string(), &source))
                    .collect();
                // Found by the name it declares, if it got that far.
                let name = source
                    .lines()
                    .find_map(|line| line.strip_prefix("name:"))
                    .map(|name| name.trim().trim_matches('"').to_owned());
                if let Some(name) = name {
                    playbooks.insert(name, Err(rendered.join("\n")));
                }
            }
        }
    }
    Ok(playbooks)
}

fn read_test(path: &Path) -> anyhow::Result<TestFile> {
    let metadata = std::fs::metadata(path)?;
    if metadata.len() > MAX_TEST_BYTES as u64 {
        anyhow::bail!("{} is larger than {MAX_TEST_BYTES} bytes", path.display());
    }
    let text = std::fs::read_to_string(path)?;
    parse(&text).with_context(|| format!("{} is not a test file", path.display()))
}

/// A test file's text, with the YAML parser's budget against hostile documents.
pub(crate) fn parse(text: &str) -> anyhow::Result<TestFile> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 4_000_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 128,
            max_documents: 2,
            max_nodes: 2_000_000,
            max_total_scalar_bytes: MAX_TEST_BYTES,
        },
        alias_limits: serde_saphyr::options::AliasLimits {
            max_total_replayed_events: 20_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 100,
        },
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|error| anyhow::anyhow!("{error}"))
}
