//! Checks of every template: its syntax, what the sandbox allows in it, and that each variable it
//! reads exists where the template stands (roots, step ids and results, `vars`, `secrets`,
//! `incident`, `run`, `error`).

use super::graph::ancestors;
use super::*;

impl<'s> Compiler<'s> {
    pub(super) fn check_templates(
        &mut self,
        context: &CheckContext<'_>,
        trigger: &Trigger,
        outputs: &BTreeMap<String, Input>,
    ) {
        let early = Scope::new(&["trigger", "vars"], "the trigger");
        if let Some(split) = &trigger.split {
            self.check_input(context, &early, split);
        }
        for condition in [&trigger.filter, &trigger.resolved].into_iter().flatten() {
            self.check_source(context, &early, &condition.source, Kind::Expression);
        }
        if let Some(dedupe) = &trigger.dedupe {
            self.check_input(context, &early, &dedupe.key);
        }
        let incident_scope = Scope::new(&["trigger", "vars", "run"], "`incident`");
        for value in context.incident.values() {
            self.check_input(context, &incident_scope, value);
        }
        let ancestors = context.order.map(|order| ancestors(context.steps, order));
        for (index, step) in context.steps.iter().enumerate() {
            let visible = ancestors.as_ref().map(|a| a[index].as_slice());
            self.check_step_templates(context, step, visible, false);
        }
        for handler in context.handlers {
            self.check_step_templates(context, handler, None, true);
        }
        let output_scope = Scope::new(
            &["trigger", "vars", "run", "incident", "steps"],
            "`outputs`",
        );
        for value in outputs.values() {
            self.check_input(context, &output_scope, value);
        }
    }

    pub(super) fn check_step_templates(
        &mut self,
        context: &CheckContext<'_>,
        step: &Step,
        visible: Option<&[bool]>,
        is_handler: bool,
    ) {
        let mut roots = vec!["trigger", "vars", "run", "incident", "steps"];
        if is_handler {
            roots.push("error");
        }
        let mut scope = Scope::new(&roots, "`if`");
        scope.step = Some(step.id.as_str());
        scope.visible_steps = visible;
        if let Some(condition) = &step.condition {
            self.check_source(context, &scope, &condition.source, Kind::Expression);
        }
        if let Some(foreach) = &step.foreach {
            scope.place = "`foreach`";
            self.check_input(context, &scope, &foreach.items);
        }
        if let Some(message) = step.approval.as_ref().and_then(|a| a.message.as_ref()) {
            scope.place = "the approval message";
            self.check_input(context, &scope, message);
        }
        roots.push("secrets");
        if let Some(foreach) = &step.foreach {
            roots.push(&foreach.var);
        }
        scope.roots = roots.clone();
        scope.place = "`with`";
        self.check_input(context, &scope, &step.with);
        if step.undo.is_none() && step.expires.is_none() {
            return;
        }
        // An undo runs after its step succeeded: it reads what the step's `with` may, the step's
        // own result, and its recorded `input` and `output`.
        let mut after_step = visible.map(<[bool]>::to_vec);
        if let (Some(after), Some(&index)) =
            (&mut after_step, context.step_index.get(step.id.as_str()))
        {
            after[index] = true;
        }
        roots.extend_from_slice(UNDO_ROOTS);
        let mut undo_scope = Scope::new(&roots, "`undo`");
        undo_scope.visible_steps = after_step.as_deref();
        undo_scope.step = Some(step.id.as_str());
        if let Some(undo) = &step.undo {
            self.check_input(context, &undo_scope, &undo.with);
        }
        if let Some(expires) = &step.expires {
            undo_scope.roots.retain(|root| *root != "secrets");
            undo_scope.place = "`expires`";
            self.check_input(context, &undo_scope, expires);
        }
    }

    pub(super) fn check_input(
        &mut self,
        context: &CheckContext<'_>,
        scope: &Scope<'_>,
        input: &Input,
    ) {
        for (source, kind) in input.sources() {
            self.check_source(context, scope, source, kind);
        }
    }

    pub(super) fn check_source(
        &mut self,
        context: &CheckContext<'_>,
        scope: &Scope<'_>,
        source: &Source,
        kind: Kind,
    ) {
        let analysis = match template::analyze(source, kind) {
            Ok(analysis) => analysis,
            Err((position, message)) => {
                let hint = syntax_hint(&message);
                let what = match kind {
                    Kind::Expression => "expression",
                    Kind::Template => "template",
                };
                self.error_with_hint(
                    "template-syntax",
                    position,
                    format!("`{}` — invalid {what}: {message}", source.text.trim()),
                    hint,
                );
                return;
            }
        };
        let mut unknown = false;
        for path in analysis.paths {
            if let Err((message, hint)) = check_path(context, scope, &path) {
                let needle = path.split('.').take(2).collect::<Vec<_>>().join(".");
                let position = source
                    .text
                    .find(&needle)
                    .map(|offset| template::position_in(source, offset))
                    .unwrap_or(source.position);
                self.error_with_hint("unknown-reference", position, message, hint);
                unknown = true;
            }
        }
        // What a template may not do is only worth saying of one that reads what it may.
        if let Some((position, message)) = analysis.refused.filter(|_| !unknown) {
            self.error_with_hint(
                "template-sandbox",
                position,
                format!("`{}` — {message}", source.text.trim()),
                "see what templates may do in the template reference in docs/playbooks.md",
            );
        }
    }
}

/// What a playbook declares, for checking template references.
pub(super) struct CheckContext<'a> {
    pub(super) steps: &'a [Step],
    pub(super) step_index: HashMap<&'a str, usize>,
    pub(super) handlers: &'a [Step],
    pub(super) vars: &'a serde_json::Map<String, serde_json::Value>,
    pub(super) secrets: &'a [String],
    pub(super) incident: &'a BTreeMap<String, Input>,
    pub(super) order: Option<&'a [usize]>,
}

