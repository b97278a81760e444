//! What a template goes through before minijinja runs it: a check of what it may contain, and a
//! rewrite of the operators that build values.
//!
//! The check refuses what would escape the sandbox's bounds or keep a secret from being passed
//! whole: output captured into a variable (`{% set x %}…{% endset %}`, `{% filter %}`) or by a
//! recursive loop, which bypass the cap on rendered text; templates that include others; and
//! any use of `secrets.<name>` other than inserting it as it is (`{{ secrets.token }}`).
//!
//! The rewrite turns `a * b`, `a + b` and `a ~ b` into calls of the sandbox's own functions
//! (`__riposte_mul(a, b)`, …), which charge what they build to the evaluation's byte budget
//! ([`super::sandbox`]): minijinja's operators allocate without asking anyone (`"x" * 10**8` is
//! 100 MB at once), while its filters and functions are ours to wrap. The rewrite edits the text
//! at the positions minijinja's own parser reports, and keeps a map back to the original text
//! for error positions.

use minijinja::machinery::ast::{self, BinOpKind, CallArg, Expr, Stmt};
use minijinja::machinery::{WhitespaceConfig, parse, parse_expr};

use super::Kind;

/// The functions the operators become.
pub(crate) const MUL: &str = "__riposte_mul";
pub(crate) const ADD: &str = "__riposte_add";
pub(crate) const CONCAT: &str = "__riposte_concat";

/// A template ready for minijinja: the text to run, and how its offsets map to the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    pub(crate) text: String,
    /// Insertions made, in the order of the rewritten text: (offset in the original text,
    /// bytes inserted there, bytes of the original removed there).
    edits: Vec<Edit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edit {
    at: usize,
    inserted: usize,
    removed: usize,
}

impl Prepared {
    /// The offset in the original text of an offset in the rewritten one.
    pub(crate) fn original_offset(&self, rewritten: usize) -> usize {
        let mut shift: isize = 0;
        for edit in &self.edits {
            let start_in_rewritten = edit.at as isize + shift;
            if (rewritten as isize) < start_in_rewritten {
                break;
            }
            if (rewritten as isize) < start_in_rewritten + edit.inserted as isize {
                return edit.at;
            }
            shift += edit.inserted as isize - edit.removed as isize;
        }
        (rewritten as isize - shift).max(0) as usize
    }
}

/// A part of the template that is not allowed, and where it starts (a byte offset).
pub(crate) type Refusal = (usize, String);

/// Checks `text` and rewrites its operators. `Err` is minijinja's own syntax error (to be
/// reported as such) or a refusal.
pub(crate) fn prepare(text: &str, kind: Kind) -> Result<Prepared, Problem> {
    if !needs_parsing(text) {
        return Ok(Prepared {
            text: text.to_owned(),
            edits: Vec::new(),
        });
    }
    let mut walk = Walk::default();
    match kind {
        Kind::Expression => {
            let expr = parse_expr(text).map_err(Problem::Syntax)?;
            walk.emitted(&expr);
        }
        Kind::Template => {
            let stmt = parse(
                text,
                "<template>",
                Default::default(),
                WhitespaceConfig::default(),
            )
            .map_err(Problem::Syntax)?;
            walk.stmt(&stmt, false);
        }
    }
    if let Some(refusal) = walk.refusals.into_iter().min_by_key(|(at, _)| *at) {
        return Err(Problem::Refused(refusal));
    }
    rewrite(text, walk.operators)
}

/// Why a template cannot run.
#[derive(Debug)]
pub(crate) enum Problem {
    Syntax(minijinja::Error),
    Refused(Refusal),
}

/// Templates without operators, blocks or secrets need neither the check nor the rewrite.
fn needs_parsing(text: &str) -> bool {
    text.contains(['*', '+', '~']) || text.contains("{%") || text.contains("secrets")
}

/// An operator to rewrite: the span of its expression and the offset of its symbol.
#[derive(Debug, Clone, Copy)]
struct Operator {
    start: usize,
    symbol: usize,
    end: usize,
    function: &'static str,
}

