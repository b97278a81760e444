//! The `riposte` command as a user runs it: exit codes, what it prints, the files it writes.

mod commands;
mod connector_import;
mod connectors;
mod console;
mod crash;
mod plugins;
mod replay;
mod schedule;
mod undo;
