//! Templates and conditions, evaluated by minijinja in a sandbox.
//!
//! A string in a playbook is one of three things: plain text (no `{{`/`{%`), a lone expression
//! (`"{{ steps.enrich.output.score }}"`, which keeps its type: a number stays a number, a list a
//! list), or a text template that renders to a string. Conditions (`if:`, `filter:`) are bare
//! expressions; wrapping them in `{{ }}` is accepted too, as GitHub Actions users expect.
//!
//! The sandbox ([`sandbox`]): undefined variables are errors (a typo must not silently become an
//! empty string), every evaluation has a fuel budget and a byte budget for every value it builds
//! on the way (operators, filters and functions all charge it), rendered text is capped in size
//! while it is written, expressions that nest too deeply for minijinja's recursive parser are
//! refused before parsing, and what would escape those bounds (captured output, recursive loops)
//! is refused when the playbook is checked ([`prepare`]). Secrets are opaque ([`secrets`]): a
//! template can insert one whole, never transform it.

mod prepare;
mod sandbox;
mod secrets;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

pub use sandbox::{FUEL_PER_EVALUATION, MAX_BUILT_BYTES, MAX_ITEMS};
pub use secrets::SecretMarkers;

use crate::diagnostic::Position;
use crate::error::Error;
use prepare::{Prepared, Problem};
use sandbox::{Evaluation, engine};

/// Largest text a template may render to.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// Template text and where it starts in the playbook file.
#[derive(Debug, Clone)]
pub struct Source {
    pub text: String,
    pub position: Position,
    /// What running it takes, made the first time it runs and kept while the text is the same.
    compiled: CompiledOnce,
}

impl Source {
    /// Template text starting at `position` in the playbook file.
    pub fn new(text: impl Into<String>, position: Position) -> Source {
        Source {
            text: text.into(),
            position,
            compiled: CompiledOnce::default(),
        }
    }

    /// What running this source as `kind` takes, compiled once: checking, rewriting and
    /// compiling a template anew for each evaluation was 2% of a worker's CPU. A source runs
    /// as one kind; asked for another, or changed since, it is compiled anew and not kept.
    fn compiled(&self, kind: Kind) -> Result<Arc<Compiled>, Error> {
        let fits =
            |compiled: &Compiled| compiled.program.kind() == kind && compiled.original == self.text;
        if let Some(compiled) = self.compiled.0.get().filter(|compiled| fits(compiled)) {
            return Ok(Arc::clone(compiled));
        }
        let compiled = Arc::new(Compiled::new(self, kind)?);
        // Kept only if nothing is yet: a source run as two kinds keeps the first.
        let _ = self.compiled.0.set(Arc::clone(&compiled));
        Ok(compiled)
    }
}

impl PartialEq for Source {
    fn eq(&self, other: &Source) -> bool {
        self.text == other.text && self.position == other.position
    }
}

/// A source's compiled form, shared by its clones.
#[derive(Clone, Default)]
struct CompiledOnce(Arc<OnceLock<Arc<Compiled>>>);

impl std::fmt::Debug for CompiledOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "compiled"
        } else {
            "not compiled yet"
        })
    }
}

/// A source checked and rewritten for the sandbox ([`prepare`]), and compiled.
struct Compiled {
    /// The text it was made from.
    original: String,
    prepared: Prepared,
    program: Program,
}

