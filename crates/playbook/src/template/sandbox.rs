//! The environment every template runs in, and the byte budget of one evaluation.
//!
//! Fuel bounds the instructions an evaluation executes, and the rendered text is capped, but
//! neither bounds the values built along the way: `range(2000) | join('x' * 100000)` builds
//! 200 MB before anything is rendered. So every filter and function, and the operators that
//! build values (rewritten into calls by [`super::prepare`]), go through [`guarded`]: it refuses
//! a call whose result would not fit in what is left of the evaluation's budget
//! ([`MAX_BUILT_BYTES`], counted cumulatively), estimated from its inputs before the call, then
//! charges what the call really built. Sequences are bounded too ([`MAX_ITEMS`]), so no filter
//! walks a trillion lazy items.
//!
//! Secrets are [`SecretRef`]s here: the name of a secret and a marker, never its value. The
//! runner puts the value in place of the marker after rendering (see [`super::secrets`]), so a
//! template cannot transform a secret (`| reverse`, `| upper`, `| b64encode` …) into something
//! redaction would not recognise: every guarded call refuses one.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};

use super::prepare::{ADD, CONCAT, MUL};
use crate::filters;

/// Instructions one evaluation may execute before it is stopped.
pub const FUEL_PER_EVALUATION: u64 = 100_000;
/// Bytes of values one evaluation may build, all intermediate values counted.
pub const MAX_BUILT_BYTES: usize = 16 * 1024 * 1024;
/// Items a sequence may have (as many as `range` allows).
pub const MAX_ITEMS: usize = 100_000;

thread_local! {
    /// What is left of the budget of the evaluation running on this thread, if one is.
    static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Opens an evaluation's budget for as long as it lives (nested evaluations share the outer one).
pub(crate) struct Evaluation {
    opened: bool,
}

impl Evaluation {
    pub(crate) fn begin() -> Evaluation {
        let opened = BUDGET.with(|budget| {
            if budget.get().is_some() {
                return false;
            }
            budget.set(Some(MAX_BUILT_BYTES));
            true
        });
        Evaluation { opened }
    }
}

impl Drop for Evaluation {
    fn drop(&mut self) {
        if self.opened {
            BUDGET.with(|budget| budget.set(None));
        }
    }
}

fn remaining() -> usize {
    BUDGET
        .with(|budget| budget.get())
        .unwrap_or(MAX_BUILT_BYTES)
}

fn over_budget() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "the template builds more than the {MAX_BUILT_BYTES} bytes of values an evaluation may"
        ),
    )
}

/// Takes `bytes` from the budget, or refuses.
fn charge(bytes: usize) -> Result<(), Error> {
    BUDGET.with(|budget| match budget.get() {
        Some(left) if bytes > left => Err(over_budget()),
        Some(left) => {
            budget.set(Some(left - bytes));
            Ok(())
        }
        None => Ok(()),
    })
}

/// Refuses a call whose result is estimated at more than what is left.
fn afford(estimate: usize) -> Result<(), Error> {
    if estimate > remaining() {
        Err(over_budget())
    } else {
        Ok(())
    }
}

/// The shared, sandboxed template environment.
pub(crate) fn engine() -> &'static Environment<'static> {
    static ENGINE: OnceLock<Environment<'static>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL_PER_EVALUATION));
        env.set_recursion_limit(64);
        filters::register_tests(&mut env);
        for (name, filter) in builtin_filters().into_iter().chain(filters::filters()) {
            env.add_filter(name, move |state: &State, args: Rest<Value>| {
                guarded(name, &filter, state, &args)
            });
        }
        // `debug()` prints the whole context; nothing a playbook needs.
        env.remove_global("debug");
        let functions: Vec<(String, Value)> = env
            .globals()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        for (name, function) in functions {
            let label: &'static str = Box::leak(name.clone().into_boxed_str());
            env.add_function(name, move |state: &State, args: Rest<Value>| {
                guarded(label, &function, state, &args)
            });
        }
        env.add_function(MUL, |state: &State, a: Value, b: Value| {
            operator("*", state, &a, &b)
        });
        env.add_function(ADD, |state: &State, a: Value, b: Value| {
            operator("+", state, &a, &b)
        });
        env.add_function(CONCAT, |state: &State, a: Value, b: Value| {
            operator("~", state, &a, &b)
        });
        env
    })
}

