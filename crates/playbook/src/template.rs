//! Templates and conditions, evaluated by minijinja in a sandbox.
//!
//! A string in a playbook is one of three things: plain text (no `{{`/`{%`), a lone expression
//! (`"{{ steps.enrich.output.score }}"`, which keeps its type: a number stays a number, a list a
//! list), or a text template that renders to a string. Conditions (`if:`, `filter:`) are bare
//! expressions; wrapping them in `{{ }}` is accepted too, as GitHub Actions users expect.
//!
//! The sandbox: undefined variables are errors (a typo must not silently become an empty string),
//! every evaluation has a fuel budget, and rendered text is capped in size.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};

use crate::diagnostic::Position;
use crate::error::Error;
use crate::filters;

/// Instructions one evaluation may execute before it is stopped.
pub const FUEL_PER_EVALUATION: u64 = 100_000;
/// Largest text a template may render to.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// Template text and where it starts in the playbook file.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub text: String,
    pub position: Position,
}

/// A value in `with:`, `outputs:` and similar places, whose leaves may be templates.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Literal(serde_json::Value),
    /// `"{{ expr }}"` and nothing else: evaluates to the expression's value, type preserved.
    Expression(Source),
    /// Text with template tags inside: renders to a string.
    Template(Source),
    List(Vec<Input>),
    Map(Vec<(String, Input)>),
}

/// A boolean expression such as `steps.enrich.output.score >= 80`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub source: Source,
}

impl Input {
    /// Evaluates every template leaf against `context` (trigger, steps, vars, …) into JSON.
    pub fn render(&self, context: &minijinja::Value) -> Result<serde_json::Value, Error> {
        match self {
            Input::Literal(value) => Ok(value.clone()),
            Input::Expression(source) => {
                let value = eval_expression(source, context)?;
                to_json(&value, source)
            }
            Input::Template(source) => render_text(source, context).map(serde_json::Value::String),
            Input::List(items) => items
                .iter()
                .map(|item| item.render(context))
                .collect::<Result<Vec<_>, _>>()
                .map(serde_json::Value::Array),
            Input::Map(entries) => entries
                .iter()
                .map(|(key, value)| Ok((key.clone(), value.render(context)?)))
                .collect::<Result<serde_json::Map<_, _>, Error>>()
                .map(serde_json::Value::Object),
        }
    }

    /// Every template in this input, for checks.
    pub(crate) fn sources(&self) -> Vec<(&Source, Kind)> {
        let mut found = Vec::new();
        self.collect_sources(&mut found);
        found
    }

    fn collect_sources<'a>(&'a self, found: &mut Vec<(&'a Source, Kind)>) {
        match self {
            Input::Literal(_) => {}
            Input::Expression(source) => found.push((source, Kind::Expression)),
            Input::Template(source) => found.push((source, Kind::Template)),
            Input::List(items) => items.iter().for_each(|i| i.collect_sources(found)),
            Input::Map(entries) => entries.iter().for_each(|(_, v)| v.collect_sources(found)),
        }
    }

    /// Classifies a string from the playbook as plain text, a lone expression or a template.
    pub(crate) fn from_text(text: &str, position: Position) -> Input {
        if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
            return Input::Literal(serde_json::Value::String(text.to_owned()));
        }
        let source = Source {
            text: text.to_owned(),
            position,
        };
        match lone_expression(text) {
            Some(expr) => Input::Expression(Source {
                text: expr.to_owned(),
                position: Position::new(position.line, position.column + offset_of(text, expr)),
            }),
            None => Input::Template(source),
        }
    }
}

impl Condition {
    pub(crate) fn from_text(text: &str, position: Position) -> Condition {
        let expr = lone_expression(text).unwrap_or(text.trim());
        let column = position.column + offset_of(text, expr);
        Condition {
            source: Source {
                text: expr.to_owned(),
                position: Position::new(position.line, column),
            },
        }
    }

    /// Evaluates the condition with Jinja truthiness (empty lists, `0`, `none` are false).
    pub fn evaluate(&self, context: &minijinja::Value) -> Result<bool, Error> {
        eval_expression(&self.source, context).map(|value| value.is_true())
    }
}

/// Whether a template is a bare expression or a text template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Expression,
    Template,
}

/// The shared, sandboxed template environment.
pub(crate) fn engine() -> &'static Environment<'static> {
    static ENGINE: OnceLock<Environment<'static>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL_PER_EVALUATION));
        env.set_recursion_limit(64);
        filters::register(&mut env);
        env
    })
}

