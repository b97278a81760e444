//! Approvals in Slack, against a loopback server that answers Slack's Web API as Slack does, and
//! interactions shaped and signed as Slack sends them: the request is posted with its buttons, a
//! mapped approver's press decides the step and updates the message, and forged, stale, unmapped
//! or unauthorised presses decide nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use runner::{Decision, RunEvent, RunStatus};
use serde_json::{Value, json};
use sha2::Sha256;
use test_support::apis::SLACK_TOKEN;

use crate::{Backend, Options, Server, run_id};

const SIGNING_SECRET: &str = "slack-signing-secret-for-tests-5e7a";
/// The `ts` the fake Slack gives the posted request.
const MESSAGE_TS: &str = "1795400000.000100";

const GATED: &str = r#"
name: slack-gate
trigger: { webhook: gate, auth: siem }
steps:
  - { id: enrich, uses: core/echo, timeout: 2s, with: { ip: "{{ trigger.ip }}" } }
  - id: block
    uses: core/echo
    needs: enrich
    timeout: 2s
    with: { blocked: "{{ trigger.ip }}" }
    approval:
      approvers: [soc]
      slack: C0SOC
      message: "Block {{ trigger.ip }} ({{ trigger.rule }})?"
"#;

/// A press of `action` by `user` on the request, as Slack posts it: form-encoded `payload`.
fn press(user: &str, action: &str, value: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": user.to_lowercase(), "team_id": "T0SOC" },
        "api_app_id": "A0RIPOSTE",
        "token": "deprecated-verification-token",
        "container": { "type": "message", "message_ts": MESSAGE_TS, "channel_id": "C0SOC", "is_ephemeral": false },
        "trigger_id": "1795400001.1.abcdef",
        "team": { "id": "T0SOC", "domain": "soc" },
        "channel": { "id": "C0SOC", "name": "soc" },
        "response_url": "https://hooks.slack.com/actions/T0SOC/1/not-followed",
        "actions": [{
            "action_id": action,
            "block_id": "riposte_approval",
            "text": { "type": "plain_text", "text": action },
            "value": value,
            "type": "button",
            "action_ts": "1795400001.000200",
        }],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form")
}

/// Slack's `v0` signature headers for `body`, sent at `at` (seconds), with `secret`.
fn signed(secret: &str, body: &str, at: u64) -> [(String, String); 3] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{at}:{body}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    [
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        ("x-slack-request-timestamp".into(), at.to_string()),
        ("x-slack-signature".into(), format!("v0={signature}")),
    ]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

impl Server {
    async fn interact(&self, headers: &[(String, String)], body: &str) -> u16 {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        self.request("POST", "/slack/interactions", &headers, Some(body))
            .await
            .0
    }
}