/// minijinja's filters, to be wrapped.
fn builtin_filters() -> Vec<(&'static str, Value)> {
    use minijinja::filters as f;
    vec![
        ("safe", Value::from_function(f::safe)),
        ("escape", Value::from_function(f::escape)),
        ("e", Value::from_function(f::escape)),
        ("lower", Value::from_function(f::lower)),
        ("upper", Value::from_function(f::upper)),
        ("title", Value::from_function(f::title)),
        ("capitalize", Value::from_function(f::capitalize)),
        ("replace", Value::from_function(f::replace)),
        ("length", Value::from_function(f::length)),
        ("count", Value::from_function(f::length)),
        ("dictsort", Value::from_function(f::dictsort)),
        ("items", Value::from_function(f::items)),
        ("reverse", Value::from_function(f::reverse)),
        ("trim", Value::from_function(f::trim)),
        ("join", Value::from_function(f::join)),
        ("split", Value::from_function(f::split)),
        ("lines", Value::from_function(f::lines)),
        ("default", Value::from_function(f::default)),
        ("d", Value::from_function(f::default)),
        ("round", Value::from_function(f::round)),
        ("abs", Value::from_function(f::abs)),
        ("int", Value::from_function(f::int)),
        ("float", Value::from_function(f::float)),
        ("attr", Value::from_function(f::attr)),
        ("first", Value::from_function(f::first)),
        ("last", Value::from_function(f::last)),
        ("min", Value::from_function(f::min)),
        ("max", Value::from_function(f::max)),
        ("sort", Value::from_function(f::sort)),
        ("list", Value::from_function(f::list)),
        ("string", Value::from_function(f::string)),
        ("bool", Value::from_function(f::bool)),
        ("batch", Value::from_function(f::batch)),
        ("slice", Value::from_function(f::slice)),
        ("sum", Value::from_function(f::sum)),
        ("indent", Value::from_function(f::indent)),
        ("select", Value::from_function(f::select)),
        ("reject", Value::from_function(f::reject)),
        ("selectattr", Value::from_function(f::selectattr)),
        ("rejectattr", Value::from_function(f::rejectattr)),
        ("map", Value::from_function(f::map)),
        ("groupby", Value::from_function(f::groupby)),
        ("unique", Value::from_function(f::unique)),
        ("chain", Value::from_function(f::chain)),
        ("zip", Value::from_function(f::zip)),
        ("pprint", Value::from_function(f::pprint)),
        ("format", Value::from_function(f::format)),
        ("tojson", Value::from_function(f::tojson)),
        ("urlencode", Value::from_function(f::urlencode)),
    ]
}

/// Calls a filter or function within the budget: no secret goes in, no sequence longer than
/// [`MAX_ITEMS`], and nothing comes out that the budget cannot afford.
fn guarded(name: &str, function: &Value, state: &State, args: &[Value]) -> Result<Value, Error> {
    if !BUILDS.contains(&name) {
        // It returns a number, a truth value or one of its arguments: nothing new to weigh.
        for arg in args {
            refuse_secret(arg)?;
        }
        return function.call(state, args);
    }
    let mut input = Size::default();
    for arg in args {
        input.add(arg, remaining())?;
    }
    afford(estimate(name, args, &input))?;
    let result = function.call(state, args)?;
    let mut output = Size::default();
    output.add(&result, remaining())?;
    charge(output.bytes)?;
    Ok(result)
}

/// The filters and functions that build new values from their arguments (the others return a
/// number, a truth value, or one of their arguments).
const BUILDS: &[&str] = &[
    // minijinja's
    "escape",
    "e",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "dictsort",
    "items",
    "reverse",
    "trim",
    "join",
    "split",
    "lines",
    "sort",
    "list",
    "string",
    "batch",
    "slice",
    "indent",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "map",
    "groupby",
    "unique",
    "chain",
    "zip",
    "pprint",
    "format",
    "tojson",
    "urlencode",
    "range",
    "dict",
    "namespace",
    // ours
    "defang",
    "refang",
    "regex_search",
    "regex_findall",
    "regex_replace",
    "fromjson",
    "b64encode",
    "b64decode",
    "sha256",
    "sha1",
    "md5",
];

