//! Approvals where people are: a step whose `approval.slack` names a channel is posted there with
//! Approve and Deny buttons, and the button presses come back to `POST /slack/interactions`.
//!
//! An interaction counts only if Slack signed it (the app's signing secret, the `v0` scheme, a
//! timestamp within five minutes) and the person who pressed is mapped (`slack.users`) to an API
//! token's name, whose role and groups decide as they do in the API and the console. Nothing in
//! an interaction's payload is fetched or followed (its `response_url` included): the message is
//! updated through the Web API at the configured address.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::config::SlackConfig;

/// How old a signed interaction may be: Slack's own advice, against replays.
const MAX_AGE_SECS: u64 = 5 * 60;

/// Talks to Slack's Web API for one configuration.
#[derive(Debug)]
pub struct Slack {
    config: SlackConfig,
    client: reqwest::Client,
}

/// Which run and step a button decides (its `value`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ButtonValue {
    pub run: String,
    pub step: String,
}

/// What an approval request shows.
#[derive(Debug)]
pub struct Request<'a> {
    pub channel: &'a str,
    pub run_id: &'a str,
    pub playbook: &'a str,
    pub step: &'a str,
    pub message: Option<&'a str>,
    pub approvers: &'a [String],
    /// Seconds since the epoch.
    pub deadline_secs: u64,
}

/// A button press, as Slack posts it (`block_actions`), with the fields used.
#[derive(Debug, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: SlackUser,
    #[serde(default)]
    pub actions: Vec<Action>,
    pub container: Option<Container>,
    pub channel: Option<Channel>,
}

#[derive(Debug, Deserialize)]
pub struct SlackUser {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct Action {
    pub action_id: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct Container {
    pub channel_id: Option<String>,
    pub message_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Channel {
    pub id: String,
}

impl Interaction {
    /// The channel and the message the buttons were on.
    pub fn message(&self) -> Option<(&str, &str)> {
        let container = self.container.as_ref()?;
        let channel = container
            .channel_id
            .as_deref()
            .or(self.channel.as_ref().map(|channel| channel.id.as_str()))?;
        Some((channel, container.message_ts.as_deref()?))
    }
}

impl Slack {
    pub fn new(config: SlackConfig) -> Slack {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Slack { config, client }
    }

    /// The API token name a Slack user decides as, if mapped.
    pub fn approver(&self, slack_user: &str) -> Option<&str> {
        self.config.users.get(slack_user).map(String::as_str)
    }

    /// Checks Slack's signature (`X-Slack-Signature: v0=<hex HMAC-SHA256 of
    /// "v0:<timestamp>:<body>">`) and the timestamp's age; says why not.
    pub fn verify(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now_secs: u64,
    ) -> Result<(), &'static str> {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let timestamp =
            header("x-slack-request-timestamp").ok_or("no X-Slack-Request-Timestamp header")?;
        let signature = header("x-slack-signature").ok_or("no X-Slack-Signature header")?;
        let sent: u64 = timestamp
            .parse()
            .map_err(|_| "X-Slack-Request-Timestamp is not a number")?;
        if now_secs.abs_diff(sent) > MAX_AGE_SECS {
            return Err("the request is more than five minutes old (or from the future)");
        }
        let given = signature
            .strip_prefix("v0=")
            .ok_or("X-Slack-Signature is not a v0 signature")?;
        let mut mac = Hmac::<Sha256>::new_from_slice(self.config.signing_secret.as_bytes())
            .map_err(|_| "the signing secret is unusable")?;
        mac.update(format!("v0:{timestamp}:").as_bytes());
        mac.update(body);
        let expected = data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes());
        match bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            true => Ok(()),
            false => Err("X-Slack-Signature does not match"),
        }
    }

