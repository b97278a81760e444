//! Diagnostics: what is wrong, where, and how to fix it — rendered like a compiler, or as JSON.

use std::fmt::{self, Write as _};

use serde::Serialize;

/// A 1-based line and column in a playbook file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl Position {
    pub const START: Position = Position { line: 1, column: 1 };

    pub fn new(line: u32, column: u32) -> Self {
        Position {
            line: line.max(1),
            column: column.max(1),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem found in a playbook. Every diagnostic is an error: a playbook with any is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// A stable, kebab-case identifier of the kind of problem (`unknown-field`, `cycle`, …).
    pub code: &'static str,
    pub message: String,
    #[serde(flatten)]
    pub position: Position,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, position: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            position,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders the diagnostic like rustc does: message, location, the source line, a caret, the hint.
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "error[{}]: {}", self.code, self.message);
        let number = self.position.line.to_string();
        let gutter = " ".repeat(number.len());
        let _ = writeln!(out, "{gutter}--> {file}:{}", self.position);
        if let Some(line) = source.lines().nth(self.position.line as usize - 1) {
            let caret_pad: String = line
                .chars()
                .take(self.position.column as usize - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{gutter} |");
            let _ = writeln!(out, "{number} | {line}");
            let _ = writeln!(out, "{gutter} | {caret_pad}^");
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{gutter} = help: {hint}");
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Diagnostics of one file, with the file's name and text so they can be rendered.
#[derive(Debug, Clone, Serialize)]
pub struct FileDiagnostics {
    pub file: String,
    #[serde(skip)]
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl FileDiagnostics {
    pub fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }

    pub fn render(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(&self.file, &self.source))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
