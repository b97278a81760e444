//! What a playbook says about incident cases: the `case:` block (how its alerts group into a
//! case) and the phases of the incident-response lifecycle that steps declare (`phase:`).
//!
//! The words are NIST SP 800-61's phases and OCSF's observable types, so a case maps onto the
//! tools around it. What a case *is* (its record, how it folds) lives in the `cases` crate.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::Playbook;
use crate::template::Input;

/// Where an incident stands, in the order incidents move through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    DetectionAndAnalysis,
    Containment,
    Eradication,
    Recovery,
    PostIncidentReview,
    Closed,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::DetectionAndAnalysis,
        Phase::Containment,
        Phase::Eradication,
        Phase::Recovery,
        Phase::PostIncidentReview,
        Phase::Closed,
    ];

    /// The phases a step may belong to: closing a case is a person's decision.
    pub const OF_STEPS: [Phase; 5] = [
        Phase::DetectionAndAnalysis,
        Phase::Containment,
        Phase::Eradication,
        Phase::Recovery,
        Phase::PostIncidentReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::DetectionAndAnalysis => "detection_and_analysis",
            Phase::Containment => "containment",
            Phase::Eradication => "eradication",
            Phase::Recovery => "recovery",
            Phase::PostIncidentReview => "post_incident_review",
            Phase::Closed => "closed",
        }
    }

    /// The phase as people read it.
    pub fn title(self) -> &'static str {
        match self {
            Phase::DetectionAndAnalysis => "Detection and analysis",
            Phase::Containment => "Containment",
            Phase::Eradication => "Eradication",
            Phase::Recovery => "Recovery",
            Phase::PostIncidentReview => "Post-incident review",
            Phase::Closed => "Closed",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|phase| phase.as_str() == text)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == text)
    }

    /// A sender's word for a severity, read leniently: the names above in any case, and the
    /// words SIEMs use for them (`warning`, `info`, `error`, …).
    pub fn from_sender(text: &str) -> Option<Severity> {
        match text.trim().to_ascii_lowercase().as_str() {
            "critical" | "crit" | "emergency" | "alert" | "fatal" | "p1" => {
                Some(Severity::Critical)
            }
            "high" | "error" | "err" | "major" | "p2" => Some(Severity::High),
            "medium" | "moderate" | "warning" | "warn" | "minor" | "p3" => Some(Severity::Medium),
            "low" | "info" | "informational" | "notice" | "debug" | "p4" | "p5" => {
                Some(Severity::Low)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of observables a case collects, with OCSF's names and ids for them (the
/// `observable` object's `type_id`), so they map onto other tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObservableType {
    Hostname,
    IpAddress,
    MacAddress,
    UserName,
    EmailAddress,
    UrlString,
    FileName,
    Hash,
}

impl ObservableType {
    pub const ALL: [ObservableType; 8] = [
        ObservableType::Hostname,
        ObservableType::IpAddress,
        ObservableType::MacAddress,
        ObservableType::UserName,
        ObservableType::EmailAddress,
        ObservableType::UrlString,
        ObservableType::FileName,
        ObservableType::Hash,
    ];

    /// The name playbooks use (`ip_address`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObservableType::Hostname => "hostname",
            ObservableType::IpAddress => "ip_address",
            ObservableType::MacAddress => "mac_address",
            ObservableType::UserName => "user_name",
            ObservableType::EmailAddress => "email_address",
            ObservableType::UrlString => "url_string",
            ObservableType::FileName => "file_name",
            ObservableType::Hash => "hash",
        }
    }

    /// OCSF's name (`IP Address`).
    pub fn ocsf_name(self) -> &'static str {
        match self {
            ObservableType::Hostname => "Hostname",
            ObservableType::IpAddress => "IP Address",
            ObservableType::MacAddress => "MAC Address",
            ObservableType::UserName => "User Name",
            ObservableType::EmailAddress => "Email Address",
            ObservableType::UrlString => "URL String",
            ObservableType::FileName => "File Name",
            ObservableType::Hash => "Hash",
        }
    }

    /// OCSF's `type_id`.
    pub fn ocsf_id(self) -> u8 {
        match self {
            ObservableType::Hostname => 1,
            ObservableType::IpAddress => 2,
            ObservableType::MacAddress => 3,
            ObservableType::UserName => 4,
            ObservableType::EmailAddress => 5,
            ObservableType::UrlString => 6,
            ObservableType::FileName => 7,
            ObservableType::Hash => 8,
        }
    }

    pub fn parse(text: &str) -> Option<ObservableType> {
        ObservableType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text || kind.ocsf_name() == text)
    }
}

