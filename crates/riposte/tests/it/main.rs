//! The `riposte` command as a user runs it: exit codes, what it prints, the files it writes.

mod commands;
mod console;
mod crash;
mod plugins;
mod schedule;
mod undo;
