//! Checks of the step graph once every step is known: `needs` and `on_failure` name steps and
//! handlers that exist, and `needs` has no cycle; the order steps run in.

use super::*;

impl<'s> Compiler<'s> {
    /// Resolves `needs` and handler references, and orders steps; `None` if there is a cycle.
    pub(super) fn check_graph(&mut self, steps: &[Step], handlers: &[Step]) -> Option<Vec<usize>> {
        let mut first_use: HashMap<&str, Position> = HashMap::new();
        for step in steps
            .iter()
            .chain(handlers)
            .filter(|s| !s.id.is_placeholder())
        {
            if let Some(previous) = first_use.get(step.id.as_str()) {
                let message = format!(
                    "the id `{}` is already used by the step at {previous}",
                    step.id
                );
                self.error_with_hint(
                    "duplicate-id",
                    step.position,
                    message,
                    "give every step and handler its own id",
                );
            } else {
                first_use.insert(step.id.as_str(), step.position);
            }
        }
        let step_ids = distinct_ids(steps);
        let handler_ids = distinct_ids(handlers);
        let references = std::mem::take(&mut self.references);
        let all_ids: Vec<&str> = steps
            .iter()
            .chain(handlers)
            .map(|s| s.id.as_str())
            .collect();
        let mut graph_ok = true;
        for reference in &references {
            let from = all_ids.get(reference.from).copied().unwrap_or("?");
            let target = reference.target.as_str();
            match reference.kind {
                ReferenceKind::Needs if step_ids.contains(&target) => {
                    if target == from {
                        self.error_with_hint(
                            "cycle",
                            reference.position,
                            format!("step `{from}` needs itself"),
                            "remove it from its own `needs`",
                        );
                        graph_ok = false;
                    }
                }
                ReferenceKind::Needs => {
                    graph_ok = false;
                    let hint = if handler_ids.contains(&target) {
                        format!(
                            "`{target}` is a handler; handlers run from `on_failure`, not `needs`"
                        )
                    } else {
                        suggest(target, &step_ids)
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| format!("steps are {}", backticked(&step_ids)))
                    };
                    self.error_with_hint(
                        "unknown-step",
                        reference.position,
                        format!("step `{from}` needs `{target}`, which does not exist"),
                        hint,
                    );
                }
                ReferenceKind::Handler if handler_ids.contains(&target) => {}
                ReferenceKind::Handler => {
                    let hint = if step_ids.contains(&target) {
                        format!(
                            "`{target}` is a step; move it under `handlers:` to run it on failure"
                        )
                    } else {
                        suggest(target, &handler_ids)
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| {
                                "declare it under the top-level `handlers:`".to_owned()
                            })
                    };
                    self.error_with_hint(
                        "unknown-handler",
                        reference.position,
                        format!("`on_failure` of `{from}` runs `{target}`, which is not a handler"),
                        hint,
                    );
                }
            }
        }
        let order = topological_order(steps);
        if order.len() < steps.len() {
            let cycle = find_cycle(steps);
            let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
            let first = cycle
                .first()
                .map(|&i| steps[i].position)
                .unwrap_or(Position::START);
            self.error_with_hint(
                "cycle",
                first,
                format!("cycle: {}", names.join(" → ")),
                "`a → b` reads \"a needs b\"; remove one of these `needs` so the steps can be ordered",
            );
            return None;
        }
        graph_ok.then_some(order)
    }
}

/// Kahn's algorithm; among steps that are ready together, the one declared first goes first.
pub(super) fn topological_order(steps: &[Step]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut remaining: Vec<usize> = vec![0; steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for need in &step.needs {
            // A step that needs itself is reported on its own, not as a cycle.
            if let Some(&j) = index.get(need.as_str()).filter(|&&j| j != i) {
                dependents[j].push(i);
                remaining[i] += 1;
            }
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..steps.len())
        .filter(|&i| remaining[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            remaining[j] -= 1;
            if remaining[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    order
}

/// A cycle among `steps`, as a path that starts and ends at the same step.
pub(super) fn find_cycle(steps: &[Step]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; steps.len()];
    let mut path = Vec::new();
    pub(super) fn visit(
        i: usize,
        steps: &[Step],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for need in &steps[i].needs {
            let Some(&j) = index.get(need.as_str()).filter(|&&j| j != i) else {
                continue;
            };
            if state[j] == 1 {
                let start = path.iter().position(|&p| p == j).unwrap_or(0);
                let mut cycle: Vec<usize> = path[start..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if state[j] == 0
                && let Some(cycle) = visit(j, steps, index, state, path)
            {
                return Some(cycle);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    for i in 0..steps.len() {
        if state[i] == 0
            && let Some(cycle) = visit(i, steps, &index, &mut state, &mut path)
        {
            return cycle;
        }
    }
    Vec::new()
}

/// For each step, which steps (by index) it transitively needs.
pub(super) fn ancestors(steps: &[Step], order: &[usize]) -> Vec<Vec<bool>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut result = vec![vec![false; steps.len()]; steps.len()];
    for &i in order {
        for need in &steps[i].needs {
            if let Some(&j) = index.get(need.as_str()) {
                let inherited = result[j].clone();
                let own = &mut result[i];
                own[j] = true;
                for (mine, theirs) in own.iter_mut().zip(inherited) {
                    *mine |= theirs;
                }
            }
        }
    }
    result
}

/// The real ids of `steps`, each once, for hint lists.
pub(super) fn distinct_ids(steps: &[Step]) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for id in steps
        .iter()
        .filter(|s| !s.id.is_placeholder())
        .map(|s| s.id.as_str())
    {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}
