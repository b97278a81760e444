//! Ordering, parallelism, conditions, loops, retries, timeouts, failure handling, outputs.

use std::sync::Arc;
use std::time::Duration;

use playbook::ErrorKind;
use runner::{RunEvent, RunStatus, StepError, StepStatus};
use serde_json::json;

use crate::{Behaviour, Harness, Scripted, fail, ok, playbook, secrets, slow};

const DIAMOND: &str = r#"
name: diamond
trigger: { webhook: t, public: true }
steps:
  - id: a
    uses: test/act
  - id: b
    uses: test/act
    needs: [a]
  - id: c
    uses: test/act
    needs: a
  - id: d
    uses: test/act
    needs: [b, c]
    with:
      from_b: "{{ steps.b.output.n }}"
      from_c: "{{ steps.c.output.n }}"
outputs:
  total: "{{ steps.b.output.n + steps.c.output.n }}"
"#;

#[tokio::test(start_paused = true)]
async fn steps_run_in_dependency_order_and_independent_branches_overlap() {
    let executor = Scripted::new()
        .on("a", vec![slow(json!({"n": 1}), 10)])
        .on("b", vec![slow(json!({"n": 2}), 10)])
        .on("c", vec![slow(json!({"n": 3}), 10)]);
    let harness = Harness::new(executor);
    let state = harness.start(&playbook(DIAMOND), json!({})).await;

    assert_eq!(state.status, RunStatus::Succeeded);
    let seen = harness.executor.seen();
    let at = |step: &str| {
        seen.iter()
            .find(|s| s.call.step_id == step)
            .map(|s| s.at)
            .expect("called")
    };
    assert_eq!(at("a"), Duration::ZERO);
    // b and c both start when a finishes: they run side by side, not one after the other.
    assert_eq!(at("b"), Duration::from_secs(10));
    assert_eq!(at("c"), Duration::from_secs(10));
    assert_eq!(at("d"), Duration::from_secs(20));
    let d = harness.executor.calls_of("d");
    assert_eq!(d[0].call.input, json!({"from_b": 2, "from_c": 3}));
    assert_eq!(state.outputs, Some(json!({"total": 5})));
}

