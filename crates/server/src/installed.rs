//! What steps can call in this process: the WASM plugins loaded and the connectors declared
//! (docs/connectors.md), checked against the playbooks before any of them is used.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;

/// The plugins and connectors of a process.
#[derive(Clone, Default)]
pub struct Installed {
    /// The plugins loaded, if a plugins folder is configured.
    pub plugins: Option<Arc<plugin_host::PluginHost>>,
    /// The connectors loaded, if a connectors folder is configured.
    pub connectors: Option<Arc<plugin_host::Connectors>>,
}

impl Installed {
    /// Loads the configured plugins and connectors.
    pub async fn load(config: &Config) -> Result<Installed, Error> {
        let egress = plugin_host::EgressPolicy {
            allow_private: config.allow_private.clone(),
            user_agent: concat!("riposte/", env!("CARGO_PKG_VERSION")).into(),
            ..plugin_host::EgressPolicy::default()
        };
        let plugins = match &config.plugins {
            Some(dir) => {
                let mut host_config = plugin_host::HostConfig::new(&config.cache_dir);
                host_config.egress = egress.clone();
                let mut host = plugin_host::PluginHost::new(host_config)?;
                let loaded = host.load_dir(dir).await?;
                tracing::info!(plugins = loaded.len(), dir = %dir.display(), "Plugins loaded.");
                Some(Arc::new(host))
            }
            None => None,
        };
        let connectors = match &config.connectors {
            Some(connectors) => {
                // Calls that name no connector go on to the plugins.
                let loaded = plugin_host::Connectors::load_dir(
                    &connectors.path,
                    &connectors.settings,
                    egress,
                )?
                .with_plugins(plugin_executor(&plugins));
                if let Some(host) = &plugins
                    && let Some(clash) = loaded
                        .connectors()
                        .find(|c| host.manifest(&c.name).is_some())
                {
                    return Err(Error::Config(vec![format!(
                        "connector `{}` has the name of a loaded plugin; rename one of them",
                        clash.name
                    )]));
                }
                tracing::info!(connectors = loaded.connectors().count(), dir = %connectors.path.display(), "Connectors loaded.");
                Some(Arc::new(loaded))
            }
            None => None,
        };
        Ok(Installed {
            plugins,
            connectors,
        })
    }

    /// What performs the calls of steps: a connector's actions, else a plugin's.
    pub fn executor(&self) -> Arc<dyn runner::StepExecutor> {
        match &self.connectors {
            Some(connectors) => connectors.clone(),
            None => plugin_executor(&self.plugins),
        }
    }

    /// The steps of `playbook` whose plugin, connector or action (or their undo's) is not
    /// installed.
    pub(crate) fn problems(&self, playbook: &playbook::Playbook) -> Vec<String> {
        let mut problems = Vec::new();
        let calls = playbook
            .steps
            .iter()
            .chain(&playbook.handlers)
            .flat_map(|step| {
                let undo = step.undo.as_ref().map(|undo| (step, &undo.uses));
                std::iter::once((step, &step.uses)).chain(undo)
            });
        for (step, uses) in calls {
            // Sub-playbooks are checked with the catalog (`playbook::check_calls`).
            if uses.plugin == runner::CORE || uses.plugin == playbook::PLAYBOOK_CALL {
                continue;
            }
            let step_id = step.id.as_str();
            match self.actions(&uses.plugin) {
                None => problems.push(format!(
                    "playbook `{}`, step `{step_id}`: no plugin or connector `{}` is loaded (the plugins folder: `plugins:` or RIPOSTE_PLUGINS; connectors: `connectors.path`)",
                    playbook.name, uses.plugin
                )),
                Some(actions) if !actions.contains(&uses.action.as_str()) => problems.push(format!(
                    "playbook `{}`, step `{step_id}`: `{}` has no action `{}`",
                    playbook.name, uses.plugin, uses.action
                )),
                Some(_) => {}
            }
        }
        problems
    }

    /// The actions of the plugin or connector called `name`, if one is installed.
    fn actions(&self, name: &str) -> Option<Vec<&str>> {
        if let Some(connector) = self.connectors.as_ref().and_then(|c| c.get(name)) {
            return Some(connector.actions.keys().map(String::as_str).collect());
        }
        let manifest = self.plugins.as_ref()?.manifest(name)?;
        Some(manifest.actions.iter().map(|a| a.name.as_str()).collect())
    }
}

fn plugin_executor(
    plugins: &Option<Arc<plugin_host::PluginHost>>,
) -> Arc<dyn runner::StepExecutor> {
    match plugins {
        Some(host) => host.clone(),
        None => Arc::new(runner::NoPlugins),
    }
}
