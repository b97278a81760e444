//! The loaded playbooks, indexed by name and by the trigger they listen on, with the secrets each
//! may read; and [`Playbooks`], the set in use, which a reload replaces whole.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use playbook::Playbook;

use crate::auth::AuthProfile;
use crate::config::Config;
use crate::error::Error;

/// How a trigger's deliveries must authenticate, decided once at start.
#[derive(Debug, Clone)]
pub enum TriggerAuth {
    /// The named profile from the server configuration.
    Profile { name: String, profile: AuthProfile },
    /// Every playbook on the trigger says `public: true`.
    Public,
    /// No playbook on the trigger names a profile or says `public`: deliveries are refused.
    Unconfigured,
}

/// A trigger: its authentication and the playbooks it starts.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub auth: TriggerAuth,
    pub playbooks: Vec<Arc<Playbook>>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    by_name: BTreeMap<String, Arc<Playbook>>,
    by_trigger: BTreeMap<String, Trigger>,
    /// The values of the secrets each playbook declares, from `RIPOSTE_SECRET_*`.
    secrets: BTreeMap<String, runner::Secrets>,
}

/// The catalog in use. Requests and runs take the current one and keep it to the end, so a
/// reload never changes a playbook under a run in progress.
#[derive(Debug)]
pub struct Playbooks(RwLock<Arc<Catalog>>);

impl Playbooks {
    pub fn new(catalog: Catalog) -> Self {
        Playbooks(RwLock::new(Arc::new(catalog)))
    }

    pub fn current(&self) -> Arc<Catalog> {
        match self.0.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, catalog: Catalog) {
        let catalog = Arc::new(catalog);
        match self.0.write() {
            Ok(mut current) => *current = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
    }
}

impl Catalog {
    /// Loads every playbook under the configured folder and checks them against the configuration:
    /// each `trigger.auth` names a configured profile, playbooks sharing a trigger agree on its
    /// authentication, and every step timeout is shorter than the worker lease.
    pub fn load(config: &Config) -> Result<Catalog, Error> {
        let files = playbook::files_in(&config.playbooks).map_err(|source| Error::Io {
            what: format!(
                "cannot read the playbooks folder {}",
                config.playbooks.display()
            ),
            source,
        })?;
        let mut problems = Vec::new();
        let mut playbooks = Vec::new();
        let mut loaded_from = Vec::new();
        for file in &files {
            match playbook::load(file) {
                Ok(playbook) => {
                    playbooks.push(playbook);
                    loaded_from.push(file);
                }
                Err(playbook::Error::Invalid(diagnostics)) => problems.push(diagnostics.render()),
                Err(error) => problems.push(format!("{}: {error}", file.display())),
            }
        }
        let all: Vec<&Playbook> = playbooks.iter().collect();
        for (index, problem) in playbook::check_calls(&all) {
            let file = loaded_from[index];
            let source = std::fs::read_to_string(file).unwrap_or_default();
            problems.push(problem.render(&file.display().to_string(), &source));
        }
        let catalog = Catalog::from_playbooks(playbooks, config, &mut problems);
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(Error::Playbooks(problems))
        }
    }

    fn from_playbooks(
        playbooks: Vec<Playbook>,
        config: &Config,
        problems: &mut Vec<String>,
    ) -> Catalog {
        let mut catalog = Catalog::default();
        for playbook in playbooks {
            let name = playbook.name.clone();
            for step in playbook.steps.iter().chain(&playbook.handlers) {
                if config.workers.lease_configured && step.timeout >= config.workers.lease {
                    problems.push(format!(
                        "playbook `{name}`, step `{}`: its timeout ({}) must be shorter than the worker lease ({}); raise workers.lease",
                        step.id.as_str(),
                        humantime::format_duration(step.timeout),
                        humantime::format_duration(config.workers.lease)
                    ));
                }
            }
            let auth = match (&playbook.trigger.auth, playbook.trigger.public) {
                (Some(profile_name), _) => match config.auth.get(profile_name) {
                    Some(profile) => TriggerAuth::Profile {
                        name: profile_name.clone(),
                        profile: profile.clone(),
                    },
                    None => {
                        problems.push(format!(
                            "playbook `{name}`: trigger.auth names `{profile_name}`, but the server configuration has no such auth profile (configured: {})",
                            names(config.auth.keys())
                        ));
                        TriggerAuth::Unconfigured
                    }
                },
                (None, true) => TriggerAuth::Public,
                (None, false) => {
                    tracing::warn!(playbook = %name, trigger = %playbook.trigger.webhook, "The trigger names no auth profile and is not public: its deliveries will be refused.");
                    TriggerAuth::Unconfigured
                }
            };
            let playbook = Arc::new(playbook);
            if catalog
                .by_name
                .insert(name.clone(), Arc::clone(&playbook))
                .is_some()
            {
                problems.push(format!("two playbooks are named `{name}`"));
            }
            let trigger = catalog
                .by_trigger
                .entry(playbook.trigger.webhook.clone())
                .or_insert_with(|| Trigger {
                    auth: auth.clone(),
                    playbooks: Vec::new(),
                });
            if let Some(first) = trigger.playbooks.first()
                && (first.trigger.auth != playbook.trigger.auth
                    || first.trigger.public != playbook.trigger.public)
            {
                problems.push(format!(
                    "playbooks `{}` and `{name}` share trigger `{}` but not its authentication; give them the same `auth` (or `public`)",
                    first.name, playbook.trigger.webhook
                ));
            }
            trigger.playbooks.push(playbook);
        }
        for playbook in catalog.by_name.values() {
            let mut missing = Vec::new();
            let mut values = BTreeMap::new();
            for name in &playbook.secrets {
                let variable = name.to_ascii_uppercase();
                match config.secrets.get(&variable) {
                    Some(value) => {
                        values.insert(name.clone(), value.clone());
                    }
                    None => missing.push(format!("RIPOSTE_SECRET_{variable}")),
                }
            }
            if !missing.is_empty() {
                tracing::warn!(playbook = %playbook.name, missing = %missing.join(", "), "Secrets not set: steps that use them will fail.");
            }
            catalog
                .secrets
                .insert(playbook.name.clone(), runner::Secrets::new(values));
        }
        catalog
    }

    pub fn playbook(&self, name: &str) -> Option<&Arc<Playbook>> {
        self.by_name.get(name)
    }

    pub fn trigger(&self, webhook: &str) -> Option<&Trigger> {
        self.by_trigger.get(webhook)
    }

    pub fn playbooks(&self) -> impl Iterator<Item = &Arc<Playbook>> {
        self.by_name.values()
    }

    /// The secret values `playbook` may read (none for an unknown playbook).
    pub fn secrets(&self, playbook: &str) -> runner::Secrets {
        self.secrets.get(playbook).cloned().unwrap_or_default()
    }

    /// The longest step timeout of all playbooks (zero when there are none).
    pub fn longest_step_timeout(&self) -> Duration {
        self.playbooks()
            .flat_map(|playbook| playbook.steps.iter().chain(&playbook.handlers))
            .map(|step| step.timeout)
            .max()
            .unwrap_or_default()
    }
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<_> = names.map(|name| format!("`{name}`")).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}