/// Names usable in templates that are functions rather than variables.
pub(crate) fn is_global_function(name: &str) -> bool {
    engine().globals().any(|(global, _)| global == name)
}

/// Parses a template or expression once: the dotted variable paths it reads
/// (`steps.enrich.output.score`), for reference checks, or its syntax error and where it is.
pub(crate) fn analyze(source: &Source, kind: Kind) -> Result<BTreeSet<String>, (Position, String)> {
    let paths = match kind {
        Kind::Expression => engine()
            .compile_expression(&source.text)
            .map(|expr| expr.undeclared_variables(true)),
        Kind::Template => engine()
            .template_from_str(&source.text)
            .map(|template| template.undeclared_variables(true)),
    };
    paths.map(|set| set.into_iter().collect()).map_err(|error| {
        let position = error
            .range()
            .map(|range| position_in(source, range.start))
            .unwrap_or(source.position);
        (position, describe(&error))
    })
}

fn eval_expression(source: &Source, context: &minijinja::Value) -> Result<minijinja::Value, Error> {
    let value = engine()
        .compile_expression(&source.text)
        .and_then(|expr| expr.eval(context))
        .map_err(|error| template_error(source, &error))?;
    // Strict mode catches undefined values when they are printed or iterated; an expression that
    // *is* undefined (`secrets.unset`) must not silently become `null` or `false`.
    if value.is_undefined() {
        return Err(Error::Template {
            position: source.position,
            expression: source.text.clone(),
            message: "undefined value".into(),
        });
    }
    Ok(value)
}

fn render_text(source: &Source, context: &minijinja::Value) -> Result<String, Error> {
    let text = engine()
        .render_str(&source.text, context)
        .map_err(|error| template_error(source, &error))?;
    if text.len() > MAX_RENDERED_BYTES {
        return Err(Error::Template {
            position: source.position,
            expression: source.text.clone(),
            message: format!(
                "rendered to {} bytes, more than the {MAX_RENDERED_BYTES} allowed",
                text.len()
            ),
        });
    }
    Ok(text)
}

fn to_json(value: &minijinja::Value, source: &Source) -> Result<serde_json::Value, Error> {
    let json = serde_json::to_value(value).map_err(|error| Error::Template {
        position: source.position,
        expression: source.text.clone(),
        message: format!("the value cannot be converted to JSON: {error}"),
    })?;
    let size = match &json {
        serde_json::Value::String(s) => s.len(),
        other => serde_json::to_string(other).map(|s| s.len()).unwrap_or(0),
    };
    if size > MAX_RENDERED_BYTES {
        return Err(Error::Template {
            position: source.position,
            expression: source.text.clone(),
            message: format!(
                "evaluated to {size} bytes, more than the {MAX_RENDERED_BYTES} allowed"
            ),
        });
    }
    Ok(json)
}

fn template_error(source: &Source, error: &minijinja::Error) -> Error {
    let position = error
        .range()
        .map(|range| position_in(source, range.start))
        .unwrap_or(source.position);
    Error::Template {
        position,
        expression: source.text.clone(),
        message: describe(error),
    }
}

/// minijinja's message without its `(in <string>:1)` suffix; the position is ours to give.
fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

/// Maps a byte offset inside the template text to a position in the playbook file.
pub(crate) fn position_in(source: &Source, offset: usize) -> Position {
    let before = &source.text[..offset.min(source.text.len())];
    let line_in_template = before.matches('\n').count() as u32;
    let column_in_line = before
        .rsplit('\n')
        .next()
        .map(|s| s.chars().count())
        .unwrap_or(0) as u32;
    if line_in_template == 0 {
        Position::new(
            source.position.line,
            source.position.column + column_in_line,
        )
    } else {
        // Later lines of a block scalar share the indentation of its first line.
        Position::new(
            source.position.line + line_in_template,
            source.position.column + column_in_line,
        )
    }
}

/// `"{{ expr }}"` → `Some("expr")` when the string is exactly one expression tag.
fn lone_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
    (!inner.is_empty()).then_some(inner)
}

/// Character offset of `inner` within `outer`, where `inner` is a subslice of `outer`.
fn offset_of(outer: &str, inner: &str) -> u32 {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    outer.get(..start).map(|s| s.chars().count()).unwrap_or(0) as u32
}