/// What minijinja runs. A text template lives in a copy of the sandbox's environment of its own:
/// minijinja's `Template` borrows its text, while one the environment owns (`add_template_owned`)
/// can be kept for as long as the environment is.
enum Program {
    Expression(minijinja::Expression<'static, 'static>),
    Template(minijinja::Environment<'static>),
}

impl Program {
    fn kind(&self) -> Kind {
        match self {
            Program::Expression(_) => Kind::Expression,
            Program::Template(_) => Kind::Template,
        }
    }
}

/// The name of the one template a [`Program::Template`]'s environment holds.
const TEMPLATE_NAME: &str = "template";

impl Compiled {
    fn new(source: &Source, kind: Kind) -> Result<Compiled, Error> {
        let prepared = prepared(source, kind)?;
        let compile_error = |error| template_error(source, Some(&prepared), &error);
        let program = match kind {
            Kind::Expression => Program::Expression(
                engine()
                    .compile_expression_owned(prepared.text.clone())
                    .map_err(compile_error)?,
            ),
            Kind::Template => {
                let mut environment = engine().clone();
                environment
                    .add_template_owned(TEMPLATE_NAME, prepared.text.clone())
                    .map_err(compile_error)?;
                Program::Template(environment)
            }
        };
        Ok(Compiled {
            original: source.text.clone(),
            prepared,
            program,
        })
    }
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
        match lone_expression(text) {
            Some(expr) => Input::Expression(Source::new(
                expr,
                Position::new(position.line, position.column + offset_of(text, expr)),
            )),
            None => Input::Template(Source::new(text, position)),
        }
    }
}

