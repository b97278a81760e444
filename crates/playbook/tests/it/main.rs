//! Integration tests of the playbook language: golden diagnostics, examples, templates, hostile YAML.

mod files;
mod filters;
mod fuzzed;
mod hostile;
mod memory;
mod screen;
mod ui;