/// An upper bound of the bytes a filter builds from its arguments: most build at most a few
/// times their input (escaping, JSON); these can build far more from a short input.
fn estimate(name: &str, args: &[Value], input: &Size) -> usize {
    let text = |index: usize| args.get(index).map_or(0, display_len);
    let number = |index: usize| {
        args.get(index)
            .and_then(|arg| usize::try_from(arg.clone()).ok())
            .unwrap_or(0)
    };
    let generic = input.bytes.saturating_mul(6);
    let extra = match name {
        // Every item, and a separator between each two.
        "join" => input.items.saturating_mul(text(1)),
        // Each occurrence of the old text grows by the new one; an empty old text occurs
        // between every two characters.
        "replace" => {
            let (Some(haystack), Some(old)) = (
                args.first().and_then(Value::as_str),
                args.get(1).and_then(Value::as_str),
            ) else {
                return generic;
            };
            let occurrences = if old.is_empty() {
                haystack.chars().count() + 1
            } else {
                haystack.matches(old).count()
            };
            occurrences.saturating_mul(text(2))
        }
        "indent" => {
            let lines = args
                .first()
                .and_then(Value::as_str)
                .map_or(1, |text| text.lines().count() + 1);
            lines.saturating_mul(number(1).max(text(1)))
        }
        // Widths and precisions (`%10000000s`) are numbers in the format text.
        "format" => args.first().and_then(Value::as_str).map_or(0, |format| {
            format
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|digits| digits.parse::<usize>().ok())
                .fold(0usize, usize::saturating_add)
        }),
        "regex_replace" => {
            let (Some(haystack), Some(replacement)) = (
                args.first().and_then(Value::as_str),
                args.get(2).and_then(Value::as_str),
            ) else {
                return generic;
            };
            // Every match can expand to the replacement with `$0` groups each as long as the
            // whole text.
            let expansions = replacement
                .matches('$')
                .count()
                .saturating_mul(haystack.len());
            (haystack.len() + 1).saturating_mul(replacement.len().saturating_add(expansions))
        }
        _ => 0,
    };
    generic.saturating_add(extra)
}

/// What an operator may build; numbers are left to minijinja's own arithmetic.
fn operator(symbol: &str, state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    for side in [a, b] {
        refuse_secret(side)?;
        // Strict, as minijinja's own operators are: a typo is an error, not an empty string.
        if side.is_undefined() {
            return Err(Error::from(ErrorKind::UndefinedError));
        }
    }
    let estimate = match symbol {
        "*" => repeated(a, b)?,
        "+" if a.kind() == ValueKind::String && b.kind() == ValueKind::String => {
            display_len(a) + display_len(b)
        }
        "+" => {
            let items = a.len().unwrap_or(0) + b.len().unwrap_or(0);
            if items > MAX_ITEMS {
                return Err(too_many(items));
            }
            0
        }
        _ => bounded_len(a, remaining())? + bounded_len(b, remaining())?,
    };
    charge(estimate)?;
    if symbol == "~" {
        return Ok(Value::from(format!("{a}{b}")));
    }
    if symbol == "*"
        && let Some(repeated) = repeat_sequence(a, b)?
    {
        return Ok(repeated);
    }
    arithmetic(symbol).call(state, &[a.clone(), b.clone()])
}

/// `sequence * n`, built here as a list. minijinja repeats lazily, walking the sequence `n` times
/// however short it is: `[] * 10**13` has no items and takes hours to walk (found by fuzzing).
/// `None` leaves what is not a sized sequence times a count to minijinja and its errors.
fn repeat_sequence(a: &Value, b: &Value) -> Result<Option<Value>, Error> {
    let is_sequence = |v: &Value| matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable);
    let (sequence, times) = match (is_sequence(a), is_sequence(b)) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        _ => return Ok(None),
    };
    let (Some(times), Some(_)) = (times.as_usize(), sequence.len()) else {
        return Ok(None);
    };
    let items: Vec<Value> = sequence.try_iter()?.collect();
    if items.is_empty() {
        return Ok(Some(Value::from(items)));
    }
    // `repeated` has bounded `items.len() * times` by MAX_ITEMS.
    let repeated: Vec<Value> = (0..times).flat_map(|_| items.iter().cloned()).collect();
    Ok(Some(Value::from(repeated)))
}

