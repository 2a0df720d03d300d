//! Errors and warnings found in `infra.yml`, with where they point.

use std::fmt::Write as _;

use anklume_yaml::load::Sources;
use anklume_yaml::{Mark, Node};

/// One finding: the reference generator's message, plus the key path and
/// source position we can add to it.
#[derive(Debug, Clone)]
pub struct Diag {
    pub message: String,
    pub path: Option<String>,
    pub mark: Option<Mark>,
}

impl Diag {
    pub fn new(message: impl Into<String>) -> Self {
        Diag {
            message: message.into(),
            path: None,
            mark: None,
        }
    }

    /// Point at a key path and the node found there.
    pub fn at(mut self, path: impl Into<String>, node: Option<&Node>) -> Self {
        self.path = Some(path.into());
        self.mark = node.map(|n| n.mark).filter(|m| m.line > 0);
        self
    }

    /// `message` then, on its own line, `at <path> (<file>:<line>:<col>)`.
    pub fn render(&self, bullet: &str, sources: &Sources) -> String {
        let mut s = format!("{bullet}{}", self.message);
        let indent = " ".repeat(bullet.len() + 2);
        match (&self.path, self.mark) {
            (Some(p), Some(m)) => {
                let _ = write!(s, "\n{indent}at {p} ({})", sources.locate(m));
            }
            (Some(p), None) => {
                let _ = write!(s, "\n{indent}at {p}");
            }
            (None, Some(m)) => {
                let _ = write!(s, "\n{indent}at {}", sources.locate(m));
            }
            (None, None) => {}
        }
        s
    }
}

/// Findings collected by one validation pass.
#[derive(Debug, Default)]
pub struct Diags {
    pub items: Vec<Diag>,
}

impl Diags {
    pub fn push(&mut self, d: Diag) {
        self.items.push(d);
    }

    /// A message pointing at `path` / `node`.
    pub fn err(
        &mut self,
        message: impl Into<String>,
        path: impl Into<String>,
        node: Option<&Node>,
    ) {
        self.items.push(Diag::new(message).at(path, node));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}