/// Which variables a template may read where it stands.
pub(super) struct Scope<'a> {
    roots: Vec<&'a str>,
    place: &'static str,
    /// The step whose template this is.
    step: Option<&'a str>,
    /// Steps guaranteed to have finished before this template runs; `None` if unknown.
    visible_steps: Option<&'a [bool]>,
}

impl<'a> Scope<'a> {
    pub(super) fn new(roots: &[&'a str], place: &'static str) -> Self {
        Scope {
            roots: roots.to_vec(),
            place,
            step: None,
            visible_steps: None,
        }
    }
}

pub(super) fn check_path(
    context: &CheckContext<'_>,
    scope: &Scope<'_>,
    path: &str,
) -> Result<(), (String, String)> {
    let mut segments = path.split('.');
    let root = segments.next().unwrap_or_default();
    let second = segments.next();
    let third = segments.next();
    if template::is_global_function(root) {
        return Ok(());
    }
    if !scope.roots.contains(&root) {
        if ROOTS.contains(&root) {
            let hint = match root {
                "secrets" => "secrets may only be used in `with:`, so they never reach conditions, logs or outputs".to_owned(),
                "steps" if scope.place == "`case`" => "a run joins its case before any step runs (what steps find reaches the case as observables)".to_owned(),
                "steps" => "the trigger is checked before any step runs".to_owned(),
                "error" => "`error` exists only in failure handlers".to_owned(),
                "input" | "output" => "a step's recorded `input` and `output` exist only in its `undo:` and `expires:`".to_owned(),
                _ => format!("here you can use {}", backticked(&scope.roots)),
            };
            return Err((format!("`{root}` cannot be used in {}", scope.place), hint));
        }
        let hint = suggest(root, &scope.roots)
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("here you can use {}", backticked(&scope.roots)));
        return Err((format!("unknown variable `{root}`"), hint));
    }
    let Some(second) = second else { return Ok(()) };
    match root {
        "steps" => {
            if !context.step_index.contains_key(second) {
                let ids: Vec<&str> = context
                    .steps
                    .iter()
                    .filter(|s| !s.id.is_placeholder())
                    .map(|s| s.id.as_str())
                    .collect();
                let hint = suggest(second, &ids)
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("steps are {}", backticked(&ids)));
                return Err((
                    format!("`steps.{second}` refers to a step that does not exist"),
                    hint,
                ));
            }
            let index = context.step_index.get(second).copied();
            if let (Some(visible), Some(step), Some(index)) =
                (scope.visible_steps, scope.step, index)
                && !visible[index]
            {
                return Err((
                    format!(
                        "step `{step}` reads `steps.{second}` but does not need `{second}`, so it may run first"
                    ),
                    format!("add `{second}` to the `needs` of `{step}`"),
                ));
            }
            if let Some(field) = third
                && !STEP_RESULT_FIELDS.contains(&field)
            {
                let hint = suggest(field, STEP_RESULT_FIELDS)
                    .map(|s| format!("did you mean `steps.{second}.{s}`?"))
                    .unwrap_or_else(|| {
                        format!("a step result has {}", backticked(STEP_RESULT_FIELDS))
                    });
                return Err((format!("`steps.{second}` has no field `{field}`"), hint));
            }
            Ok(())
        }
        "vars" => known_key(second, context.vars.keys().map(String::as_str), "vars"),
        "secrets" => known_key(
            second,
            context.secrets.iter().map(String::as_str),
            "secrets",
        )
        .map_err(|(m, _)| {
            (
                m,
                format!("declare it in the top-level `secrets:` list, e.g. `secrets: [{second}]`"),
            )
        }),
        "incident" => known_key(
            second,
            context.incident.keys().map(String::as_str),
            "incident",
        ),
        "run" => known_key(second, RUN_FIELDS.iter().copied(), "run"),
        "error" => known_key(second, ERROR_FIELDS.iter().copied(), "error"),
        _ => Ok(()),
    }
}

pub(super) fn known_key<'k>(
    key: &str,
    known: impl Iterator<Item = &'k str>,
    root: &str,
) -> Result<(), (String, String)> {
    let known: Vec<&str> = known.collect();
    if known.contains(&key) {
        return Ok(());
    }
    let hint = suggest(key, &known)
        .map(|s| format!("did you mean `{root}.{s}`?"))
        .unwrap_or_else(|| {
            if known.is_empty() {
                format!("nothing is declared under `{root}`")
            } else {
                format!("`{root}` has {}", backticked(&known))
            }
        });
    Err((format!("`{root}.{key}` is not declared"), hint))
}

/// A hint from what the parser says it expected where it stopped: a missing `}}` is not a
/// missing filter name.
pub(super) fn syntax_hint(message: &str) -> String {
    let Some((_, expected)) = message.rsplit_once(", expected ") else {
        return "see the template reference in docs/playbooks.md".to_owned();
    };
    let expected = expected.trim_end_matches('.');
    match expected {
        "end of variable block" => "close `{{` with `}}`".to_owned(),
        "end of block" => {
            "close `{%` with `%}`, and every `{% if %}` or `{% for %}` with its `{% endif %}` or `{% endfor %}`".to_owned()
        }
        "identifier" | "identifier or integer" => {
            "a name is missing here: after `|` a filter, after `.` a field".to_owned()
        }
        "expression" => {
            "an expression is missing here: a bracket left open, or an operator without its operand".to_owned()
        }
        other => format!("the template parser expected {other} here"),
    }
}