/// The bytes (or items) `a * b` would build, refusing repetitions the sandbox does not allow.
fn repeated(a: &Value, b: &Value) -> Result<usize, Error> {
    let (repeated, times) = match (a.kind(), b.kind()) {
        (ValueKind::Number, ValueKind::Number) => return Ok(0),
        (ValueKind::Number, _) => (b, a),
        _ => (a, b),
    };
    let Some(times) = times.as_usize() else {
        return Ok(0);
    };
    if repeated.kind() == ValueKind::String {
        return Ok(display_len(repeated).saturating_mul(times));
    }
    let items = repeated.len().unwrap_or(0).saturating_mul(times);
    if items > MAX_ITEMS {
        return Err(too_many(items));
    }
    Ok(0)
}

/// minijinja's own `a * b` or `a + b`, as a function of `a` and `b`.
fn arithmetic(symbol: &str) -> &'static Value {
    static MUL_FN: OnceLock<Value> = OnceLock::new();
    static ADD_FN: OnceLock<Value> = OnceLock::new();
    let (cell, source) = if symbol == "*" {
        (&MUL_FN, "a * b")
    } else {
        (&ADD_FN, "a + b")
    };
    cell.get_or_init(|| {
        let expression = engine().compile_expression(source);
        Value::from_function(move |a: Value, b: Value| match &expression {
            Ok(expression) => expression.eval(minijinja::context! { a, b }),
            Err(error) => Err(Error::new(ErrorKind::InvalidOperation, error.to_string())),
        })
    })
}

fn too_many(items: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("a sequence of {items} items is longer than the {MAX_ITEMS} allowed"),
    )
}

/// What a value weighs: its bytes (strings at their length, everything else at a small
/// constant) and the items of its sequences and maps, walked at most to `limit` bytes.
#[derive(Debug, Default)]
struct Size {
    bytes: usize,
    items: usize,
}

/// Bytes counted for a value that is not a string or container.
const SCALAR_BYTES: usize = 16;

impl Size {
    fn add(&mut self, value: &Value, limit: usize) -> Result<(), Error> {
        refuse_secret(value)?;
        match value.kind() {
            ValueKind::String => self.bytes += value.as_str().map_or(0, str::len),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
                let len = value.len().unwrap_or(0);
                if len > MAX_ITEMS {
                    return Err(too_many(len));
                }
                self.items += len;
                self.bytes += SCALAR_BYTES;
                let Ok(items) = value.try_iter() else {
                    return Ok(());
                };
                for (index, item) in items.enumerate() {
                    if index >= MAX_ITEMS {
                        return Err(too_many(index));
                    }
                    if value.kind() == ValueKind::Map {
                        self.bytes += SCALAR_BYTES;
                        if let Ok(member) = value.get_item(&item) {
                            self.add(&member, limit)?;
                        }
                    } else {
                        self.add(&item, limit)?;
                    }
                    if self.bytes > limit {
                        return Err(over_budget());
                    }
                }
            }
            _ => self.bytes += SCALAR_BYTES,
        }
        Ok(())
    }
}

/// Refuses a value that is, or holds, a secret.
fn refuse_secret(value: &Value) -> Result<(), Error> {
    if value.downcast_object_ref::<SecretRef>().is_some() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a secret can only be inserted whole, as `{{ secrets.<name> }}`: it cannot be transformed in a template",
        ));
    }
    Ok(())
}

/// The length of a value's text, counted without building more than `limit` bytes of it.
fn bounded_len(value: &Value, limit: usize) -> Result<usize, Error> {
    if let Some(text) = value.as_str() {
        return Ok(text.len());
    }
    let mut counter = Counter { written: 0, limit };
    write!(counter, "{value}").map_err(|_| over_budget())?;
    Ok(counter.written)
}

fn display_len(value: &Value) -> usize {
    bounded_len(value, usize::MAX).unwrap_or(usize::MAX)
}

/// Counts what is written, and stops past a limit.
struct Counter {
    written: usize,
    limit: usize,
}

impl std::fmt::Write for Counter {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.written += text.len();
        if self.written > self.limit {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// A secret as templates see it: its name, and the marker that stands for its value in what a
/// template renders.
#[derive(Debug)]
pub(crate) struct SecretRef {
    pub(crate) marker: String,
}

impl Object for SecretRef {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.marker)
    }
}