fn slack_calls(recorder: &test_support::Recorder, method: &str) -> Vec<Value> {
    recorder
        .all()
        .into_iter()
        .filter(|received| received.uri.ends_with(method))
        .map(|received| serde_json::from_str(&received.body).expect("JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_decides_in_slack_and_nobody_else_can() {
    let (slack, recorder) = test_support::serve(test_support::apis::slack()).await;
    let config = format!(
        "slack:\n  signing_secret_env: SLACK_SIGNING_SECRET\n  bot_token_env: SLACK_BOT_TOKEN\n  api_url: http://{slack}/api\n  users: {{ U0ONCALL: oncall, U0INTERN: intern, U0VIEWER: viewer }}\n"
    );
    let env = [
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET),
        ("SLACK_BOT_TOKEN", SLACK_TOKEN),
    ];
    let options = Options {
        config: &config,
        env: &env,
        ..Options::default()
    };
    let server = Server::open(Backend::Sqlite, &[("gate.yaml", GATED.into())], options).await;
    let alert = json!({ "ip": "203.0.113.77", "rule": "<!channel> brute force" });
    let (status, answer) = server.post_signed("gate", &alert.to_string(), &[]).await;
    assert_eq!(status, 202, "{answer}");
    let run = run_id(&answer);

    // The request, with its buttons, in the channel the step names.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let posted = loop {
        if let Some(posted) = slack_calls(&recorder, "chat.postMessage").pop() {
            break posted;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing posted");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(posted["channel"], "C0SOC");
    let text = posted["blocks"][0]["text"]["text"].as_str().expect("text");
    assert!(
        text.contains("Block 203.0.113.77 (&lt;!channel&gt; brute force)?"),
        "the alert cannot mention the channel: {text}"
    );
    let buttons = posted["blocks"][1]["elements"].as_array().expect("buttons");
    let actions: Vec<&str> = buttons
        .iter()
        .filter_map(|button| button["action_id"].as_str())
        .collect();
    assert_eq!(actions, ["approve", "deny"]);
    let value = buttons[0]["value"].as_str().expect("value").to_owned();
    assert_eq!(
        serde_json::from_str::<Value>(&value).expect("JSON"),
        json!({ "run": run, "step": "block" })
    );

    // Forged and stale presses are refused; unmapped, viewer and outsider presses decide nothing.
    let approve = press("U0ONCALL", "approve", &value);
    assert_eq!(
        server
            .interact(&signed("not-the-secret", &approve, now()), &approve)
            .await,
        401
    );
    assert_eq!(
        server
            .interact(&signed(SIGNING_SECRET, &approve, now() - 600), &approve)
            .await,
        401
    );
    let tampered = press("U0ONCALL", "approve", &value).replace("U0ONCALL", "U0INTERN");
    assert_eq!(
        server
            .interact(&signed(SIGNING_SECRET, &approve, now()), &tampered)
            .await,
        401,
        "the signature covers the body"
    );
    for user in ["U0NOBODY", "U0VIEWER", "U0INTERN"] {
        let body = press(user, "approve", &value);
        assert_eq!(
            server
                .interact(&signed(SIGNING_SECRET, &body, now()), &body)
                .await,
            200
        );
    }
    let told: Vec<Value> = slack_calls(&recorder, "chat.postEphemeral");
    let told_users: Vec<&str> = told.iter().filter_map(|m| m["user"].as_str()).collect();
    assert_eq!(told_users, ["U0NOBODY", "U0VIEWER", "U0INTERN"], "{told:?}");
    assert!(
        told[2]["text"]
            .as_str()
            .is_some_and(|text| text.contains("may be decided by soc")),
        "{told:?}"
    );
    let waiting = server.events(&run).await;
    assert!(
        !waiting
            .iter()
            .any(|event| matches!(event, RunEvent::ApprovalDecided { .. })),
        "nothing decided yet"
    );

    // The approver's press decides; the run finishes and the message shows who decided.
    assert_eq!(
        server
            .interact(&signed(SIGNING_SECRET, &approve, now()), &approve)
            .await,
        200
    );
    let state = server.finished(&run, Duration::from_secs(10)).await;
    assert_eq!(state.status, RunStatus::Succeeded);
    let decided = server
        .events(&run)
        .await
        .into_iter()
        .find_map(|event| match event {
            RunEvent::ApprovalDecided { decision, .. } => Some(decision),
            _ => None,
        });
    assert_eq!(
        decided,
        Some(Decision::Approved {
            by: "oncall".into(),
            comment: Some("in Slack (U0ONCALL)".into()),
        })
    );
    let updated = slack_calls(&recorder, "chat.update");
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(
        (&updated[0]["channel"], &updated[0]["ts"]),
        (&json!("C0SOC"), &json!(MESSAGE_TS))
    );
    assert!(
        updated[0]["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("Approved by oncall in Slack")),
        "{updated:?}"
    );
    let trail = server.store.trail_tail(20).await.expect("trail");
    assert!(
        trail
            .iter()
            .any(|record| record.event.contains("\"actor\":\"oncall\"")
                && record.event.contains("/slack/interactions (approve run")),
        "the decision's source is in the trail"
    );
}
