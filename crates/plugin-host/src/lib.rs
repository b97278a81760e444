//! The plugin host: runs Riposte plugins — WebAssembly components built against
//! `plugins/wit/plugin.wit` — sandboxed, and implements [`runner::StepExecutor`] with them.
//!
//! [`PluginHost`] keeps one wasmtime engine per process, compiles each plugin once (cached on disk,
//! keyed by content and engine configuration), and gives every invocation a fresh store and instance
//! with a deadline (epoch interruption plus a timeout around host calls), a memory cap, optional
//! fuel, and caps on host-side allocations. Plugins get no filesystem, environment, stdio or
//! sockets; their only way out is `wasi:http`, through the [`EgressPolicy`] and the hosts the
//! playbook granted. Secrets granted to a plugin are attached to its requests as headers when it
//! declares so, and are redacted from its logs. Destructive actions refuse protected addresses.
//!
//! [`reference`] renders what a plugin declares (its actions' inputs and outputs) for people.
//!
//! [`Connectors`] runs declarative connectors (`playbook::connector`): their requests leave
//! through the same egress policy, with credentials the host attaches.
//!
//! Only this crate knows wasmtime.

mod bindings;
mod connector;
mod egress;
mod error;
mod guard;
mod host;
mod kv;
mod manifest;
pub mod reference;
mod state;

pub use connector::{ConnectorAction, ConnectorSummary, Connectors};
pub use egress::{EgressPolicy, forbidden_reason};
pub use error::Error;
pub use guard::default_protected_ranges;
pub use host::{HostConfig, PluginHost};
pub use manifest::{ABI_VERSION, Action, Manifest, SecretRequest};