#[derive(Default)]
struct Walk {
    operators: Vec<Operator>,
    refusals: Vec<Refusal>,
}

const NOT_WHOLE: &str = "a secret can only be inserted whole, as `{{ secrets.<name> }}`: it cannot be transformed, combined, compared or tested in a template";

impl Walk {
    fn refuse(&mut self, at: u32, message: impl Into<String>) {
        self.refusals.push((at as usize, message.into()));
    }

    fn stmts(&mut self, stmts: &[Stmt<'_>], in_capture: bool) {
        for stmt in stmts {
            self.stmt(stmt, in_capture);
        }
    }

    fn stmt(&mut self, stmt: &Stmt<'_>, in_capture: bool) {
        match stmt {
            Stmt::Template(template) => self.stmts(&template.children, in_capture),
            Stmt::EmitExpr(emit) => self.emitted(&emit.expr),
            Stmt::EmitRaw(_) => {}
            Stmt::ForLoop(for_loop) => {
                if for_loop.recursive {
                    self.refuse(
                        for_loop.span().start_offset,
                        "recursive loops are not supported in playbook templates",
                    );
                }
                self.expr(&for_loop.target);
                self.expr(&for_loop.iter);
                if let Some(filter) = &for_loop.filter_expr {
                    self.expr(filter);
                }
                self.stmts(&for_loop.body, in_capture);
                self.stmts(&for_loop.else_body, in_capture);
            }
            Stmt::IfCond(cond) => {
                self.expr(&cond.expr);
                self.stmts(&cond.true_body, in_capture);
                self.stmts(&cond.false_body, in_capture);
            }
            Stmt::WithBlock(with) => {
                for (target, value) in &with.assignments {
                    self.expr(target);
                    self.expr(value);
                }
                self.stmts(&with.body, in_capture);
            }
            Stmt::Set(set) => {
                self.expr(&set.target);
                self.expr(&set.expr);
            }
            Stmt::SetBlock(block) => self.refuse(
                block.span().start_offset,
                "`{% set %}…{% endset %}` is not supported in playbook templates (what it captures would escape the size limit); use `{% set x = … %}`",
            ),
            Stmt::FilterBlock(block) => self.refuse(
                block.span().start_offset,
                "`{% filter %}` blocks are not supported in playbook templates (what they capture would escape the size limit); apply the filter to an expression",
            ),
            Stmt::AutoEscape(block) => {
                self.expr(&block.enabled);
                self.stmts(&block.body, in_capture);
            }
            Stmt::Do(statement) => self.call(&statement.call),
            Stmt::Block(block) => self.refuse(
                block.span().start_offset,
                "a playbook template cannot include, extend or import other templates",
            ),
            Stmt::Import(import) => self.refuse(
                import.span().start_offset,
                "a playbook template cannot include, extend or import other templates",
            ),
            Stmt::FromImport(import) => self.refuse(
                import.span().start_offset,
                "a playbook template cannot include, extend or import other templates",
            ),
            Stmt::Extends(extends) => self.refuse(
                extends.span().start_offset,
                "a playbook template cannot include, extend or import other templates",
            ),
            Stmt::Include(include) => self.refuse(
                include.span().start_offset,
                "a playbook template cannot include, extend or import other templates",
            ),
            Stmt::Continue(_) | Stmt::Break(_) => {}
        }
    }

    /// An expression whose value is inserted as it is: the one place a secret may stand.
    fn emitted(&mut self, expr: &Expr<'_>) {
        if is_secret(expr) {
            return;
        }
        self.expr(expr);
    }

    fn call(&mut self, call: &ast::Call<'_>) {
        self.expr(&call.expr);
        self.args(&call.args);
    }

    fn args(&mut self, args: &[CallArg<'_>]) {
        for arg in args {
            match arg {
                CallArg::Pos(expr)
                | CallArg::Kwarg(_, expr)
                | CallArg::PosSplat(expr)
                | CallArg::KwargSplat(expr) => self.expr(expr),
            }
        }
    }

    fn expr(&mut self, expr: &Expr<'_>) {
        match expr {
            Expr::Var(var) => {
                if var.id == "secrets" {
                    self.refuse(var.span().start_offset, NOT_WHOLE);
                }
            }
            Expr::Const(_) => {}
            Expr::Slice(slice) => {
                self.expr(&slice.expr);
                for part in [&slice.start, &slice.stop, &slice.step]
                    .into_iter()
                    .flatten()
                {
                    self.expr(part);
                }
            }
            Expr::UnaryOp(unary) => self.expr(&unary.expr),
            Expr::BinOp(binop) => {
                let function = match binop.op {
                    BinOpKind::Mul => Some(MUL),
                    BinOpKind::Add => Some(ADD),
                    BinOpKind::Concat => Some(CONCAT),
                    _ => None,
                };
                if let Some(function) = function {
                    let span = binop.span();
                    self.operators.push(Operator {
                        start: span.start_offset as usize,
                        symbol: binop.left.span().end_offset as usize,
                        end: span.end_offset as usize,
                        function,
                    });
                }
                self.expr(&binop.left);
                self.expr(&binop.right);
            }
            Expr::Compare(compare) => {
                self.expr(&compare.expr);
                for op in &compare.ops {
                    self.expr(&op.expr);
                }
            }
            Expr::IfExpr(if_expr) => {
                self.expr(&if_expr.test_expr);
                self.expr(&if_expr.true_expr);
                if let Some(false_expr) = &if_expr.false_expr {
                    self.expr(false_expr);
                }
            }
            Expr::Filter(filter) => {
                if let Some(expr) = &filter.expr {
                    self.expr(expr);
                }
                self.args(&filter.args);
            }
            Expr::Test(test) => {
                self.expr(&test.expr);
                self.args(&test.args);
            }
            Expr::GetAttr(attr) => self.expr(&attr.expr),
            Expr::GetItem(item) => {
                self.expr(&item.expr);
                self.expr(&item.subscript_expr);
            }
            Expr::Call(call) => self.call(call),
            Expr::List(list) => list.items.iter().for_each(|item| self.expr(item)),
            Expr::Map(map) => {
                for (key, value) in map.keys.iter().zip(&map.values) {
                    self.expr(key);
                    self.expr(value);
                }
            }
        }
    }
}

/// Is it `secrets.<name>` or `secrets["<name>"]`?
fn is_secret(expr: &Expr<'_>) -> bool {
    match expr {
        Expr::GetAttr(attr) => matches!(&attr.expr, Expr::Var(var) if var.id == "secrets"),
        Expr::GetItem(item) => matches!(
            (&item.expr, &item.subscript_expr),
            (Expr::Var(var), Expr::Const(name)) if var.id == "secrets" && name.value.as_str().is_some()
        ),
        _ => false,
    }
}

/// Rewrites each operator `left ⊕ right` (its whole span, as minijinja parsed it) into
/// `f((left), (right))`. Where rewrites meet at one offset, closings come first (the inner one's
/// first), then the operator, then openings (the outer one's first).
fn rewrite(text: &str, operators: Vec<Operator>) -> Result<Prepared, Problem> {
    // (offset, class at that offset, tie-break, bytes removed, text inserted)
    let mut insertions: Vec<(usize, u8, isize, usize, String)> = Vec::new();
    for operator in &operators {
        let width = (operator.end - operator.start) as isize;
        let symbol = text[operator.symbol..]
            .find(|c: char| !c.is_whitespace() && c != ')')
            .map(|offset| operator.symbol + offset)
            .filter(|&at| matches!(text.as_bytes().get(at), Some(b'*' | b'+' | b'~')))
            .ok_or_else(|| {
                Problem::Refused((
                    operator.start,
                    "this expression cannot be checked; add parentheses around its operands"
                        .to_owned(),
                ))
            })?;
        insertions.push((operator.end, 0, width, 0, "))".to_owned()));
        insertions.push((symbol, 1, 0, 1, "), (".to_owned()));
        insertions.push((
            operator.start,
            2,
            -width,
            0,
            format!("{}((", operator.function),
        ));
    }
    insertions.sort_by_key(|(at, class, tie, _, _)| (*at, *class, *tie));
    let mut rewritten = String::with_capacity(text.len() + insertions.len() * 8);
    let mut edits = Vec::with_capacity(insertions.len());
    let mut copied = 0;
    for (at, _, _, removed, inserted) in insertions {
        rewritten.push_str(&text[copied..at]);
        rewritten.push_str(&inserted);
        copied = at + removed;
        edits.push(Edit {
            at,
            inserted: inserted.len(),
            removed,
        });
    }
    rewritten.push_str(&text[copied..]);
    Ok(Prepared {
        text: rewritten,
        edits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(text: &str) -> String {
        match prepare(text, Kind::Expression) {
            Ok(prepared) => prepared.text,
            Err(problem) => panic!("{text}: {problem:?}"),
        }
    }

    #[test]
    fn operators_become_calls_whatever_the_parentheses() {
        let cases = [
            ("a * b", "__riposte_mul((a ), ( b))"),
            (
                "(a + b) * c",
                "__riposte_mul(((__riposte_add((a ), ( b))) ), ( c))",
            ),
            ("((a)) * b", "__riposte_mul((((a)) ), ( b))"),
            ("(a * b)", "(__riposte_mul((a ), ( b)))"),
            (
                "a * b * c",
                "__riposte_mul((__riposte_mul((a ), ( b)) ), ( c))",
            ),
            ("a|abs * b", "__riposte_mul((a|abs ), ( b))"),
            ("x.y[0] * 2", "__riposte_mul((x.y[0] ), ( 2))"),
            (
                "a ~ b ~ (c ~ d)",
                "__riposte_concat((__riposte_concat((a ), ( b)) ), ( (__riposte_concat((c ), ( d)))))",
            ),
            ("2 ** 3 - 1", "2 ** 3 - 1"),
            ("a*b~c", "__riposte_concat((__riposte_mul((a), (b))), (c))"),
        ];
        for (text, expected) in cases {
            assert_eq!(rewritten(text), expected, "{text}");
        }
    }

    #[test]
    fn offsets_map_back_to_the_original_text() {
        let prepared = prepare("a * b + c", Kind::Expression).expect("prepares");
        // `c` in the rewritten text maps to `c` in the original.
        let c = prepared.text.rfind('c').expect("c");
        assert_eq!(prepared.original_offset(c), 8);
        let b = prepared.text.find('b').expect("b");
        assert_eq!(prepared.original_offset(b), 4);
        // Inside inserted text: the place of the insertion.
        assert_eq!(prepared.original_offset(0), 0);
    }

    #[test]
    fn what_a_template_may_not_contain_is_refused_where_it_starts() {
        // (template, what the reported offset points at, words of the message)
        let cases = [
            ("x{% set a %}y{% endset %}", "set a", "{% set %}"),
            (
                "{% filter upper %}y{% endfilter %}",
                "filter",
                "{% filter %}",
            ),
            (
                "{% for x in [1] recursive %}{{ loop(x) }}{% endfor %}",
                "for x",
                "recursive loops",
            ),
            ("{% include 'x' %}", "include", "include"),
            (
                "{{ secrets.token | upper }}",
                "secrets.token |",
                "inserted whole",
            ),
            (
                "{{ 'Bearer ' ~ secrets.token }}",
                "secrets.token }",
                "inserted whole",
            ),
            (
                "{% if secrets.token == 'x' %}{% endif %}",
                "secrets.token ==",
                "inserted whole",
            ),
        ];
        for (text, points_at, words) in cases {
            match prepare(text, Kind::Template) {
                Err(Problem::Refused((offset, message))) => {
                    assert!(text[offset..].starts_with(points_at), "{text}: at {offset}");
                    assert!(message.contains(words), "{text}: {message}");
                }
                other => panic!("{text}: expected a refusal, got {other:?}"),
            }
        }
        for allowed in [
            "Token {{ secrets.token }}",
            "{{ secrets['token'] }}",
            "{% set a = 1 %}{{ a }}",
        ] {
            assert!(prepare(allowed, Kind::Template).is_ok(), "{allowed}");
        }
    }
}