#[tokio::test(start_paused = true)]
async fn a_false_condition_skips_the_step_and_everything_that_needs_it() {
    let yaml = r#"
name: cond
trigger: { webhook: t, public: true }
steps:
  - id: check
    uses: test/act
  - id: block
    uses: test/act
    needs: [check]
    if: steps.check.output.score >= 80
  - id: notify
    uses: test/act
    needs: [block]
  - id: always
    uses: test/act
    if: "{{ trigger.kind == 'alert' }}"
"#;
    let harness = Harness::new(Scripted::new().on("check", vec![ok(json!({"score": 10}))]));
    let state = harness
        .start(&playbook(yaml), json!({"kind": "alert"}))
        .await;

    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(state.step_status("block"), StepStatus::Skipped);
    assert_eq!(state.step_status("notify"), StepStatus::Skipped);
    assert_eq!(state.step_status("always"), StepStatus::Succeeded);
    assert!(harness.executor.calls_of("block").is_empty());
    let reason = state
        .step("notify")
        .and_then(|r| r.skip_reason.clone())
        .unwrap_or_default();
    assert!(reason.contains("needs `block`"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_condition_that_cannot_be_evaluated_fails_the_step_without_calling_it() {
    let yaml = r#"
name: cond-error
trigger: { webhook: t, public: true }
steps:
  - id: s
    uses: test/act
    if: trigger.missing.deeper == 1
"#;
    let harness = Harness::new(Scripted::new());
    let state = harness.start(&playbook(yaml), json!({})).await;
    assert_eq!(state.status, RunStatus::Failed);
    let error = state
        .step("s")
        .and_then(|r| r.error.clone())
        .expect("an error");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(harness.executor.seen().is_empty());
}

#[tokio::test(start_paused = true)]
async fn foreach_runs_every_item_with_bounded_concurrency_and_keeps_order() {
    let yaml = r#"
name: loop
trigger: { webhook: t, public: true }
steps:
  - id: enrich
    uses: test/act
    foreach:
      items: "{{ trigger.iocs }}"
      as: ioc
      concurrency: 2
    with:
      value: "{{ ioc | upper }}"
"#;
    let executor = Scripted::new().on(
        "enrich",
        (0..5)
            .map(|_| Behaviour::Ok(json!("done"), Duration::from_secs(1)))
            .collect(),
    );
    let harness = Harness::new(executor);
    let state = harness
        .start(&playbook(yaml), json!({"iocs": ["a", "b", "c", "d", "e"]}))
        .await;

    assert_eq!(state.status, RunStatus::Succeeded);
    let calls = harness.executor.calls_of("enrich");
    let inputs: Vec<_> = calls
        .iter()
        .map(|s| s.call.input["value"].clone())
        .collect();
    assert_eq!(
        inputs,
        vec![json!("A"), json!("B"), json!("C"), json!("D"), json!("E")]
    );
    // Two at a time, one second each: items start at 0, 0, 1, 1 and 2 seconds.
    let starts: Vec<u64> = calls.iter().map(|s| s.at.as_secs()).collect();
    assert_eq!(starts, vec![0, 0, 1, 1, 2]);
    let keys: Vec<_> = calls
        .iter()
        .map(|s| s.call.idempotency_key.clone())
        .collect();
    assert_eq!(keys[0], "run-1:enrich:0");
    assert_eq!(keys[4], "run-1:enrich:4");
    assert_eq!(
        state.step("enrich").and_then(|r| r.output.clone()),
        Some(json!(["done", "done", "done", "done", "done"]))
    );
}

#[tokio::test(start_paused = true)]
async fn foreach_over_something_that_is_not_a_list_fails_clearly() {
    let yaml = r#"
name: loop
trigger: { webhook: t, public: true }
steps:
  - id: s
    uses: test/act
    foreach: "{{ trigger.ip }}"
"#;
    let harness = Harness::new(Scripted::new());
    let state = harness
        .start(&playbook(yaml), json!({"ip": "1.2.3.4"}))
        .await;
    let error = state
        .step("s")
        .and_then(|r| r.error.clone())
        .expect("an error");
    assert!(
        error.message.contains("must yield a list"),
        "{}",
        error.message
    );
    assert!(harness.executor.seen().is_empty());
}

const RETRYING: &str = r#"
name: retrying
trigger: { webhook: t, public: true }
steps:
  - id: flaky
    uses: test/act
    retry:
      max_attempts: 4
      backoff: { initial: 1s, multiplier: 2, max: 3s, jitter: false }
"#;

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_up_to_the_maximum_delay() {
    let executor = Scripted::new().on(
        "flaky",
        vec![
            fail(ErrorKind::Upstream, "502"),
            fail(ErrorKind::Timeout, "slow"),
            fail(ErrorKind::RateLimited, "429"),
            ok(json!({"ok": true})),
        ],
    );
    let harness = Harness::new(executor);
    let state = harness.start(&playbook(RETRYING), json!({})).await;

    assert_eq!(state.status, RunStatus::Succeeded);
    let record = state.step("flaky").expect("recorded");
    assert_eq!(record.attempts, 4);
    let starts: Vec<u64> = harness
        .executor
        .calls_of("flaky")
        .iter()
        .map(|s| s.at.as_secs())
        .collect();
    // Delays 1s, 2s, then 4s capped to 3s.
    assert_eq!(starts, vec![0, 1, 3, 6]);
    let delays: Vec<u64> = harness
        .events()
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepRetrying { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, vec![1000, 2000, 3000]);
    let attempts: Vec<u32> = harness
        .executor
        .calls_of("flaky")
        .iter()
        .map(|s| s.call.attempt)
        .collect();
    assert_eq!(attempts, vec![1, 2, 3, 4]);
    let keys: Vec<String> = harness
        .executor
        .calls_of("flaky")
        .iter()
        .map(|s| s.call.idempotency_key.clone())
        .collect();
    assert!(
        keys.iter().all(|k| k == "run-1:flaky"),
        "the key must not change between attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_keeps_each_delay_between_half_and_all_of_the_backoff() {
    let yaml = r#"
name: jitter
trigger: { webhook: t, public: true }
steps:
  - id: flaky
    uses: test/act
    retry:
      max_attempts: 6
      backoff: { initial: 8s, multiplier: 1, max: 8s }
"#;
    let executor = Scripted::new().on(
        "flaky",
        (0..5).map(|_| fail(ErrorKind::Upstream, "502")).collect(),
    );
    let harness = Harness::new(executor);
    harness.start(&playbook(yaml), json!({})).await;
    let delays: Vec<u64> = harness
        .events()
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepRetrying { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 5);
    assert!(
        delays.iter().all(|d| (4000..=8000).contains(d)),
        "{delays:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_that_retrying_cannot_fix_fail_at_once() {
    let executor = Scripted::new().on("flaky", vec![fail(ErrorKind::Unauthorized, "bad key")]);
    let harness = Harness::new(executor);
    let state = harness.start(&playbook(RETRYING), json!({})).await;
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.step("flaky").map(|r| r.attempts), Some(1));
    assert_eq!(harness.executor.calls_of("flaky").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_retry_after_is_honoured_up_to_the_maximum_delay() {
    let mut limited = StepError::new(ErrorKind::RateLimited, "429");
    limited.retry_after_ms = Some(2_500);
    let executor = Scripted::new().on(
        "flaky",
        vec![Behaviour::Err(limited, Duration::ZERO), ok(json!({}))],
    );
    let harness = Harness::new(executor);
    harness.start(&playbook(RETRYING), json!({})).await;
    let starts: Vec<Duration> = harness
        .executor
        .calls_of("flaky")
        .iter()
        .map(|s| s.at)
        .collect();
    assert_eq!(starts, vec![Duration::ZERO, Duration::from_millis(2_500)]);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_has_its_own_deadline_and_timeouts_are_retried() {
    let yaml = r#"
name: timeouts
trigger: { webhook: t, public: true }
steps:
  - id: hung
    uses: test/act
    timeout: 2s
    retry: { max_attempts: 2, backoff: { initial: 1s, jitter: false } }
"#;
    let executor = Scripted::new().on("hung", vec![Behaviour::Hang, Behaviour::Hang]);
    let harness = Harness::new(executor);
    let started = tokio::time::Instant::now();
    let state = harness.start(&playbook(yaml), json!({})).await;

    assert_eq!(state.status, RunStatus::Failed);
    let record = state.step("hung").expect("recorded");
    assert_eq!(record.attempts, 2);
    let error = record.error.clone().expect("an error");
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.message.contains("2s"), "{}", error.message);
    // 2s attempt + 1s backoff + 2s attempt.
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn continue_on_failure_skips_dependents_but_runs_the_rest() {
    let yaml = r#"
name: continue
trigger: { webhook: t, public: true }
steps:
  - id: optional
    uses: test/act
    on_failure: continue
  - id: after_optional
    uses: test/act
    needs: [optional]
  - id: independent
    uses: test/act
"#;
    let harness =
        Harness::new(Scripted::new().on("optional", vec![fail(ErrorKind::NotFound, "gone")]));
    let state = harness.start(&playbook(yaml), json!({})).await;
    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(state.step_status("optional"), StepStatus::Failed);
    assert_eq!(state.step_status("after_optional"), StepStatus::Skipped);
    assert_eq!(state.step_status("independent"), StepStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn templates_read_each_step_as_it_is_when_they_are_rendered() {
    // A drive keeps each step's template value between contexts (`Drive::context`). Every
    // attempt of `flaky` and `optional` renders a context while both are still running; what
    // reads them later must see how they ended, not what was kept.
    let yaml = r#"
name: views
trigger: { webhook: t, public: true }
steps:
  - id: flaky
    uses: test/act
    with: { ip: "{{ trigger.ip }}" }
    retry: { max_attempts: 3, backoff: { initial: 1s, jitter: false } }
  - id: optional
    uses: test/act
    with: { ip: "{{ trigger.ip }}" }
    on_failure: continue
  - id: after
    uses: test/act
    needs: [flaky]
    with:
      status: "{{ steps.flaky.status }}"
      attempts: "{{ steps.flaky.attempts }}"
      n: "{{ steps.flaky.output.n }}"
outputs:
  after: "{{ steps.after.status }}"
  optional: "{{ steps.optional.status }}: {{ steps.optional.error.message }}"
"#;
    let executor = Scripted::new()
        .on(
            "flaky",
            vec![
                fail(ErrorKind::Upstream, "busy"),
                fail(ErrorKind::Upstream, "busy"),
                ok(json!({"n": 7})),
            ],
        )
        .on("optional", vec![fail(ErrorKind::NotFound, "gone")]);
    let harness = Harness::new(executor);
    let state = harness
        .start(&playbook(yaml), json!({"ip": "192.0.2.1"}))
        .await;
    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(
        harness.executor.calls_of("after")[0].call.input,
        json!({"status": "succeeded", "attempts": 3, "n": 7})
    );
    assert_eq!(
        state.outputs,
        Some(json!({"after": "succeeded", "optional": "failed: gone"}))
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_fails_the_run_and_nothing_new_starts() {
    let yaml = r#"
name: fail
trigger: { webhook: t, public: true }
steps:
  - id: first
    uses: test/act
  - id: second
    uses: test/act
    needs: [first]
  - id: slow_sibling
    uses: test/act
"#;
    let executor = Scripted::new()
        .on("first", vec![fail(ErrorKind::Internal, "boom")])
        .on("slow_sibling", vec![slow(json!("finished"), 5)]);
    let harness = Harness::new(executor);
    let state = harness.start(&playbook(yaml), json!({})).await;
    assert_eq!(state.status, RunStatus::Failed);
    assert!(
        state
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("step `first` failed")
    );
    assert_eq!(state.step_status("second"), StepStatus::Skipped);
    // A step already running when the run fails is allowed to finish and is recorded.
    assert_eq!(state.step_status("slow_sibling"), StepStatus::Succeeded);
    assert!(harness.executor.calls_of("second").is_empty());
}

const WITH_HANDLERS: &str = r#"
name: handled
trigger: { webhook: t, public: true }
steps:
  - id: block
    uses: test/act
    on_failure:
      run: [page, ticket]
      then: THEN
  - id: after
    uses: test/act
handlers:
  - id: page
    uses: test/page
    with:
      text: "{{ error.step }} failed: {{ error.kind }} {{ error.message }}"
  - id: ticket
    uses: test/ticket
"#;

#[tokio::test(start_paused = true)]
async fn failure_handlers_run_in_order_with_the_error_and_then_fail_the_run() {
    let harness =
        Harness::new(Scripted::new().on("block", vec![fail(ErrorKind::Upstream, "crowdsec down")]));
    let state = harness
        .start(&playbook(&WITH_HANDLERS.replace("THEN", "fail")), json!({}))
        .await;
    assert_eq!(state.status, RunStatus::Failed);
    let page = harness.executor.calls_of("page");
    assert_eq!(page.len(), 1);
    assert_eq!(
        page[0].call.input["text"],
        json!("block failed: upstream crowdsec down")
    );
    let order: Vec<String> = harness
        .executor
        .seen()
        .iter()
        .map(|s| s.call.step_id.clone())
        .collect();
    let page_at = order.iter().position(|s| s == "page");
    let ticket_at = order.iter().position(|s| s == "ticket");
    assert!(page_at < ticket_at, "{order:?}");
}

#[tokio::test(start_paused = true)]
async fn failure_handlers_then_continue_lets_the_run_succeed() {
    let harness =
        Harness::new(Scripted::new().on("block", vec![fail(ErrorKind::Upstream, "down")]));
    let state = harness
        .start(
            &playbook(&WITH_HANDLERS.replace("THEN", "continue")),
            json!({}),
        )
        .await;
    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(state.step_status("page"), StepStatus::Succeeded);
    assert_eq!(state.step_status("after"), StepStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn incident_fields_and_outputs_are_rendered_from_the_event_and_results() {
    let yaml = r#"
name: outputs
trigger: { webhook: t, public: true }
incident:
  title: "Suspicious login for {{ trigger.user }}"
  severity: "{{ 'high' if trigger.failures > 10 else 'low' }}"
steps:
  - id: s
    uses: test/act
    with: { user: "{{ trigger.user }}", severity: "{{ incident.severity }}" }
outputs:
  user: "{{ steps.s.output.user }}"
  summary: "{{ run.playbook }} handled {{ incident.title }}"
"#;
    let harness = Harness::new(Scripted::new());
    let state = harness
        .start(&playbook(yaml), json!({"user": "alice", "failures": 30}))
        .await;
    assert_eq!(state.incident.get("severity"), Some(&json!("high")));
    assert_eq!(
        harness.executor.calls_of("s")[0].call.input["severity"],
        json!("high")
    );
    assert_eq!(
        state.outputs,
        Some(json!({"user": "alice", "summary": "outputs handled Suspicious login for alice"}))
    );
}

#[tokio::test(start_paused = true)]
async fn secrets_reach_the_plugin_but_never_the_journal_in_any_encoding() {
    let canary = "s3cr3t-canary-9f8e";
    let yaml = r#"
name: secrets
trigger: { webhook: t, public: true }
secrets: [api_key]
steps:
  - id: call
    uses: test/act
    retry: { max_attempts: 2, backoff: { initial: 1s, jitter: false } }
    with:
      header: "Bearer {{ secrets.api_key }}"
      whole: "{{ secrets.api_key }}"
"#;
    // Templates cannot encode a secret (the sandbox refuses it); a plugin's answer can.
    let echoed = json!({
        "echo": canary,
        "hex": canary.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
        "b64": "czNjcjN0LWNhbmFyeS05Zjhl",
    });
    let executor = Scripted::new().on(
        "call",
        vec![
            fail(
                ErrorKind::Upstream,
                &format!("upstream rejected key {canary}"),
            ),
            ok(echoed),
        ],
    );
    let harness = Harness::new(executor);
    let state = harness
        .start_with_secrets(&playbook(yaml), json!({}), &secrets(&[("api_key", canary)]))
        .await;
    assert_eq!(state.status, RunStatus::Succeeded);
    // The plugin got the real value...
    let call = &harness.executor.calls_of("call")[0].call;
    assert_eq!(call.input["header"], json!(format!("Bearer {canary}")));
    assert_eq!(call.input["whole"], json!(canary));
    // ...the record has none of its forms.
    let journal = serde_json::to_string(&harness.events()).expect("serializable");
    let base64 = "czNjcjN0LWNhbmFyeS05Zjhl";
    let hex: String = canary.bytes().map(|b| format!("{b:02x}")).collect();
    for form in [canary, base64, hex.as_str()] {
        assert!(
            !journal.contains(form),
            "`{form}` leaked into the journal: {journal}"
        );
    }
    assert!(journal.contains("[REDACTED]"));
}

#[tokio::test(start_paused = true)]
async fn a_secret_the_playbook_did_not_declare_is_not_available() {
    let yaml = r#"
name: undeclared
trigger: { webhook: t, public: true }
secrets: [mine]
steps:
  - id: s
    uses: test/act
    with: { key: "{{ secrets.mine }}" }
"#;
    let harness = Harness::new(Scripted::new());
    // Only `other` is provided; `mine` is declared but missing, so rendering fails loudly.
    let state = harness
        .start_with_secrets(
            &playbook(yaml),
            json!({}),
            &secrets(&[("other", "value-1234")]),
        )
        .await;
    assert_eq!(state.status, RunStatus::Failed);
    let error = state
        .step("s")
        .and_then(|r| r.error.clone())
        .expect("an error");
    assert!(error.message.contains("secrets.mine"), "{}", error.message);
    assert!(harness.executor.seen().is_empty());
}

/// A secret cannot be transformed into something redaction would miss: `validate` refuses it,
/// and a template built by hand (past `compile`) fails at run time without the secret's value
/// ever entering the template engine.
#[tokio::test(start_paused = true)]
async fn a_secret_cannot_be_transformed_in_a_template() {
    let canary = "s3cr3t-canary-7a1b";
    for transform in ["reverse", "upper", "list", "b64encode"] {
        let yaml = format!(
            r#"
name: transformed
trigger: {{ webhook: t, public: true }}
secrets: [api_key]
steps:
  - id: call
    uses: test/act
    with: {{ x: "{{{{ secrets.api_key | {transform} }}}}" }}
"#
        );
        let diagnostics = playbook::compile(&yaml).expect_err("refused when checked");
        assert_eq!(diagnostics[0].code, "template-sandbox", "{transform}");

        let mut compiled = playbook(
            r#"
name: transformed
trigger: { webhook: t, public: true }
secrets: [api_key]
steps:
  - id: call
    uses: test/act
    with: { x: "{{ secrets.api_key }}" }
"#,
        );
        compiled.steps[0].with = playbook::Input::Map(vec![(
            "x".into(),
            playbook::Input::Expression(playbook::template::Source::new(
                format!("secrets.api_key | {transform}"),
                playbook::Position::new(8, 10),
            )),
        )]);
        let harness = Harness::new(Scripted::new());
        let state = harness
            .start_with_secrets(&compiled, json!({}), &secrets(&[("api_key", canary)]))
            .await;
        assert_eq!(state.status, RunStatus::Failed, "{transform}");
        assert!(harness.executor.calls_of("call").is_empty(), "{transform}");
        let journal = serde_json::to_string(&harness.events()).expect("serializable");
        assert!(journal.contains("inserted whole"), "{transform}: {journal}");
        let reversed: String = canary.chars().rev().collect();
        for form in [canary, reversed.as_str(), &canary.to_uppercase()] {
            assert!(
                !journal.contains(form),
                "{transform}: `{form}` in {journal}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_a_shared_limit_holds_parks_the_step_without_a_try() {
    let yaml = r#"
name: held
trigger: { webhook: t, public: true }
steps:
  - id: call
    uses: test/act
  - id: after
    uses: core/echo
    needs: call
"#;
    let compiled = playbook(yaml);
    let now = runner::Runner::new(Scripted::new(), Arc::new(runner::MemoryJournal::new())).now();
    let held = StepError::deferred(
        now + 5_000,
        "the shared limit of `test`: 1 call(s) already in flight",
    );
    let executor = Scripted::new().on("call", vec![Behaviour::Err(held, Duration::ZERO)]);
    let harness = Harness::new(executor);
    let state = harness.start(&compiled, json!({})).await;
    assert_eq!(
        state.status,
        RunStatus::Running,
        "parked, not failed, not finished"
    );
    assert_eq!(state.next_wakeup(), Some(now + 5_000));
    assert!(harness.events().iter().any(|e| matches!(
        e,
        RunEvent::StepDeferred { step, until, .. } if step == "call" && *until == now + 5_000
    )));
    // Advanced before the limit lets it go: nothing is called.
    let early = harness
        .runner
        .advance(
            &compiled,
            "run-1",
            &json!({}),
            &harness.events(),
            &runner::Secrets::default(),
            1,
        )
        .await
        .expect("advances");
    assert_eq!(early.status, RunStatus::Running);
    assert_eq!(harness.executor.calls_of("call").len(), 1);

    tokio::time::advance(Duration::from_secs(5)).await;
    let done = harness
        .runner
        .advance(
            &compiled,
            "run-1",
            &json!({}),
            &harness.events(),
            &runner::Secrets::default(),
            1,
        )
        .await
        .expect("advances");
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(harness.executor.calls_of("call").len(), 2);
    assert_eq!(done.step("call").map(|r| r.deferred_until), Some(None));
}

/// Keeps each journal write apart, to see what went together.
#[derive(Default)]
struct Writes(std::sync::Mutex<Vec<Vec<RunEvent>>>);

#[async_trait::async_trait]
impl runner::Journal for Writes {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        self.append_all(run_id, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, _run_id: &str, events: &[RunEvent]) -> Result<(), runner::Error> {
        self.0.lock().expect("writes").push(events.to_vec());
        Ok(())
    }
}

/// A plugin call is on the record (its step's start written) before it is made; a built-in
/// `core` answer leaves the process for nothing, so it costs no journal write of its own.
#[tokio::test]
async fn a_plugin_call_is_written_down_first_and_a_built_in_step_adds_no_write() {
    let compiled = playbook(
        r#"
name: shaped
trigger: { webhook: t, public: true }
steps:
  - { id: shape, uses: core/echo, with: { ip: "{{ trigger.ip }}" } }
  - { id: lookup, uses: test/act, needs: [shape], with: { ip: "{{ steps.shape.output.ip }}" } }
"#,
    );
    let writes = Arc::new(Writes::default());
    let executor = Scripted::new().on("lookup", vec![ok(json!({ "score": 3 }))]);
    let runner = runner::Runner::new(executor.clone(), writes.clone());
    let state = runner
        .start(
            &compiled,
            "run-1",
            json!({ "ip": "203.0.113.7" }),
            &secrets(&[]),
        )
        .await
        .expect("runs");
    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(executor.calls_of("lookup").len(), 1);

    let writes = writes.0.lock().expect("writes").clone();
    let started = |events: &[RunEvent], name: &str| {
        events
            .iter()
            .any(|e| matches!(e, RunEvent::StepStarted { step, .. } if step == name))
    };
    // The write before the call holds the built-in step whole and the lookup's start.
    let before_call = writes
        .iter()
        .position(|events| started(events, "lookup"))
        .expect("the lookup's start is written");
    assert!(started(&writes[before_call], "shape"), "{writes:#?}");
    assert!(
        writes[before_call]
            .iter()
            .any(|e| matches!(e, RunEvent::StepSucceeded { step, .. } if step == "shape")),
        "{writes:#?}"
    );
    assert!(
        !writes[..before_call]
            .iter()
            .any(|events| started(events, "shape")),
        "the built-in step had a write of its own: {writes:#?}"
    );
    assert_eq!(writes.len(), before_call + 2, "{writes:#?}");
}
