//! Sub-playbooks across a set of playbooks: a step that `uses: playbook/<name>` runs that
//! playbook as a child run. A call must name a playbook of the set, and no playbook may call
//! itself, directly or through others (the runs would never end).

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::model::{Playbook, Step};

/// The `uses` plugin name that calls a playbook: `uses: playbook/<name>`.
pub const PLAYBOOK_CALL: &str = "playbook";

impl Step {
    /// The playbook this step runs as a child run, if it calls one.
    pub fn called_playbook(&self) -> Option<&str> {
        (self.uses.plugin == PLAYBOOK_CALL).then_some(self.uses.action.as_str())
    }
}

/// Checks the calls between `playbooks`: each call names one of them, and none calls itself
/// through the calls. Returns each problem with the index of the playbook it is in, placed at
/// the calling step.
pub fn check_calls(playbooks: &[&Playbook]) -> Vec<(usize, Diagnostic)> {
    let by_name: BTreeMap<&str, usize> = playbooks
        .iter()
        .enumerate()
        .map(|(index, playbook)| (playbook.name.as_str(), index))
        .collect();
    let mut problems = Vec::new();
    for (index, playbook) in playbooks.iter().enumerate() {
        for step in playbook.steps.iter().chain(&playbook.handlers) {
            let Some(callee) = step.called_playbook() else {
                continue;
            };
            if !by_name.contains_key(callee) {
                let known: Vec<&str> = by_name.keys().copied().collect();
                let hint = crate::compile::suggest(callee, &known)
                    .map(|name| format!("did you mean `playbook/{name}`?"))
                    .unwrap_or_else(|| {
                        "a sub-playbook is another playbook of the same folder, named by its `name`"
                            .to_owned()
                    });
                problems.push((
                    index,
                    Diagnostic::error(
                        "unknown-playbook",
                        step.position,
                        format!(
                            "step `{}` calls playbook `{callee}`, which does not exist",
                            step.id
                        ),
                    )
                    .with_hint(hint),
                ));
                continue;
            }
            if let Some(path) = cycle_through(playbooks, &by_name, &playbook.name, callee) {
                problems.push((
                    index,
                    Diagnostic::error(
                        "call-cycle",
                        step.position,
                        format!(
                            "step `{}` calls playbook `{callee}`, which calls `{}` back: {}",
                            step.id,
                            playbook.name,
                            path.join(" → ")
                        ),
                    )
                    .with_hint("a playbook must not run itself, directly or through others"),
                ));
            }
        }
    }
    problems
}

/// The chain of calls from `start` through `first` back to `start`, if there is one.
fn cycle_through(
    playbooks: &[&Playbook],
    by_name: &BTreeMap<&str, usize>,
    start: &str,
    first: &str,
) -> Option<Vec<String>> {
    // Depth-first over the call graph, remembering how each playbook was reached.
    let mut reached_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut stack = vec![first];
    reached_from.insert(first, start);
    while let Some(name) = stack.pop() {
        if name == start {
            let mut path = vec![start.to_owned()];
            let mut at = reached_from.get(start).copied();
            while let Some(previous) = at.filter(|previous| *previous != start) {
                path.push(previous.to_owned());
                at = reached_from.get(previous).copied();
            }
            path.push(start.to_owned());
            path.reverse();
            return Some(path);
        }
        let Some(&index) = by_name.get(name) else {
            continue;
        };
        let playbook = playbooks[index];
        for callee in playbook
            .steps
            .iter()
            .chain(&playbook.handlers)
            .filter_map(Step::called_playbook)
        {
            if callee == start {
                reached_from.insert(start, name);
                stack.push(start);
            } else if !reached_from.contains_key(callee) {
                reached_from.insert(callee, name);
                stack.push(callee);
            }
        }
    }
    None
}