impl Condition {
    pub(crate) fn from_text(text: &str, position: Position) -> Condition {
        let expr = lone_expression(text).unwrap_or(text.trim());
        let column = position.column + offset_of(text, expr);
        Condition {
            source: Source::new(expr, Position::new(position.line, column)),
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

/// Names usable in templates that are functions rather than variables.
pub(crate) fn is_global_function(name: &str) -> bool {
    engine().globals().any(|(global, _)| global == name)
}

/// What a template reads, and what in it the sandbox refuses.
#[derive(Debug)]
pub(crate) struct Analysis {
    /// The dotted variable paths it reads (`steps.enrich.output.score`), for reference checks.
    pub(crate) paths: BTreeSet<String>,
    /// The first thing in it the sandbox does not allow ([`prepare`]), and where it is.
    pub(crate) refused: Option<(Position, String)>,
}

/// Parses a template or expression: what it reads and what it may not contain, or its syntax
/// error and where it is.
pub(crate) fn analyze(source: &Source, kind: Kind) -> Result<Analysis, (Position, String)> {
    if let Err((offset, message)) = check_before_parsing(&source.text, kind) {
        return Err((position_in(source, offset), message.to_owned()));
    }
    let paths = match kind {
        Kind::Expression => engine()
            .compile_expression(&source.text)
            .map(|expr| expr.undeclared_variables(true)),
        Kind::Template => engine()
            .template_from_str(&source.text)
            .map(|template| template.undeclared_variables(true)),
    }
    .map_err(|error| syntax_problem(source, &error))?;
    let refused = match prepare::prepare(&source.text, kind) {
        Ok(_) => None,
        Err(Problem::Syntax(error)) => return Err(syntax_problem(source, &error)),
        Err(Problem::Refused((offset, message))) => Some((position_in(source, offset), message)),
    };
    Ok(Analysis {
        paths: paths.into_iter().collect(),
        refused,
    })
}

fn syntax_problem(source: &Source, error: &minijinja::Error) -> (Position, String) {
    let position = error
        .range()
        .map(|range| position_in(source, range.start))
        .unwrap_or(source.position);
    (position, describe(error))
}

/// Checks and rewrites a template for the sandbox ([`prepare`]).
fn prepared(source: &Source, kind: Kind) -> Result<Prepared, Error> {
    guard_nesting(source, kind)?;
    prepare::prepare(&source.text, kind).map_err(|problem| match problem {
        Problem::Syntax(error) => template_error(source, None, &error),
        Problem::Refused((offset, message)) => Error::Template {
            position: position_in(source, offset),
            expression: source.text.clone(),
            message,
        },
    })
}

fn eval_expression(source: &Source, context: &minijinja::Value) -> Result<minijinja::Value, Error> {
    let compiled = source.compiled(Kind::Expression)?;
    let Program::Expression(expression) = &compiled.program else {
        return Err(not_compiled_as(source, Kind::Expression));
    };
    let _budget = Evaluation::begin();
    let value = expression
        .eval(context)
        .map_err(|error| template_error(source, Some(&compiled.prepared), &error))?;
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
    let compiled = source.compiled(Kind::Template)?;
    let prepared = &compiled.prepared;
    let Program::Template(environment) = &compiled.program else {
        return Err(not_compiled_as(source, Kind::Template));
    };
    let _budget = Evaluation::begin();
    // The cap is enforced while writing, not after: `{{ [0] * 10**5 }}` prints a sequence item
    // by item and would otherwise grow the output before any check.
    let mut output = CappedWriter::default();
    environment
        .get_template(TEMPLATE_NAME)
        .and_then(|template| template.render_captured_to(context, &mut output).map(drop))
        .map_err(|error| {
            if output.overflowed {
                too_large(source, "rendered to")
            } else {
                template_error(source, Some(prepared), &error)
            }
        })?;
    String::from_utf8(output.bytes).map_err(|_| Error::Template {
        position: source.position,
        expression: source.text.clone(),
        message: "rendered text is not valid UTF-8".into(),
    })
}

/// [`Source::compiled`] answers with the kind asked for; should that ever not hold, an error,
/// not a panic.
fn not_compiled_as(source: &Source, kind: Kind) -> Error {
    Error::Template {
        position: source.position,
        expression: source.text.clone(),
        message: format!("not compiled as {kind:?}"),
    }
}

fn to_json(value: &minijinja::Value, source: &Source) -> Result<serde_json::Value, Error> {
    if let Some(text) = value.as_str() {
        if text.len() > MAX_RENDERED_BYTES {
            return Err(too_large(source, "evaluated to"));
        }
        return Ok(serde_json::Value::String(text.to_owned()));
    }
    // Measure before converting: `serde_json::to_value` reserves room for a sequence's claimed
    // length up front, so `[0] * 10**12` would abort the process instead of failing here.
    let mut measure = CappedWriter {
        discard: true,
        ..CappedWriter::default()
    };
    let converted =
        serde_json::to_writer(&mut measure, value).and_then(|()| serde_json::to_value(value));
    converted.map_err(|error| {
        if measure.overflowed {
            too_large(source, "evaluated to")
        } else {
            Error::Template {
                position: source.position,
                expression: source.text.clone(),
                message: format!("the value cannot be converted to JSON: {error}"),
            }
        }
    })
}

fn too_large(source: &Source, what: &str) -> Error {
    Error::Template {
        position: source.position,
        expression: source.text.clone(),
        message: format!("{what} more than the {MAX_RENDERED_BYTES} bytes allowed"),
    }
}

/// Collects (or only counts) output and fails once it passes [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct CappedWriter {
    bytes: Vec<u8>,
    written: usize,
    discard: bool,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("output too large"));
        }
        if !self.discard {
            self.bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deepest an expression may nest, as [`check_nesting`] counts it.
const MAX_NESTING: usize = 200;

const TOO_DEEP: &str =
    "the expression nests too deeply: chain fewer operators, filters and brackets";

const STRAY_CLOSE: &str =
    "syntax error: unexpected `}}`; an expression is bare, or wrapped whole in one `{{ }}`";

/// Refuses text that [`check_before_parsing`] refuses, before minijinja sees it.
fn guard_nesting(source: &Source, kind: Kind) -> Result<(), Error> {
    check_before_parsing(&source.text, kind).map_err(|(offset, message)| Error::Template {
        position: position_in(source, offset),
        expression: source.text.clone(),
        message: message.to_owned(),
    })
}

/// What minijinja must not be given: text nested too deep ([`check_nesting`]), or an expression
/// with a stray `}}` ([`stray_close`]). Returns the byte offset of the problem and its message.
fn check_before_parsing(text: &str, kind: Kind) -> Result<(), (usize, &'static str)> {
    check_nesting(text, kind).map_err(|offset| (offset, TOO_DEEP))?;
    match kind {
        Kind::Expression => stray_close(text).map_or(Ok(()), |offset| Err((offset, STRAY_CLOSE))),
        Kind::Template => Ok(()),
    }
}

/// Where a bare expression has a `}}` outside strings and brackets with anything after it.
///
/// minijinja's lexer (2.24) reads such a `}}` as the end of the expression and then panics on
/// whatever follows it ("empty lexer stack"): `if: a }} and {{ b` would abort `riposte
/// validate`, found by fuzzing (fuzz/, `template_render`). Brackets and strings are counted as
/// its lexer counts them.
fn stray_close(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut balance = 0isize;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        i += 1;
        match byte {
            b'"' | b'\'' => {
                while let Some(&next) = bytes.get(i) {
                    i += if next == b'\\' { 2 } else { 1 };
                    if next == byte {
                        break;
                    }
                }
            }
            b'}' if balance == 0 && bytes.get(i) == Some(&b'}') => {
                return (i + 1 < bytes.len()).then_some(i - 1);
            }
            b'(' | b'[' | b'{' => balance += 1,
            b')' | b']' | b'}' => balance -= 1,
            _ => {}
        }
    }
    None
}

/// Bounds from above how deeply any expression in `text` nests, without parsing it, and returns
/// the byte offset where it passes [`MAX_NESTING`].
///
/// minijinja turns a chain such as `not not …`, `- - …`, `x|abs|abs…`, `a.b.c…` or `1 + 1 + …`
/// into a tree as deep as the chain is long and then walks it recursively, so a chain of a few
/// thousand overflows the stack and aborts the whole process; its own recursion limit only
/// covers brackets and blocks. Here every operator character, operator keyword and bracket adds
/// a level to the item it is in (items are separated by `,` and `:`, which only ever separate
/// siblings), and an open bracket adds a level for its contents. Text outside tags, string
/// literals, comments and raw blocks do not count.
fn check_nesting(text: &str, kind: Kind) -> Result<(), usize> {
    let bytes = text.as_bytes();
    if kind == Kind::Expression {
        return scan_expression(bytes, 0, None).map(drop);
    }
    let mut i = 0;
    while let Some(found) = find(bytes, i, b"{") {
        i = found + 1;
        match bytes.get(i) {
            Some(b'#') => i = find(bytes, i, b"#}").map_or(bytes.len(), |end| end + 2),
            Some(b'{') => i = scan_expression(bytes, i + 1, Some(b'}'))?,
            Some(b'%') => {
                let start = i + 1;
                i = scan_expression(bytes, start, Some(b'%'))?;
                let statement = String::from_utf8_lossy(&bytes[start..i]);
                let statement = statement.trim_end_matches("%}");
                if statement.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
                    == "raw"
                {
                    // Text up to `endraw` is output as is, never parsed.
                    i = find(bytes, i, b"endraw").unwrap_or(bytes.len());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Scans a tag's contents from `i` up to its closing `}}` or `%}` (given by its first byte), or
/// a whole bare expression when `close` is `None`; returns where the scan ended.
fn scan_expression(bytes: &[u8], mut i: usize, close: Option<u8>) -> Result<usize, usize> {
    // Levels counted in the current item of each open bracket, and their sum.
    let mut items: Vec<usize> = vec![0];
    let mut counted = 0;
    while let Some(&byte) = bytes.get(i) {
        let start = i;
        i += 1;
        let opens = matches!(byte, b'(' | b'[' | b'{');
        let deeper = match byte {
            b'"' | b'\'' => {
                while let Some(&next) = bytes.get(i) {
                    i += if next == b'\\' { 2 } else { 1 };
                    if next == byte {
                        break;
                    }
                }
                false
            }
            _ if Some(byte) == close && items.len() == 1 && bytes.get(i) == Some(&b'}') => {
                return Ok(i + 1);
            }
            b'(' | b'[' | b'{' => true,
            b')' | b']' | b'}' if items.len() > 1 => {
                counted -= items.pop().unwrap_or(0);
                false
            }
            b',' | b':' => {
                if let Some(last) = items.last_mut() {
                    counted -= *last;
                    *last = 0;
                }
                false
            }
            b'.' | b'|' | b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' | b'!' => {
                true
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while matches!(
                    bytes.get(i),
                    Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_')
                ) {
                    i += 1;
                }
                let word = &bytes[start..i];
                [&b"not"[..], b"and", b"or", b"is", b"in", b"if", b"else"].contains(&word)
            }
            _ => false,
        };
        if deeper {
            // A bracket is a level of the item it is in (calls and subscripts chain like
            // attributes do), and its contents are one level more.
            if let Some(last) = items.last_mut() {
                *last += 1;
                counted += 1;
            }
            if opens {
                items.push(0);
            }
            if items.len() + counted > MAX_NESTING {
                return Err(start);
            }
        }
    }
    Ok(i.min(bytes.len()))
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|offset| from + offset)
}

/// A minijinja error at its place in the playbook (`prepared` maps a rewritten template's
/// offsets back to the original).
fn template_error(source: &Source, prepared: Option<&Prepared>, error: &minijinja::Error) -> Error {
    let position = error
        .range()
        .map(|range| {
            let offset = prepared.map_or(range.start, |p| p.original_offset(range.start));
            position_in(source, offset)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> minijinja::Value {
        minijinja::Value::from_serialize(serde_json::json!({ "score": 90, "ip": "10.0.0.1" }))
    }

    #[test]
    fn a_source_is_compiled_once_and_its_clones_share_it() {
        let input = Input::from_text("{{ score + 1 }}", Position::START);
        let Input::Expression(source) = &input else {
            panic!("a lone expression: {input:?}");
        };
        assert!(source.compiled.0.get().is_none());
        assert_eq!(input.render(&context()).ok(), Some(serde_json::json!(91)));
        let first = source
            .compiled(Kind::Expression)
            .ok()
            .map(|c| Arc::as_ptr(&c) as usize);
        let copy = input.clone();
        assert_eq!(copy.render(&context()).ok(), Some(serde_json::json!(91)));
        let Input::Expression(copied) = &copy else {
            panic!("a clone of an expression: {copy:?}");
        };
        let second = copied
            .compiled(Kind::Expression)
            .ok()
            .map(|c| Arc::as_ptr(&c) as usize);
        assert!(first.is_some());
        assert_eq!(first, second, "the clone ran what the original compiled");
    }

    #[test]
    fn a_source_whose_text_changed_is_compiled_anew() {
        let mut condition = Condition::from_text("score > 50", Position::START);
        assert_eq!(condition.evaluate(&context()).ok(), Some(true));
        condition.source.text = "score > 95".into();
        assert_eq!(condition.evaluate(&context()).ok(), Some(false));

        let mut template = Input::from_text("ip {{ ip }}", Position::START);
        assert_eq!(
            template.render(&context()).ok(),
            Some(serde_json::json!("ip 10.0.0.1"))
        );
        if let Input::Template(source) = &mut template {
            source.text = "score {{ score }}".into();
        }
        assert_eq!(
            template.render(&context()).ok(),
            Some(serde_json::json!("score 90"))
        );
    }

    #[test]
    fn a_source_run_as_another_kind_is_compiled_as_that_kind() {
        let source = Source::new("score", Position::START);
        assert_eq!(
            render_text(&source, &context()).ok().as_deref(),
            Some("score")
        );
        assert_eq!(
            eval_expression(&source, &context()).ok(),
            Some(minijinja::Value::from(90))
        );
    }
}
