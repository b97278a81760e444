//! Prometheus metrics of one process, served at `/metrics`: webhooks by answer and how long each
//! took to answer, queue depth, runs and steps by outcome, step and plugin-call latency, cases
//! opened and how long incidents took to acknowledge, contain and recover (observed by the
//! process that recorded the moment).
//!
//! [`Metrics`] is the runner's [`runner::Observer`]: run and step figures are counted from the
//! events the runner records, through its one journal path, so they count exactly what the
//! audit trail holds (cancelled and given-up runs included); plugin calls are timed by the runner
//! too. Labels are bounded: an unknown trigger counts as `unknown`, never as the name a caller
//! made up.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use runner::RunEvent;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    trigger: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    action: String,
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    webhook_seconds: Family<WebhookLabels, Histogram>,
    runs: Family<OutcomeLabels, Counter>,
    steps: Family<OutcomeLabels, Counter>,
    undos: Family<OutcomeLabels, Counter>,
    step_seconds: Family<OutcomeLabels, Histogram>,
    plugin_seconds: Family<PluginLabels, Histogram>,
    journal_seconds: Histogram,
    journal_records: Counter,
    queue_depth: Gauge,
    runs_stalled: Gauge,
    run_stalls: Counter,
    advances_held_back: Counter,
    advance_hold_back_seconds: Counter<f64, AtomicU64>,
    cases_opened: Counter,
    case_seconds: Family<MomentLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MomentLabels {
    /// `acknowledge`, `contain`, `recover`.
    to: String,
}

/// A minute to ~11 days, doubling: how long incidents take, not requests.
fn incident_histogram() -> Histogram {
    Histogram::new(exponential_buckets(60.0, 2.0, 15))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// How long a webhook took to answer: fine below 10 ms, where a healthy accept lands, with a
/// bound at 5 ms to read an accept-latency objective off directly (the share answered within it
/// is `le="0.005"` over `_count`).
fn webhook_histogram() -> Histogram {
    Histogram::new([
        0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.007_5, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
    ])
}

/// 1 ms to ~33 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("riposte");
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries, by trigger and HTTP status of the answer",
            webhooks.clone(),
        );
        let webhook_seconds = Family::<WebhookLabels, Histogram>::new_with_constructor(
            webhook_histogram as fn() -> _,
        );
        registry.register(
            "webhook_duration_seconds",
            "Time from a webhook's request (its headers read) to its answer, body and store included",
            webhook_seconds.clone(),
        );
        let runs = Family::<OutcomeLabels, Counter>::default();
        registry.register("runs", "Runs that ended, by outcome", runs.clone());
        let steps = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "steps",
            "Steps that ended (succeeded, failed, skipped) and attempts retried",
            steps.clone(),
        );
        let undos = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "undos",
            "Undos of steps' effects that ended (succeeded, failed)",
            undos.clone(),
        );
        let step_seconds = Family::<OutcomeLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> _,
        );
        registry.register(
            "step_duration_seconds",
            "Time from a step's start to its end, retries included",
            step_seconds.clone(),
        );
        let plugin_seconds =
            Family::<PluginLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "plugin_call_duration_seconds",
            "Time of one plugin call, by plugin, action and outcome (ok or the error kind)",
            plugin_seconds.clone(),
        );
        let journal_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "journal_write_duration_seconds",
            "Time of one write to the run journal and audit trail (a batch of records)",
            journal_seconds.clone(),
        );
        let journal_records = Counter::default();
        registry.register(
            "journal_records",
            "Records written to run journals",
            journal_records.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Jobs waiting or in progress in the shared queue",
            queue_depth.clone(),
        );
        let runs_stalled = Gauge::default();
        registry.register(
            "runs_stalled",
            "Runs this process drives that have made no progress for longer than their playbook allows",
            runs_stalled.clone(),
        );
        let run_stalls = Counter::default();
        registry.register(
            "run_stalls",
            "Runs found stalled by this process's watchdog",
            run_stalls.clone(),
        );
        let advances_held_back = Counter::default();
        registry.register(
            "advances_held_back",
            "Run advances this process's worker held back while its API took a burst of webhooks",
            advances_held_back.clone(),
        );
        let advance_hold_back_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "advance_hold_back_seconds",
            "Time run advances waited while this process's API took a burst of webhooks",
            advance_hold_back_seconds.clone(),
        );
        let cases_opened = Counter::default();
        registry.register(
            "cases_opened",
            "Incident cases opened",
            cases_opened.clone(),
        );
        let case_seconds = Family::<MomentLabels, Histogram>::new_with_constructor(
            incident_histogram as fn() -> _,
        );
        registry.register(
            "case_time_to_seconds",
            "Time from a case's opening to its acknowledgement, containment and recovery (label `to`)",
            case_seconds.clone(),
        );
        Metrics {
            registry,
            cases_opened,
            case_seconds,
            runs_stalled,
            run_stalls,
            advances_held_back,
            advance_hold_back_seconds,
            webhooks,
            webhook_seconds,
            runs,
            steps,
            undos,
            step_seconds,
            plugin_seconds,
            journal_seconds,
            journal_records,
            queue_depth,
        }
    }
}

