//! What a trigger makes of an event: its filter's verdict and its dedupe key.

use serde_json::json;

#[test]
fn the_trigger_screens_events_and_computes_the_dedupe_key() {
    let yaml = r#"
name: screen
trigger:
  webhook: t
  public: true
  filter: trigger.severity in ['high', 'critical']
  dedupe: { key: "{{ trigger.alert_id }}-{{ trigger.host }}", window: 10m }
vars: { unused: 1 }
steps:
  - { id: s, uses: test/act }
"#;
    let pb = playbook::compile(yaml).expect("valid");
    let high = pb
        .screen(&json!({"severity": "high", "alert_id": 7, "host": "web1"}))
        .expect("screens");
    assert!(high.matched);
    assert_eq!(high.dedupe_key.as_deref(), Some("7-web1"));
    let low = pb
        .screen(&json!({"severity": "low", "alert_id": 8, "host": "web1"}))
        .expect("screens");
    assert!(!low.matched);
    assert_eq!(low.dedupe_key, None);
    assert!(
        pb.screen(&json!({})).is_err(),
        "a missing field is an error, not a silent no"
    );
}

#[test]
fn a_batch_splits_into_items_each_screened_on_its_own() {
    let pb = playbook::compile(
        r#"
name: batch
trigger:
  webhook: am
  public: true
  split: "{{ trigger.alerts | map('combine', {'receiver': trigger.receiver}) | list }}"
  filter: trigger.labels.severity != 'info'
  dedupe: { key: "{{ trigger.fingerprint }}", window: 1h }
  resolved: trigger.status == 'resolved'
steps:
  - { id: s, uses: core/echo }
"#,
    )
    .expect("valid");
    let delivery = json!({
        "receiver": "soc",
        "alerts": [
            {"status": "firing", "fingerprint": "a1", "labels": {"severity": "critical"}},
            {"status": "resolved", "fingerprint": "b2", "labels": {"severity": "warning"}},
            {"status": "firing", "fingerprint": "c3", "labels": {"severity": "info"}},
        ],
    });
    let items = pb.split(&delivery).expect("splits");
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0]["receiver"], "soc",
        "`combine` copied the group's field"
    );
    let screened: Vec<_> = items
        .iter()
        .map(|item| pb.screen(item).expect("screens"))
        .map(|s| (s.matched, s.dedupe_key, s.resolved))
        .collect();
    assert_eq!(
        screened,
        [
            (true, Some("a1".to_owned()), false),
            (true, Some("b2".to_owned()), true),
            (false, None, false),
        ]
    );

    let plain = playbook::compile(
        "name: plain\ntrigger: { webhook: am, public: true, split: \"{{ trigger.alerts }}\" }\nsteps:\n  - { id: s, uses: core/echo }\n",
    )
    .expect("valid");
    for (delivery, words) in [
        (
            json!({"alerts": {"not": "a list"}}),
            "must yield a list, but it yielded a mapping",
        ),
        (
            json!({"alerts": vec![json!({}); playbook::MAX_SPLIT_ITEMS + 1]}),
            "at most 1000",
        ),
    ] {
        let error = plain.split(&delivery).expect_err("refused");
        assert!(error.to_string().contains(words), "{error}");
    }
}
