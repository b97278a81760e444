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
