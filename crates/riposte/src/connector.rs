//! `riposte connector import`: an OpenAPI 3 document → a connector for a person to review.
//!
//! The mapping is `playbook::connector::openapi`'s; this module reads the file, names the
//! connector, prints the YAML on standard output and each part of the document that was not
//! mapped on standard error as `<file>:<line>:<col>: <message>`, as compilers print warnings.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use playbook::connector::openapi::{self, MAX_OPENAPI_BYTES};

#[derive(clap::Subcommand)]
pub(crate) enum ConnectorCommand {
    /// Write a connector from an OpenAPI 3.0 or 3.1 document (YAML or JSON): the connector on
    /// standard output, each part of the document it could not map on standard error with its
    /// line and column. Review the result before use.
    Import {
        /// The OpenAPI document.
        file: PathBuf,
        /// The connector's name, what steps write before `/` (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
}

pub(crate) fn run(command: ConnectorCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConnectorCommand::Import { file, name } => import(&file, name.as_deref()),
    }
}

/// Exit status 0 when a connector was written (whatever was left unmapped), 1 when the document
/// cannot be imported, 2 when the file cannot be read.
fn import(file: &Path, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let source = read(file)?;
    let name = name.map_or_else(|| default_name(file), str::to_owned);
    match openapi::import(&source, &name) {
        Ok(imported) => {
            crate::print_stdout(imported.yaml.trim_end());
            for unmapped in &imported.unmapped {
                eprintln!(
                    "{}:{}:{}: {}",
                    file.display(),
                    unmapped.position.line,
                    unmapped.position.column,
                    unmapped.message
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(playbook::Error::Invalid(mut refused)) => {
            refused.file = file.display().to_string();
            eprintln!("{}", refused.render());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// The document's text, refused before reading when it is larger than an import takes.
fn read(file: &Path) -> anyhow::Result<String> {
    let context = || format!("cannot read {}", file.display());
    let size = std::fs::metadata(file).with_context(context)?.len();
    if size > MAX_OPENAPI_BYTES as u64 {
        anyhow::bail!(
            "{} is {size} bytes; OpenAPI documents are imported up to {MAX_OPENAPI_BYTES} bytes",
            file.display()
        );
    }
    // Read through the bound too: special files report no size, and files grow.
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .with_context(context)?
        .take(MAX_OPENAPI_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(context)?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", file.display()))
}

/// A connector name from the file's: `PagerDuty Events.v2.json` → `pagerduty-events-v2`.
fn default_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut name = String::new();
    for c in stem.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.to_owned()
    } else {
        format!("api-{name}").trim_end_matches('-').to_owned()
    }
}