impl Metrics {
    /// A webhook was answered with `status` after `took`.
    pub fn webhook(&self, trigger: &str, status: u16, took: Duration) {
        let labels = WebhookLabels {
            trigger: trigger.to_owned(),
            status: status.to_string(),
        };
        self.webhooks.get_or_create(&labels).inc();
        self.webhook_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    fn plugin_call(&self, plugin: &str, action: &str, outcome: &str, took: Duration) {
        self.plugin_seconds
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// What the watchdog sees now: `stalled` runs, of which `new` were not stalled before.
    pub fn stalls(&self, stalled: usize, new: usize) {
        self.runs_stalled
            .set(i64::try_from(stalled).unwrap_or(i64::MAX));
        self.run_stalls.inc_by(new as u64);
    }

    /// An advance waited `waited` for a burst of webhooks to pass
    /// ([`crate::api_first::ApiFirst`]).
    pub fn advance_held_back(&self, waited: Duration) {
        self.advances_held_back.inc();
        self.advance_hold_back_seconds.inc_by(waited.as_secs_f64());
    }

    /// A case was written: counts what it reached for the first time between `before` (`None`
    /// for a new case) and `after`.
    pub fn case_written(&self, before: Option<&cases::Case>, after: &cases::Case) {
        if before.is_none() {
            self.cases_opened.inc();
        }
        let was = before.map(cases::Case::durations).unwrap_or_default();
        let now = after.durations();
        for (to, was, now) in [
            ("acknowledge", was.to_acknowledge_ms, now.to_acknowledge_ms),
            ("contain", was.to_contain_ms, now.to_contain_ms),
            ("recover", was.to_recover_ms, now.to_recover_ms),
        ] {
            if let (None, Some(took)) = (was, now) {
                self.case_seconds
                    .get_or_create(&MomentLabels { to: to.to_owned() })
                    .observe(took as f64 / 1000.0);
            }
        }
    }

    fn event(&self, event: &RunEvent) {
        let outcome = |name: &str| OutcomeLabels {
            outcome: name.to_owned(),
        };
        match event {
            RunEvent::StepSucceeded { duration_ms, .. } => {
                self.steps.get_or_create(&outcome("succeeded")).inc();
                self.step_seconds
                    .get_or_create(&outcome("succeeded"))
                    .observe(*duration_ms as f64 / 1000.0);
            }
            RunEvent::StepFailed { duration_ms, .. } => {
                self.steps.get_or_create(&outcome("failed")).inc();
                self.step_seconds
                    .get_or_create(&outcome("failed"))
                    .observe(*duration_ms as f64 / 1000.0);
            }
            RunEvent::StepSkipped { .. } => {
                self.steps.get_or_create(&outcome("skipped")).inc();
            }
            RunEvent::StepRetrying { .. } => {
                self.steps.get_or_create(&outcome("retried")).inc();
            }
            RunEvent::RunFinished { status, .. } => {
                self.runs.get_or_create(&outcome(status.as_str())).inc();
            }
            RunEvent::RunCancelled { .. } => {
                self.runs.get_or_create(&outcome("cancelled")).inc();
            }
            RunEvent::UndoSucceeded { .. } => {
                self.undos.get_or_create(&outcome("succeeded")).inc();
            }
            RunEvent::UndoFailed { .. } => {
                self.undos.get_or_create(&outcome("failed")).inc();
            }
            _ => {}
        }
    }

    /// The text exposition format, with the queue depth as of now.
    pub fn render(&self, queue_depth: Option<u64>) -> String {
        if let Some(depth) = queue_depth {
            self.queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl runner::Observer for Metrics {
    fn recorded(&self, events: &[RunEvent], took: Duration) {
        self.journal_seconds.observe(took.as_secs_f64());
        self.journal_records.inc_by(events.len() as u64);
        for event in events {
            self.event(event);
        }
    }

    fn called(
        &self,
        uses: &playbook::PluginRef,
        outcome: Result<(), &runner::StepError>,
        took: Duration,
    ) {
        let outcome = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(error) => error.kind.to_string(),
        };
        self.plugin_call(&uses.plugin, &uses.action, &outcome, took);
    }
}