impl fmt::Display for ObservableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ocsf_name())
    }
}

/// A typed value seen in an incident: an address, a host, a hash. Serialized as OCSF's
/// observable object: `{"type": "IP Address", "type_id": 2, "value": "203.0.113.7"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Observable {
    pub kind: ObservableType,
    pub value: String,
}

impl Serialize for Observable {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut object = serializer.serialize_struct("Observable", 3)?;
        object.serialize_field("type", self.kind.ocsf_name())?;
        object.serialize_field("type_id", &self.kind.ocsf_id())?;
        object.serialize_field("value", &self.value)?;
        object.end()
    }
}

impl<'de> Deserialize<'de> for Observable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "type")]
            kind: String,
            value: String,
        }
        let wire = Wire::deserialize(deserializer)?;
        let kind = ObservableType::parse(&wire.kind).ok_or_else(|| {
            serde::de::Error::custom(format!("`{}` is not an observable type", wire.kind))
        })?;
        Ok(Observable {
            kind,
            value: wire.value,
        })
    }
}

/// The playbook's `case:` block: its runs open or join a case.
#[derive(Debug, Clone)]
pub struct CaseRule {
    /// Alerts whose key renders the same join the same open case while the window lasts.
    pub key: Input,
    /// How long after a case's last alert a new alert with its key still joins it.
    pub window: Duration,
    pub title: Option<Input>,
    /// `low`, `medium`, `high`, `critical`, or a template that renders a sender's word for one.
    pub severity: Option<Input>,
    /// Observables the event holds that extraction would not find, by type.
    pub observables: Vec<(ObservableType, Input)>,
    /// Observable types by which an alert joins an open case that has seen the same value.
    pub join_on: Vec<ObservableType>,
    /// Closing the case undoes what this playbook's runs still hold (their steps with `undo:`).
    pub undo_on_close: bool,
}

/// What the `case:` block makes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOpening {
    pub key: String,
    pub window: Duration,
    pub title: String,
    pub severity: Severity,
    pub observables: Vec<Observable>,
    pub join_on: Vec<ObservableType>,
}

impl Playbook {
    /// Renders the `case:` block for an event; `None` when the playbook opens no cases.
    pub fn case_opening(&self, event: &serde_json::Value) -> Result<Option<CaseOpening>, Error> {
        let Some(rule) = &self.case else {
            return Ok(None);
        };
        let context = self.trigger_context(event);
        let text = |input: &Input| -> Result<String, Error> {
            Ok(match input.render(&context)? {
                serde_json::Value::String(text) => text,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            })
        };
        let title = match &rule.title {
            Some(title) => text(title)?,
            None => self
                .description
                .clone()
                .unwrap_or_else(|| self.name.clone()),
        };
        let severity = match &rule.severity {
            Some(severity) => Severity::from_sender(&text(severity)?).unwrap_or(Severity::Medium),
            None => Severity::Medium,
        };
        let mut observables = Vec::new();
        for (kind, input) in &rule.observables {
            let values = match input.render(&context)? {
                serde_json::Value::Array(items) => items,
                one => vec![one],
            };
            observables.extend(values.into_iter().filter_map(|value| {
                let value = match value {
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Null => return None,
                    other => other.to_string(),
                };
                let value = value.trim();
                (!value.is_empty()).then(|| Observable {
                    kind: *kind,
                    value: value.to_owned(),
                })
            }));
        }
        Ok(Some(CaseOpening {
            key: text(&rule.key)?,
            window: rule.window,
            title: one_line(&title),
            severity,
            observables,
            join_on: rule.join_on.clone(),
        }))
    }
}

/// Titles longer than this are cut: a case title is a line in a list, not a document.
const MAX_TITLE_CHARS: usize = 200;

fn one_line(text: &str) -> String {
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_TITLE_CHARS)
        .collect();
    match line.is_empty() {
        true => "Untitled case".to_owned(),
        false => line,
    }
}