    /// Posts an approval request with its buttons.
    pub async fn request_approval(&self, request: &Request<'_>) -> Result<(), String> {
        let value = serde_json::to_string(&ButtonValue {
            run: request.run_id.to_owned(),
            step: request.step.to_owned(),
        })
        .map_err(|error| error.to_string())?;
        let mut text = format!(
            "*Approval needed* for step `{}` of `{}` (run {})",
            escape(request.step),
            escape(request.playbook),
            escape(request.run_id)
        );
        if let Some(message) = request.message {
            text.push('\n');
            text.push_str(&escape(message));
        }
        text.push_str(&format!(
            "\nMay decide: {} · until <!date^{}^{{date_short_pretty}} {{time}}|the deadline>",
            escape(&request.approvers.join(", ")),
            request.deadline_secs
        ));
        let button = |action: &str, label: &str, style: &str| {
            json!({
                "type": "button",
                "action_id": action,
                "style": style,
                "text": { "type": "plain_text", "text": label },
                "value": value,
            })
        };
        let mut deny = button("deny", "Deny", "danger");
        deny["confirm"] = json!({
            "title": { "type": "plain_text", "text": "Deny this step?" },
            "text": { "type": "plain_text", "text": "It is skipped; the run goes on without it." },
            "confirm": { "type": "plain_text", "text": "Deny" },
            "deny": { "type": "plain_text", "text": "Cancel" },
        });
        self.call(
            "chat.postMessage",
            json!({
                "channel": request.channel,
                "text": format!("Approval needed for step {} of {}", request.step, request.playbook),
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                    {
                        "type": "actions",
                        "block_id": "riposte_approval",
                        "elements": [button("approve", "Approve", "primary"), deny],
                    },
                ],
            }),
        )
        .await
    }

    /// Replaces the request's buttons with its outcome.
    pub async fn settle(&self, channel: &str, ts: &str, outcome: &str) -> Result<(), String> {
        self.call(
            "chat.update",
            json!({
                "channel": channel,
                "ts": ts,
                "text": outcome,
                "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": escape(outcome) } }],
            }),
        )
        .await
    }

    /// Tells one person, in the channel, why their press did nothing.
    pub async fn tell(&self, channel: &str, user: &str, text: &str) -> Result<(), String> {
        self.call(
            "chat.postEphemeral",
            json!({ "channel": channel, "user": user, "text": text }),
        )
        .await
    }

    async fn call(&self, method: &str, body: Value) -> Result<(), String> {
        let response = self
            .client
            .post(format!("{}/{method}", self.config.api_url))
            .bearer_auth(&self.config.bot_token)
            .json(&body)
            .send()
            .await
            .map_err(|error| format!("Slack's {method} did not answer: {}", error.without_url()))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|_| format!("Slack's {method} answered {status} without JSON"))?;
        match answer["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(format!(
                "Slack's {method} refused: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            )),
        }
    }
}

/// Slack's mrkdwn escaping: without it an alert could mention `<!channel>` or hide a link.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack() -> Slack {
        Slack::new(SlackConfig {
            signing_secret: "8f742231b10e8888abcd99yyyzzz85a5".into(),
            bot_token: "xoxb-test".into(),
            api_url: "http://127.0.0.1:9/api".into(),
            users: Default::default(),
        })
    }

    #[test]
    fn slack_documented_example_signature_verifies() {
        // The example from Slack's "Verifying requests from Slack" page.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-slack-request-timestamp",
            "1531420618".parse().expect("header"),
        );
        headers.insert(
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
                .parse()
                .expect("header"),
        );
        let slack = slack();
        assert_eq!(
            slack.verify(&headers, body.as_bytes(), 1531420618 + 10),
            Ok(())
        );
        assert!(slack.verify(&headers, b"tampered", 1531420618).is_err());
        assert_eq!(
            slack.verify(&headers, body.as_bytes(), 1531420618 + 301),
            Err("the request is more than five minutes old (or from the future)")
        );
    }

    #[test]
    fn alert_text_cannot_mention_or_link() {
        assert_eq!(
            escape("<!channel> <https://evil.example|click> & co"),
            "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co"
        );
    }
}
