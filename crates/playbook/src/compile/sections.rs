//! Decoding the sections of a playbook: `vars`, `secrets`, `plugins`, the trigger, and the steps
//! with their `foreach`, `retry`, `on_failure` and `approval`.

use super::*;

impl<'s> Compiler<'s> {
    pub(super) fn vars(&mut self, node: &Node) -> serde_json::Map<String, serde_json::Value> {
        match node.to_json() {
            serde_json::Value::Object(map) => map,
            _ => {
                self.error(
                    "wrong-type",
                    node.pos,
                    format!("`vars` must be a mapping, found {}", node.kind()),
                );
                serde_json::Map::new()
            }
        }
    }

    pub(super) fn secret_names(&mut self, node: &Node) -> Vec<String> {
        let names = self.string_list(node, "secrets");
        for (item, name) in one_or_many(node).into_iter().zip(&names) {
            if !StepId::is_valid(name) {
                self.error_with_hint(
                    "invalid-name",
                    item.pos,
                    format!("`{name}` is not a valid secret name"),
                    "secrets are read as `secrets.<name>`, so use lowercase letters, digits and `_`",
                );
            }
        }
        names
    }

    pub(super) fn plugin_grants(
        &mut self,
        node: &Node,
        declared_secrets: &[String],
    ) -> BTreeMap<String, PluginGrant> {
        let Value::Map(entries) = &node.value else {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`plugins` must be a mapping, found {}", node.kind()),
                "write `plugins: { <plugin>: { hosts: [...], secrets: [...] } }`",
            );
            return BTreeMap::new();
        };
        let mut grants = BTreeMap::new();
        for (key, value) in entries {
            let name = key.scalar_text();
            let Some(fields) = self.mapping(
                value,
                &format!("the grant of `{name}`"),
                PLUGIN_GRANT_FIELDS,
            ) else {
                continue;
            };
            let mut grant = PluginGrant::default();
            if let Some(hosts) = fields.get("hosts") {
                grant.hosts = self.string_list(hosts, "hosts");
                let items = one_or_many(hosts);
                for (item, host) in items.into_iter().zip(&grant.hosts) {
                    if !is_host_pattern(host) {
                        self.error_with_hint(
                            "invalid-host",
                            item.pos,
                            format!("`{host}` is not a host"),
                            "write a host name, `host:port` or `*.domain`, without a scheme or path",
                        );
                    }
                }
            }
            if let Some(secrets) = fields.get("secrets") {
                grant.secrets = self.string_list(secrets, "secrets");
                let items = one_or_many(secrets);
                for (item, secret) in items.into_iter().zip(&grant.secrets) {
                    if !declared_secrets.contains(secret) {
                        self.error_with_hint(
                            "unknown-reference",
                            item.pos,
                            format!("`{secret}` is granted to `{name}` but not declared"),
                            format!("add it to the top-level `secrets:` list, e.g. `secrets: [{secret}]`"),
                        );
                    }
                }
            }
            grants.insert(name, grant);
        }
        grants
    }

    pub(super) fn trigger(&mut self, node: &Node) -> Trigger {
        let mut trigger = Trigger {
            webhook: String::new(),
            auth: None,
            public: false,
            split: None,
            filter: None,
            dedupe: None,
            resolved: None,
            schedule: None,
        };
        let Some(fields) = self.mapping(node, "`trigger`", TRIGGER_FIELDS) else {
            return trigger;
        };
        if let Some(webhook) = self.required(&fields, "webhook", "`trigger`") {
            trigger.webhook = self.string(webhook, "webhook");
            let valid = !trigger.webhook.is_empty()
                && trigger.webhook.len() <= 64
                && trigger
                    .webhook
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid {
                self.error_with_hint(
                    "invalid-name",
                    webhook.pos,
                    format!("`{}` is not a valid webhook name", trigger.webhook),
                    "the webhook is served at `/hooks/<webhook>`: use lowercase letters, digits, `-` and `_`",
                );
            }
        }
        trigger.auth = fields.get("auth").map(|n| self.string(n, "auth"));
        trigger.public = fields
            .get("public")
            .map(|n| self.boolean(n, "public"))
            .unwrap_or(false);
        if let (Some(_), true, Some(public)) = (&trigger.auth, trigger.public, fields.get("public"))
        {
            self.error_with_hint(
                "conflict",
                public.pos,
                "a trigger cannot both require `auth` and be `public`",
                "remove `public: true` to require authentication",
            );
        }
        trigger.schedule = fields.get("schedule").and_then(|n| self.schedule(n));
        // A schedule needs no sender: without `auth` or `public`, its webhook takes nothing.
        if trigger.auth.is_none() && !trigger.public && fields.get("schedule").is_none() {
            self.error_with_hint(
                "missing-auth",
                fields.position,
                "`trigger` names no `auth` profile, so every delivery would be refused",
                "add `auth: <profile>` naming a profile in the server configuration, or `public: true` to accept unauthenticated deliveries",
            );
        }
        trigger.split = fields.get("split").map(|n| self.split(n));
        trigger.filter = fields.get("filter").map(|n| self.condition(n, "filter"));
        trigger.dedupe = fields.get("dedupe").map(|n| self.dedupe(n));
        trigger.resolved = fields
            .get("resolved")
            .map(|n| self.condition(n, "resolved"));
        if let (Some(resolved), None) = (fields.get("resolved"), &trigger.dedupe) {
            self.error_with_hint(
                "missing-dedupe",
                resolved.pos,
                "`resolved` needs a `dedupe` key: the key is how a resolved alert finds the run its firing alert started",
                "add `dedupe: { key: \"{{ trigger.<id of the alert> }}\", window: 24h }`",
            );
        }
        trigger
    }

    pub(super) fn schedule(&mut self, node: &Node) -> Option<Schedule> {
        let fields = self.mapping(node, "`schedule`", SCHEDULE_FIELDS)?;
        let cron = self.required(&fields, "cron", "`schedule`")?;
        let (cron_pos, cron) = (cron.pos, self.string(cron, "cron"));
        let timezone = fields
            .get("timezone")
            .map_or_else(|| "UTC".to_owned(), |n| self.string(n, "timezone"));
        let catch_up = fields
            .get("catch_up")
            .map(|n| self.duration(n, "catch_up", MAX_CATCH_UP));
        if timezone.parse::<chrono_tz::Tz>().is_err() {
            let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
            let hint = match suggest(&timezone, &zones) {
                Some(zone) => format!("did you mean `{zone}`?"),
                None => "use an IANA name, as in `Europe/Paris` or `UTC`".to_owned(),
            };
            let at = fields.get("timezone").map_or(cron_pos, |n| n.pos);
            self.error_with_hint(
                "invalid-value",
                at,
                format!("`{timezone}` is not a time zone of the IANA database"),
                hint,
            );
            return None;
        }
        match Schedule::new(&cron, &timezone, catch_up) {
            Ok(schedule) => Some(schedule),
            Err(problem) => {
                self.error_with_hint(
                    "invalid-value",
                    cron_pos,
                    problem,
                    "five fields (minute hour day-of-month month day-of-week), or six with seconds first, as in `0 */15 * * * *`",
                );
                None
            }
        }
    }

    pub(super) fn dedupe(&mut self, node: &Node) -> Dedupe {
        let mut dedupe = Dedupe {
            key: Input::Literal(serde_json::Value::Null),
            window: Duration::from_secs(600),
        };
        if let Some(fields) = self.mapping(node, "`dedupe`", DEDUPE_FIELDS) {
            if let Some(key) = self.required(&fields, "key", "`dedupe`") {
                dedupe.key = self.template_string(key, "key");
            }
            if let Some(window) = fields.get("window") {
                dedupe.window = self.duration(window, "window", MAX_DEDUPE_WINDOW);
            }
        }
        dedupe
    }

    pub(super) fn steps(&mut self, node: &Node, what: &str, first_index: usize) -> Vec<Step> {
        let Value::Seq(items) = &node.value else {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`{what}` must be a list of steps, found {}", node.kind()),
                "start each step with `- id: <id>`",
            );
            return Vec::new();
        };
        if what == "steps" && items.is_empty() {
            self.error(
                "missing-field",
                node.pos,
                "`steps` is empty; a playbook needs at least one step",
            );
        }
        if items.len() > MAX_STEPS {
            self.error(
                "too-large",
                node.pos,
                format!(
                    "`{what}` has {} entries; at most {MAX_STEPS} are allowed",
                    items.len()
                ),
            );
            return Vec::new();
        }
        let is_handler = what == "handlers";
        items
            .iter()
            .enumerate()
            .map(|(offset, item)| self.step(item, first_index + offset, is_handler))
            .collect()
    }

    pub(super) fn step(&mut self, node: &Node, index: usize, is_handler: bool) -> Step {
        let what = if is_handler { "a handler" } else { "a step" };
        let mut step = Step {
            id: StepId::placeholder(index),
            name: None,
            uses: PluginRef {
                plugin: String::new(),
                action: String::new(),
                version: None,
            },
            with: Input::Map(Vec::new()),
            condition: None,
            foreach: None,
            needs: Vec::new(),
            timeout: DEFAULT_STEP_TIMEOUT,
            retry: RetryPolicy::default(),
            on_failure: OnFailure::Fail,
            approval: None,
            phase: None,
            undo: None,
            expires: None,
            position: node.pos,
        };
        let Some(fields) = self.mapping(node, what, STEP_FIELDS) else {
            return step;
        };
        if let Some(id) = self.required(&fields, "id", what) {
            let text = self.string(id, "id");
            match StepId::try_from(text) {
                Ok(valid) => step.id = valid,
                Err(text) => self.error_with_hint(
                    "invalid-id",
                    id.pos,
                    format!("`{text}` is not a valid step id"),
                    format!(
                        "templates read steps as `steps.<id>`, so ids use lowercase letters, digits and `_`: try `{}`",
                        suggest_id(&text)
                    ),
                ),
            }
        }
        step.name = fields.get("name").map(|n| self.string(n, "name"));
        if let Some(uses) = self.required(&fields, "uses", what) {
            step.uses = self.plugin_ref(uses);
            if step.uses.plugin == crate::calls::PLAYBOOK_CALL && step.uses.version.is_some() {
                self.error_with_hint(
                    "invalid-uses",
                    uses.pos,
                    "a sub-playbook cannot be pinned to a version",
                    "write `uses: playbook/<name>`: the playbook of that name loaded beside this one runs",
                );
            }
        }
        if let Some(with) = fields.get("with") {
            if !matches!(with.value, Value::Map(_)) {
                self.error_with_hint(
                    "wrong-type",
                    with.pos,
                    format!("`with` must be a mapping of inputs, found {}", with.kind()),
                    "write inputs as `name: value` pairs",
                );
            }
            step.with = self.input(with);
        }
        step.condition = fields.get("if").map(|n| self.condition(n, "if"));
        step.foreach = fields.get("foreach").map(|n| self.foreach(n));
        if let Some(needs) = fields.get("needs") {
            if is_handler {
                self.error_with_hint(
                    "handler-needs",
                    needs.pos,
                    "handlers cannot have `needs`",
                    "handlers run in the order `on_failure` lists them",
                );
            }
            step.needs = self.step_refs(needs, index, "needs", ReferenceKind::Needs);
        }
        if let Some(timeout) = fields.get("timeout") {
            step.timeout = self.duration(timeout, "timeout", MAX_STEP_TIMEOUT);
        }
        if let Some(retry) = fields.get("retry") {
            step.retry = self.retry(retry);
        }
        if let Some(on_failure) = fields.get("on_failure") {
            step.on_failure = self.on_failure(on_failure, index);
        }
        step.approval = fields.get("approval").map(|n| self.approval(n));
        if let (true, Some(approval)) = (is_handler, fields.get("approval")) {
            self.error_with_hint(
                "handler-approval",
                approval.pos,
                "handlers cannot wait for approval",
                "handlers respond to a failure as it happens; gate the step that fails instead",
            );
        }
        step.phase = fields.get("phase").map(|n| self.step_phase(n));
        if let Some(undo) = fields.get("undo") {
            step.undo = Some(self.undo(undo, &step));
            if is_handler {
                self.error_with_hint(
                    "handler-undo",
                    undo.pos,
                    "handlers cannot be undone",
                    "give `undo:` to the step that acts; a handler responds to a failure",
                );
            }
            if let Some(foreach) = fields.get("foreach") {
                self.error_with_hint(
                    "foreach-undo",
                    foreach.pos,
                    "a `foreach` step cannot have `undo:`",
                    "undo acts on one step's input and output; act on a list with one step whose plugin takes the list",
                );
            }
        }
        if let Some(expires) = fields.get("expires") {
            step.expires = Some(self.expires(expires));
            if step.undo.is_none() {
                self.error_with_hint(
                    "expires-without-undo",
                    expires.pos,
                    "`expires` needs an `undo:` to run when the step's effect expires",
                    "add `undo: { uses: <plugin>/<action>, with: {...} }` to the step",
                );
            }
        }
        step
    }

    /// `undo:`: its own plugin call; timeout and retry default to the step's.
    fn undo(&mut self, node: &Node, step: &Step) -> Undo {
        let mut undo = Undo {
            uses: step.uses.clone(),
            with: Input::Map(Vec::new()),
            timeout: step.timeout,
            retry: step.retry.clone(),
        };
        let Some(fields) = self.mapping(node, "`undo`", UNDO_FIELDS) else {
            return undo;
        };
        if let Some(uses) = self.required(&fields, "uses", "`undo`") {
            undo.uses = self.plugin_ref(uses);
        }
        if let Some(with) = fields.get("with") {
            if !matches!(with.value, Value::Map(_)) {
                self.error(
                    "wrong-type",
                    with.pos,
                    format!("`with` must be a mapping of inputs, found {}", with.kind()),
                );
            }
            undo.with = self.input(with);
        }
        if let Some(timeout) = fields.get("timeout") {
            undo.timeout = self.duration(timeout, "timeout", MAX_STEP_TIMEOUT);
        }
        if let Some(retry) = fields.get("retry") {
            undo.retry = self.retry(retry);
        }
        undo
    }

    /// `expires:` a duration, checked now, or a template that renders one when the step succeeds.
    fn expires(&mut self, node: &Node) -> Input {
        match &node.value {
            Value::String(text) if text.contains("{{") || text.contains("{%") => {
                self.template_string(node, "expires")
            }
            _ => {
                let duration = self.duration(node, "expires", MAX_EXPIRY);
                Input::Literal(serde_json::Value::String(
                    humantime::format_duration(duration).to_string(),
                ))
            }
        }
    }

    pub(super) fn plugin_ref(&mut self, node: &Node) -> PluginRef {
        let text = self.string(node, "uses");
        let (path, version) = match text.split_once('@') {
            Some((path, version)) => (path, Some(version.to_owned())),
            None => (text.as_str(), None),
        };
        let valid_name = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        let parsed = path.split_once('/').filter(|(plugin, action)| {
            valid_name(plugin)
                && valid_name(action)
                && version.as_deref().is_none_or(|v| {
                    !v.is_empty()
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
                })
        });
        match parsed {
            Some((plugin, action)) => PluginRef {
                plugin: plugin.to_owned(),
                action: action.to_owned(),
                version,
            },
            None => {
                if matches!(node.value, Value::String(_)) {
                    self.error_with_hint(
                        "invalid-uses",
                        node.pos,
                        format!("`{text}` is not a plugin action"),
                        "write `uses: <plugin>/<action>`, optionally pinned as `<plugin>/<action>@<version>`, e.g. `enrich-ioc/check-ip@1.0.0`",
                    );
                }
                PluginRef {
                    plugin: String::new(),
                    action: String::new(),
                    version: None,
                }
            }
        }
    }

    pub(super) fn step_refs(
        &mut self,
        node: &Node,
        from: usize,
        what: &str,
        kind: ReferenceKind,
    ) -> Vec<StepId> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::String(_) => vec![node],
            _ => {
                self.error(
                    "wrong-type",
                    node.pos,
                    format!(
                        "`{what}` must be a step id or a list of step ids, found {}",
                        node.kind()
                    ),
                );
                return Vec::new();
            }
        };
        let mut ids = Vec::new();
        for item in items {
            let text = self.string(item, what);
            self.references.push(Reference {
                from,
                target: text.clone(),
                position: item.pos,
                kind,
            });
            if let Ok(id) = StepId::try_from(text) {
                ids.push(id);
            }
        }
        ids
    }

    /// `split`: a template on the delivery that yields its alerts. A literal (a list, a number,
    /// `null` from an empty `split:`) has nothing of the delivery to split.
    fn split(&mut self, node: &Node) -> Input {
        match &node.value {
            Value::String(_) => self.list_template(node, "split"),
            Value::Map(_) if self.unquoted_template(node) => Input::List(Vec::new()),
            _ => {
                self.error_with_hint(
                    "wrong-type",
                    node.pos,
                    format!(
                        "`split` must be a template that yields a list, found {}",
                        node.kind()
                    ),
                    "e.g. `split: \"{{ trigger.alerts }}\"`",
                );
                Input::List(Vec::new())
            }
        }
    }

    pub(super) fn foreach(&mut self, node: &Node) -> Foreach {
        let mut foreach = Foreach {
            items: Input::List(Vec::new()),
            var: "item".to_owned(),
            concurrency: 4,
        };
        match &node.value {
            Value::String(_) | Value::Seq(_) => foreach.items = self.list_template(node, "foreach"),
            Value::Map(_) if self.unquoted_template(node) => {}
            Value::Map(_) => {
                if let Some(fields) = self.mapping(node, "`foreach`", FOREACH_FIELDS) {
                    if let Some(items) = self.required(&fields, "items", "`foreach`") {
                        foreach.items = self.list_template(items, "foreach");
                    }
                    if let Some(var) = fields.get("as") {
                        foreach.var = self.string(var, "as");
                        if !StepId::is_valid(&foreach.var) || ROOTS.contains(&foreach.var.as_str())
                        {
                            self.error_with_hint(
                                "invalid-name",
                                var.pos,
                                format!("`{}` cannot name the loop variable", foreach.var),
                                format!(
                                    "use a lowercase identifier other than {}",
                                    backticked(ROOTS)
                                ),
                            );
                        }
                    }
                    if let Some(concurrency) = fields.get("concurrency") {
                        foreach.concurrency =
                            self.integer(concurrency, "concurrency", 1, MAX_CONCURRENCY) as usize;
                    }
                }
            }
            _ => self.error_with_hint(
                "wrong-type",
                node.pos,
                format!(
                    "`foreach` must be a list or a template that yields one, found {}",
                    node.kind()
                ),
                "e.g. `foreach: \"{{ trigger.iocs }}\"`",
            ),
        }
        foreach
    }

    /// The list a `foreach` walks or a `split` makes: a literal list, or a template that yields
    /// one. A plain string is neither, and is almost always a template missing its `{{ }}`.
    pub(super) fn list_template(&mut self, node: &Node, what: &str) -> Input {
        let items = self.input(node);
        if let Input::Literal(serde_json::Value::String(text)) = &items {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`{what}` needs a list, but `{text}` is plain text"),
                format!("to loop over a value of the event, write `\"{{{{ {text} }}}}\"`"),
            );
        }
        items
    }

    pub(super) fn retry(&mut self, node: &Node) -> RetryPolicy {
        let mut retry = RetryPolicy::default();
        if let Value::Int(_) | Value::Float(_) = node.value {
            retry.max_attempts = self.integer(node, "retry", 1, MAX_ATTEMPTS) as u32;
            return retry;
        }
        let Some(fields) = self.mapping(node, "`retry`", RETRY_FIELDS) else {
            return retry;
        };
        // Writing a retry policy means wanting retries: without `max_attempts`, three attempts.
        retry.max_attempts = DEFAULT_ATTEMPTS_WITH_POLICY;
        if let Some(max) = fields.get("max_attempts") {
            retry.max_attempts = self.integer(max, "max_attempts", 1, MAX_ATTEMPTS) as u32;
        }
        if let Some(backoff) = fields.get("backoff") {
            match &backoff.value {
                Value::Map(_) => {
                    if let Some(b) = self.mapping(backoff, "`backoff`", BACKOFF_FIELDS) {
                        if let Some(initial) = b.get("initial") {
                            retry.initial_delay =
                                self.duration(initial, "initial", MAX_STEP_TIMEOUT);
                        }
                        if let Some(max) = b.get("max") {
                            retry.max_delay = self.duration(max, "max", MAX_STEP_TIMEOUT);
                        }
                        if let Some(multiplier) = b.get("multiplier") {
                            retry.multiplier = match multiplier.value {
                                Value::Int(i) if (1..=10).contains(&i) => i as f64,
                                Value::Float(f) if (1.0..=10.0).contains(&f) => f,
                                _ => {
                                    self.error(
                                        "out-of-range",
                                        multiplier.pos,
                                        "`multiplier` must be a number from 1 to 10",
                                    );
                                    2.0
                                }
                            };
                        }
                        if let Some(jitter) = b.get("jitter") {
                            retry.jitter = self.boolean(jitter, "jitter");
                        }
                        if retry.initial_delay > retry.max_delay {
                            self.error(
                                "out-of-range",
                                backoff.pos,
                                "the backoff's `initial` delay is longer than its `max`",
                            );
                        }
                    }
                }
                _ => {
                    retry.initial_delay = self.duration(backoff, "backoff", MAX_STEP_TIMEOUT);
                    retry.max_delay = retry.max_delay.max(retry.initial_delay);
                }
            }
        }
        if let Some(on) = fields.get("on") {
            retry.retry_on = Vec::new();
            let items = one_or_many(on);
            for item in items {
                let text = self.string(item, "on");
                match ErrorKind::parse(&text) {
                    Some(kind) => retry.retry_on.push(kind),
                    None => {
                        let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                        let hint = match suggest(&text, &kinds) {
                            Some(better) => format!("did you mean `{better}`?"),
                            None => format!("expected one of {}", backticked(&kinds)),
                        };
                        self.error_with_hint(
                            "unknown-error-kind",
                            item.pos,
                            format!("`{text}` is not an error kind"),
                            hint,
                        );
                    }
                }
            }
        }
        retry
    }

    pub(super) fn on_failure(&mut self, node: &Node, from: usize) -> OnFailure {
        match &node.value {
            Value::String(text) if text == "fail" => OnFailure::Fail,
            Value::String(text) if text == "continue" => OnFailure::Continue,
            Value::Seq(_) => OnFailure::Handle {
                handlers: self.step_refs(node, from, "on_failure", ReferenceKind::Handler),
                then_continue: false,
            },
            Value::Map(_) => {
                let Some(fields) = self.mapping(node, "`on_failure`", ON_FAILURE_FIELDS) else {
                    return OnFailure::Fail;
                };
                let handlers = match self.required(&fields, "run", "`on_failure`") {
                    Some(run) => self.step_refs(run, from, "run", ReferenceKind::Handler),
                    None => Vec::new(),
                };
                let then_continue = match fields.get("then") {
                    Some(then) => match &then.value {
                        Value::String(t) if t == "fail" => false,
                        Value::String(t) if t == "continue" => true,
                        _ => {
                            self.error_with_hint("invalid-value", then.pos, "`then` must be `fail` or `continue`", "`fail` ends the run after the handlers, `continue` goes on with the steps that do not need this one");
                            false
                        }
                    },
                    None => false,
                };
                OnFailure::Handle {
                    handlers,
                    then_continue,
                }
            }
            _ => {
                self.error_with_hint(
                    "invalid-value",
                    node.pos,
                    "`on_failure` must be `fail`, `continue`, a list of handlers, or `{ run: [...], then: fail|continue }`",
                    "handlers are declared under the top-level `handlers:`",
                );
                OnFailure::Fail
            }
        }
    }

    pub(super) fn approval(&mut self, node: &Node) -> Approval {
        let mut approval = Approval {
            approvers: Vec::new(),
            timeout: DEFAULT_APPROVAL_TIMEOUT,
            on_timeout: ApprovalTimeout::Deny,
            message: None,
            slack: None,
        };
        let Some(fields) = self.mapping(node, "`approval`", APPROVAL_FIELDS) else {
            return approval;
        };
        if let Some(approvers) = self.required(&fields, "approvers", "`approval`") {
            approval.approvers = self.string_list(approvers, "approvers");
            if approval.approvers.is_empty() {
                self.error(
                    "missing-field",
                    approvers.pos,
                    "`approvers` is empty; name at least one user or group",
                );
            }
        }
        if let Some(timeout) = fields.get("timeout") {
            approval.timeout = self.duration(timeout, "timeout", MAX_APPROVAL_TIMEOUT);
        }
        if let Some(on_timeout) = fields.get("on_timeout") {
            approval.on_timeout = match &on_timeout.value {
                Value::String(t) if t == "deny" => ApprovalTimeout::Deny,
                Value::String(t) if t == "approve" => ApprovalTimeout::Approve,
                Value::String(t) if t == "fail" => ApprovalTimeout::Fail,
                _ => {
                    self.error_with_hint(
                        "invalid-value",
                        on_timeout.pos,
                        "`on_timeout` must be `deny`, `approve` or `fail`",
                        "`deny` skips the step, `approve` runs it, `fail` fails it",
                    );
                    ApprovalTimeout::Deny
                }
            };
        }
        approval.message = fields
            .get("message")
            .map(|n| self.template_string(n, "message"));
        approval.slack = fields.get("slack").map(|n| self.string(n, "slack"));
        approval
    }
}

/// `api.example.com`, `api.example.com:8443` or `*.example.com`.
pub(super) fn is_host_pattern(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}
