//! The `riposte` command: validate playbooks, publish their schema, run them locally, and run the
//! server.
//!
//! `main` only parses flags and hands each subcommand to its module; everything it does is in the
//! library crates (`playbook`, `runner`, `plugin-host`, `server`).

mod connector;
mod local_run;
mod plugins;
mod serve;
mod testing;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// glibc's malloc spent 15% of a worker's CPU in its arenas (a run allocates and frees across
/// threads: the runtime's, SQLite's, wasmtime's); mimalloc keeps that per thread and cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "riposte",
    version,
    about = "Open-source SOAR: YAML playbooks of sandboxed WebAssembly plugins."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check playbooks and print every problem with file, line, column and a hint.
    Validate {
        /// Playbook files, or directories searched for `*.yaml` and `*.yml`.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print diagnostics for people (`text`) or tools (`json`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the JSON Schema of the playbook format (or, with `--connector`, of the connector
    /// format), for editors.
    Schema {
        /// The connector format's schema instead of the playbook's.
        #[arg(long)]
        connector: bool,
    },
    /// Run a playbook locally for one event, showing each step as it happens.
    Run(local_run::RunArgs),
    /// Replay playbook tests (`*.test.yaml`): each event through its playbook, every call
    /// answered from the test, and what came out compared with what the test expects.
    Test(testing::TestArgs),
    /// Write a finished run of a server as a test file that replays it.
    Record {
        run_id: String,
        /// The server's configuration file (it says where the store and the playbooks are).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write the test here instead of standard output (`playbooks/tests/<name>.test.yaml`).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// What the test checks, in a sentence (default: the run it replays).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the server: webhooks (`POST /hooks/<trigger>`) and workers in one process. Without a
    /// Redis configured, everything is kept in a local SQLite file.
    Serve {
        /// The configuration file (YAML); `RIPOSTE_*` environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run workers only, sharing the store of the `serve` processes (scale-out).
    Worker {
        /// The configuration file (YAML); `RIPOSTE_*` environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Resume a failed run from its failed steps, keeping what succeeded (after the downstream
    /// tool is back).
    Resume {
        run_id: String,
        /// The server's configuration file (it says where the store is).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Who resumes it, for the run's record.
        #[arg(long, default_value_t = default_actor())]
        by: String,
    },
    /// Undo what a server's run did: one step's effect (`block-ip/ban` lifted by its `undo:`), or
    /// every effect the run still holds. A worker calls the undos, with their retries.
    Undo {
        run_id: String,
        /// The step to undo; every step the run still holds when absent.
        step: Option<String>,
        /// The server's configuration file (it says where the store and the playbooks are).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Who asks, for the run's record.
        #[arg(long, default_value_t = default_actor())]
        by: String,
    },
    /// Approve a step that waits for approval in a server's run.
    Approve {
        run_id: String,
        step: String,
        /// The server's configuration file (it says where the store is).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Who decides, for the run's record.
        #[arg(long, default_value_t = default_actor())]
        by: String,
    },
    /// Deny a step that waits for approval in a server's run.
    Deny {
        run_id: String,
        step: String,
        /// The server's configuration file (it says where the store is).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Who decides, for the run's record.
        #[arg(long, default_value_t = default_actor())]
        by: String,
        /// Why, for the run's record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check the tamper-evident audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Incident cases.
    #[command(subcommand)]
    Case(CaseCommand),
    /// Manage tokens for the management API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect and scaffold WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugins::PluginCommand),
    /// Write connectors from OpenAPI documents.
    #[command(subcommand)]
    Connector(connector::ConnectorCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of every run's journal (or of one run) and name the first broken
    /// record. Exit code 1 if a chain is broken.
    Verify {
        /// Only this run.
        #[arg(long)]
        run: Option<String>,
        /// The server's configuration file (it says where the store is).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a run's timeline for post-incident review, with the state of its hash chain.
    Export {
        run_id: String,
        /// `markdown` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = ExportFormat::Markdown)]
        format: ExportFormat,
        /// The server's configuration file (it says where the store is).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CaseCommand {
    /// Print a case's post-incident report: its timeline across all its runs, every action and
    /// decision with who and when, its observables, what was contained, and the state of the
    /// hash chains it rests on.
    Report {
        /// The case's number.
        case: u64,
        /// `markdown` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = ExportFormat::Markdown)]
        format: ExportFormat,
        /// The server's configuration file (it says where the store is).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new random API token. Prints the token once (give it to its user) and the lines
    /// that configure it by its SHA-256: the server never stores the token itself.
    New {
        /// Who uses it: the actor named in the audit trail.
        #[arg(long)]
        name: String,
        /// viewer (reads), responder (also approves, denies, cancels, resumes), admin (also
        /// reloads playbooks).
        #[arg(long, value_parser = ["viewer", "responder", "admin"])]
        role: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Markdown,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RIPOSTE_LOG"))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: container logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Validate { paths, format } => validate::validate(&paths, format),
        Command::Schema { connector } => print_schema(connector),
        Command::Test(args) => testing::test(args),
        Command::Record {
            run_id,
            config,
            output,
            name,
        } => testing::record(
            config.as_deref(),
            &run_id,
            output.as_deref(),
            name.as_deref(),
        ),
        Command::Run(args) => local_run::run(args),
        Command::Plugin(command) => plugins::run(command),
        Command::Connector(command) => connector::run(command),
        Command::Serve { config } => serve::run(config.as_deref(), serve::Role::Serve),
        Command::Worker { config } => serve::run(config.as_deref(), serve::Role::Worker),
        Command::Audit(AuditCommand::Verify { run, config }) => {
            serve::audit_verify(config.as_deref(), run.as_deref())
        }
        Command::Audit(AuditCommand::Export {
            run_id,
            format,
            config,
        }) => serve::audit_export(config.as_deref(), &run_id, format == ExportFormat::Json),
        Command::Case(CaseCommand::Report {
            case,
            format,
            config,
        }) => serve::case_report(config.as_deref(), case, format == ExportFormat::Json),
        Command::Token(TokenCommand::New { name, role }) => new_token(&name, &role),
        Command::Resume { run_id, config, by } => serve::resume(config.as_deref(), &run_id, &by),
        Command::Undo {
            run_id,
            step,
            config,
            by,
        } => serve::undo(config.as_deref(), &run_id, step.as_deref(), &by),
        Command::Approve {
            run_id,
            step,
            config,
            by,
        } => serve::decide(
            config.as_deref(),
            &run_id,
            &step,
            runner::Decision::Approved { by, comment: None },
        ),
        Command::Deny {
            run_id,
            step,
            config,
            by,
            reason,
        } => serve::decide(
            config.as_deref(),
            &run_id,
            &step,
            runner::Decision::Denied { by, reason },
        ),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A runtime for one command: one thread for the commands that do one thing, several for the
/// server. Blocking work (DNS lookups for plugins' requests) queues beyond 32 threads: a burst
/// must not leave hundreds of idle threads and their memory behind.
fn runtime(multi_thread: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .max_blocking_threads(32)
        .build()
        .context("cannot start the async runtime")
}

/// Prints a line to stdout. A closed pipe (`riposte validate … | head`) is not an error worth a
/// panic: the reader has what it wanted.
fn print_stdout(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// `cli:<user>` from the environment, for records of who did what.
fn default_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn print_schema(connector: bool) -> anyhow::Result<ExitCode> {
    let schema = if connector {
        playbook::schema::connector_schema()
    } else {
        playbook::schema::playbook_schema()
    };
    let schema = serde_json::to_string_pretty(&schema)?;
    print_stdout(&schema);
    Ok(ExitCode::SUCCESS)
}

/// `riposte token new`: the token on stdout (for scripts), how to configure it on stderr.
fn new_token(name: &str, role: &str) -> anyhow::Result<ExitCode> {
    let valid_name = !name.is_empty()
        && name.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'.'
        });
    if !valid_name {
        anyhow::bail!("--name must be letters, digits, `-`, `_` or `.`");
    }
    let token = server::tokens::new_token();
    let hash = server::tokens::token_hash(&token);
    print_stdout(&token);
    let variable = name.to_ascii_uppercase().replace(['-', '.'], "_");
    eprintln!(
        "Token for `{name}` ({role}) printed above; it is shown only this once.\n\
         Configure it in the server's file:\n\n  api:\n    tokens:\n      - name: {name}\n        role: {role}\n        sha256: {hash}\n\n\
         or in its environment:\n\n  RIPOSTE_API_TOKEN_{variable}={role}:{hash}"
    );
    Ok(ExitCode::SUCCESS)
}
