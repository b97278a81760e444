//! Cases, paging and containment: TheHive 5, Jira Cloud, ServiceNow, PagerDuty Events v2,
//! CrowdSec, Cloudflare, Microsoft Defender for Endpoint.
//!
//! CrowdSec has no imitation here: its connector is tested against the real Local API
//! ([`crate::CrowdSec`]). Each server keeps what it was asked to create, so a test reads back
//! what it wrote, and answers with the shapes (and error shapes) of the reference it names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};

pub const THEHIVE_KEY: &str = "thehive-key-2f9c1e7a";
pub const JIRA_EMAIL: &str = "soc-bot@acme.example";
pub const JIRA_TOKEN: &str = "ATATT3xFfGF0-jira-token-5b7e";
pub const SERVICENOW_USER: &str = "riposte.integration";
pub const SERVICENOW_PASSWORD: &str = "sn-pass-91c4-Kq";
/// An Events API v2 integration key: 32 alphanumeric characters.
pub const PAGERDUTY_ROUTING_KEY: &str = "e93facc04764012d7bfb002500d5d1a6";
pub const CLOUDFLARE_TOKEN: &str = "cf-token-Sn3lZJTBX6kkg7OdcBUA";
pub const CLOUDFLARE_ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
pub const CLOUDFLARE_LIST: &str = "2c0fc9fa937b11eaa1b71c4d701ab86e";
/// An item the list holds from the start: a range that contains the tests' address.
pub const CLOUDFLARE_RANGE_ITEM: &str = "34b12448945f11eaa1b71c4d701ab86e";
pub const DEFENDER_TENANT: &str = "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9";
pub const DEFENDER_CLIENT_ID: &str = "0b7f9e4c-6a2d-4d1e-9c3b-5e8a7f6d4c21";
pub const DEFENDER_CLIENT_SECRET: &str = "dfe8Q~client.secret-Yv2";
pub const DEFENDER_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
/// The one device the Defender server knows.
pub const DEFENDER_MACHINE: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";

/// TheHive 5, API v1 (https://docs.strangebee.com/thehive/api-docs/): `POST /api/v1/alert`,
/// `POST /api/v1/case`, `POST /api/v1/case/{id}/observable` (answers the list it created),
/// `POST /api/v1/case/{id}/comment`. The API key is a bearer token; a wrong one is
/// `401 AuthenticationError`, a missing attribute `400 AttributeCheckingError`.
pub fn thehive() -> Router {
    Router::new()
        .route("/api/v1/alert", post(thehive_alert))
        .route("/api/v1/case", post(thehive_case))
        .route("/api/v1/case/{id}/observable", post(thehive_observable))
        .route("/api/v1/case/{id}/comment", post(thehive_comment))
        .with_state(Arc::new(TheHive::default()))
}

/// Jira Cloud platform REST API v3
/// (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/): create an
/// issue (project `SEC`, types `Task`, `Bug`, `Incident`), comment, list and do transitions
/// (`11` To Do, `21` In Progress, `31` Done). Basic auth with the account's email and API token;
/// rich text must be Atlassian Document Format. Errors are `ErrorCollection`s.
pub fn jira() -> Router {
    Router::new()
        .route("/rest/api/3/issue", post(jira_create))
        .route("/rest/api/3/issue/{key}/comment", post(jira_comment))
        .route(
            "/rest/api/3/issue/{key}/transitions",
            get(jira_transitions).post(jira_transition),
        )
        .with_state(Arc::new(Jira::default()))
}

/// ServiceNow Table API on `incident`
/// (https://www.servicenow.com/docs/bundle/washingtondc-api-reference/page/integrate/inbound-rest/concept/c_TableAPI.html):
/// `POST /api/now/table/incident` (201), `GET` and `PATCH /api/now/table/incident/{sys_id}`.
/// Basic auth; records in `{"result": …}` with every value a string, references as
/// `{link, value}` unless `sysparm_exclude_reference_link=true`; errors as
/// `{"error": {message, detail}, "status": "failure"}`.
pub fn servicenow() -> Router {
    Router::new()
        .route("/api/now/table/incident", post(servicenow_create))
        .route(
            "/api/now/table/incident/{sys_id}",
            get(servicenow_get).patch(servicenow_update),
        )
        .with_state(Arc::new(ServiceNow::default()))
}

/// PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/):
/// `POST /v2/enqueue` with the routing key in the body. Answers `202` with the `dedup_key`
/// (made up when a trigger has none), or `400 invalid event` with the problems: PagerDuty has
/// no `401`, a wrong routing key is an invalid event too. Every accepted event is kept.
pub fn pagerduty(events: Arc<Mutex<Vec<Value>>>) -> Router {
    Router::new()
        .route("/v2/enqueue", post(pagerduty_enqueue))
        .with_state(events)
}

/// Cloudflare API v4, account-level IP Lists
/// (https://developers.cloudflare.com/api/resources/rules/subresources/lists/): add items and
/// delete items by id (both asynchronous: they answer a bulk operation's id, which is `running`
/// the first time it is asked about and `completed` after), list items with `search`,
/// `per_page` and a cursor, the bulk operation's status. Bearer API token; errors in the v4
/// envelope (`success: false`, `errors: [{code, message}]`). The list starts with one item, the
/// range `185.220.101.0/24`.
pub fn cloudflare() -> Router {
    let lists = "/client/v4/accounts/{account}/rules/lists";
    Router::new()
        .route(
            &format!("{lists}/{{list}}/items"),
            get(cloudflare_items)
                .post(cloudflare_add)
                .delete(cloudflare_delete),
        )
        .route(
            &format!("{lists}/bulk_operations/{{operation}}"),
            get(cloudflare_operation),
        )
        .with_state(Arc::new(Cloudflare::seeded()))
}

/// Microsoft Defender for Endpoint API (https://learn.microsoft.com/en-us/defender-endpoint/api/)
/// and the Microsoft identity platform's token endpoint in front of it: client credentials at
/// `POST /{tenant}/oauth2/v2.0/token` (counted in `token_requests`), then `GET /api/machines/{id}`,
/// `POST /api/machines/{id}/isolate` and `/unisolate` (201 with the machine action) with the
/// token as a bearer. Identity-platform errors are OAuth 2.0 ones (`invalid_client` with 401),
/// the API's are `{"error": {code, message, target}}`.
pub fn defender(token_requests: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(defender_token))
        .route("/api/machines/{id}", get(defender_machine))
        .route("/api/machines/{id}/{action}", post(defender_action))
        .with_state(Arc::new(Defender {
            token_requests,
            tokens: Mutex::default(),
            isolated: Mutex::default(),
        }))
}

// TheHive

#[derive(Default)]
struct TheHive {
    /// Case ids.
    cases: Mutex<Vec<String>>,
    /// `(type, source, sourceRef)` of every alert: TheHive refuses a second one.
    alerts: Mutex<Vec<(String, String, String)>>,
    next_id: AtomicUsize,
}

impl TheHive {
    fn id(&self) -> String {
        format!(
            "~{}",
            40_960 + 8 * self.next_id.fetch_add(1, Ordering::SeqCst)
        )
    }
}

const CREATED_AT: u64 = 1_795_400_000_000;
/// The user the API key belongs to.
const THEHIVE_USER: &str = "riposte@soc.acme.example";

fn thehive_auth(headers: &HeaderMap) -> Option<Response> {
    if bearer_is(headers, THEHIVE_KEY) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"type": "AuthenticationError", "message": "Authentication failure"})),
        )
            .into_response(),
    )
}

fn thehive_bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"type": "AttributeCheckingError", "message": message.into()})),
    )
        .into_response()
}

/// The attributes TheHive requires, with the missing one named as TheHive names it.
fn thehive_required(body: &Value, strings: &[&str]) -> Option<Response> {
    for name in strings {
        if !body[*name].is_string() {
            return Some(thehive_bad(format!("[MissingAttributeError({name})]")));
        }
    }
    for (name, max) in [("severity", 4), ("tlp", 4), ("pap", 3)] {
        match &body[name] {
            Value::Null => {}
            Value::Number(n)
                if n.as_u64()
                    .is_some_and(|n| (1..=max).contains(&n) || (name != "severity" && n == 0)) => {}
            other => {
                return Some(thehive_bad(format!(
                    "[InvalidFormatAttributeError({name},{other})]"
                )));
            }
        }
    }
    if !matches!(body["tags"], Value::Null | Value::Array(_)) {
        return Some(thehive_bad("[InvalidFormatAttributeError(tags)]"));
    }
    None
}

fn severity_label(level: &Value) -> &'static str {
    match level.as_u64() {
        Some(1) => "LOW",
        Some(3) => "HIGH",
        Some(4) => "CRITICAL",
        _ => "MEDIUM",
    }
}

fn tlp_label(level: &Value) -> &'static str {
    match level.as_u64() {
        Some(0) => "CLEAR",
        Some(1) => "GREEN",
        Some(3) => "RED",
        Some(4) => "AMBER+STRICT",
        _ => "AMBER",
    }
}

async fn thehive_alert(
    State(hive): State<Arc<TheHive>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = thehive_auth(&headers) {
        return refused;
    }
    let Ok(Json(body)) = body else {
        return thehive_bad("Invalid json");
    };
    if let Some(refused) = thehive_required(
        &body,
        &["type", "source", "sourceRef", "title", "description"],
    ) {
        return refused;
    }
    let observables = match &body["observables"] {
        Value::Null => Vec::new(),
        Value::Array(list)
            if list
                .iter()
                .all(|o| o["dataType"].is_string() && o["data"].is_string()) =>
        {
            list.clone()
        }
        _ => return thehive_bad("[InvalidFormatAttributeError(observables)]"),
    };
    let key = (
        body["type"].as_str().unwrap_or_default().to_owned(),
        body["source"].as_str().unwrap_or_default().to_owned(),
        body["sourceRef"].as_str().unwrap_or_default().to_owned(),
    );
    {
        let mut alerts = hive.alerts.lock().unwrap_or_else(PoisonError::into_inner);
        if alerts.contains(&key) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"type": "CreateError", "message": format!("Alert {}:{}:{} already exists", key.0, key.1, key.2)})),
            )
                .into_response();
        }
        alerts.push(key);
    }
    let severity = body.get("severity").cloned().unwrap_or(json!(2));
    let tlp = body.get("tlp").cloned().unwrap_or(json!(2));
    let pap = body.get("pap").cloned().unwrap_or(json!(2));
    (
        StatusCode::CREATED,
        Json(json!({
            "_id": hive.id(), "_type": "Alert", "_createdBy": THEHIVE_USER, "_createdAt": CREATED_AT,
            "type": body["type"], "source": body["source"], "sourceRef": body["sourceRef"],
            "externalLink": null, "title": body["title"], "description": body["description"],
            "severity": severity, "severityLabel": severity_label(&severity), "date": CREATED_AT,
            "tags": body.get("tags").cloned().unwrap_or(json!([])),
            "tlp": tlp, "tlpLabel": tlp_label(&tlp), "pap": pap, "papLabel": tlp_label(&pap),
            "follow": true, "customFields": [], "observableCount": observables.len(),
            "status": "New", "stage": "New", "extraData": {}, "newDate": CREATED_AT, "timeToDetect": 0
        })),
    )
        .into_response()
}

async fn thehive_case(
    State(hive): State<Arc<TheHive>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = thehive_auth(&headers) {
        return refused;
    }
    let Ok(Json(body)) = body else {
        return thehive_bad("Invalid json");
    };
    if let Some(refused) = thehive_required(&body, &["title", "description"]) {
        return refused;
    }
    let id = hive.id();
    let number = {
        let mut cases = hive.cases.lock().unwrap_or_else(PoisonError::into_inner);
        cases.push(id.clone());
        41 + cases.len()
    };
    let severity = body.get("severity").cloned().unwrap_or(json!(2));
    let tlp = body.get("tlp").cloned().unwrap_or(json!(2));
    let pap = body.get("pap").cloned().unwrap_or(json!(2));
    (
        StatusCode::CREATED,
        Json(json!({
            "_id": id, "_type": "Case", "_createdBy": THEHIVE_USER, "_createdAt": CREATED_AT,
            "number": number, "title": body["title"], "description": body["description"],
            "severity": severity, "severityLabel": severity_label(&severity), "startDate": CREATED_AT,
            "tags": body.get("tags").cloned().unwrap_or(json!([])),
            "flag": body.get("flag").cloned().unwrap_or(json!(false)),
            "tlp": tlp, "tlpLabel": tlp_label(&tlp), "pap": pap, "papLabel": tlp_label(&pap),
            "status": "New", "stage": "New", "assignee": THEHIVE_USER, "customFields": [],
            "userPermissions": ["manageCase/create", "manageObservable", "manageComment"],
            "extraData": {}, "newDate": CREATED_AT, "timeToDetect": 0
        })),
    )
        .into_response()
}

fn thehive_case_known(hive: &TheHive, id: &str) -> Option<Response> {
    let cases = hive.cases.lock().unwrap_or_else(PoisonError::into_inner);
    if cases.iter().any(|case| case == id) {
        return None;
    }
    Some(
        (
            StatusCode::NOT_FOUND,
            Json(json!({"type": "NotFoundError", "message": format!("Case {id} not found")})),
        )
            .into_response(),
    )
}

async fn thehive_observable(
    State(hive): State<Arc<TheHive>>,
    headers: HeaderMap,
    Path(case): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = thehive_auth(&headers) {
        return refused;
    }
    if let Some(missing) = thehive_case_known(&hive, &case) {
        return missing;
    }
    let Ok(Json(body)) = body else {
        return thehive_bad("Invalid json");
    };
    if let Some(refused) = thehive_required(&body, &["dataType"]) {
        return refused;
    }
    // `data` is one value or a list of values: one observable each.
    let values: Vec<Value> = match &body["data"] {
        Value::String(one) => vec![json!(one)],
        Value::Array(many) if !many.is_empty() && many.iter().all(Value::is_string) => many.clone(),
        _ => return thehive_bad("[MissingAttributeError(data)]"),
    };
    let tlp = body.get("tlp").cloned().unwrap_or(json!(2));
    let created: Vec<Value> = values
        .into_iter()
        .map(|data| {
            json!({
                "_id": hive.id(), "_type": "Observable", "_createdBy": THEHIVE_USER,
                "_createdAt": CREATED_AT, "dataType": body["dataType"], "data": data,
                "startDate": CREATED_AT, "tlp": tlp, "tlpLabel": tlp_label(&tlp), "pap": 2,
                "papLabel": "AMBER", "tags": body.get("tags").cloned().unwrap_or(json!([])),
                "ioc": body.get("ioc").cloned().unwrap_or(json!(false)),
                "sighted": body.get("sighted").cloned().unwrap_or(json!(false)),
                "message": body.get("message").cloned().unwrap_or(Value::Null),
                "reports": {}, "extraData": {}, "ignoreSimilarity": false
            })
        })
        .collect();
    (StatusCode::CREATED, Json(Value::Array(created))).into_response()
}

async fn thehive_comment(
    State(hive): State<Arc<TheHive>>,
    headers: HeaderMap,
    Path(case): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = thehive_auth(&headers) {
        return refused;
    }
    if let Some(missing) = thehive_case_known(&hive, &case) {
        return missing;
    }
    let Ok(Json(body)) = body else {
        return thehive_bad("Invalid json");
    };
    if let Some(refused) = thehive_required(&body, &["message"]) {
        return refused;
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "_id": hive.id(), "_type": "Comment", "createdBy": THEHIVE_USER, "createdAt": CREATED_AT,
            "message": body["message"], "isEdited": false, "extraData": {}
        })),
    )
        .into_response()
}

// Jira

#[derive(Default)]
struct Jira {
    /// Issue keys, in order of creation.
    issues: Mutex<Vec<String>>,
}

const JIRA_TRANSITIONS: [(&str, &str); 3] =
    [("11", "To Do"), ("21", "In Progress"), ("31", "Done")];

fn jira_errors(status: StatusCode, messages: &[&str], errors: Value) -> Response {
    (
        status,
        Json(json!({"errorMessages": messages, "errors": errors})),
    )
        .into_response()
}

fn jira_auth(headers: &HeaderMap) -> Option<Response> {
    if basic_is(headers, JIRA_EMAIL, JIRA_TOKEN) {
        return None;
    }
    Some(jira_errors(
        StatusCode::UNAUTHORIZED,
        &["You are not authenticated. Authentication required to perform this operation."],
        json!({}),
    ))
}

fn jira_issue_known(jira: &Jira, key: &str) -> Option<Response> {
    let issues = jira.issues.lock().unwrap_or_else(PoisonError::into_inner);
    if issues.iter().any(|issue| issue == key) {
        return None;
    }
    Some(jira_errors(
        StatusCode::NOT_FOUND,
        &["Issue does not exist or you do not have permission to see it."],
        json!({}),
    ))
}

/// An Atlassian Document Format document of paragraphs of text: the nodes the connector writes.
/// A text node must hold some text.
fn is_adf(document: &Value) -> bool {
    document["type"] == "doc"
        && document["version"] == 1
        && document["content"].as_array().is_some_and(|blocks| {
            blocks.iter().all(|block| {
                block["type"] == "paragraph"
                    && block["content"].as_array().is_some_and(|inline| {
                        inline.iter().all(|node| {
                            node["type"] == "text"
                                && node["text"].as_str().is_some_and(|text| !text.is_empty())
                        })
                    })
            })
        })
}

async fn jira_create(
    State(jira): State<Arc<Jira>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = jira_auth(&headers) {
        return refused;
    }
    let Ok(Json(body)) = body else {
        return jira_errors(
            StatusCode::BAD_REQUEST,
            &["Unexpected character: was expecting a JSON value"],
            json!({}),
        );
    };
    let fields = &body["fields"];
    let mut errors = serde_json::Map::new();
    if fields["project"]["key"] != "SEC" {
        errors.insert("project".into(), json!("valid project is required"));
    }
    if fields["summary"].as_str().is_none_or(str::is_empty) {
        errors.insert(
            "summary".into(),
            json!("You must specify a summary of the issue."),
        );
    }
    if !matches!(
        fields["issuetype"]["name"].as_str(),
        Some("Task" | "Bug" | "Incident")
    ) {
        errors.insert("issuetype".into(), json!("valid issue type is required"));
    }
    if !fields["description"].is_null() && !is_adf(&fields["description"]) {
        errors.insert(
            "description".into(),
            json!(
                "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
            ),
        );
    }
    let labels_ok = match &fields["labels"] {
        Value::Null => true,
        Value::Array(labels) => labels.iter().all(|l| {
            l.as_str()
                .is_some_and(|l| !l.is_empty() && !l.contains(' '))
        }),
        _ => false,
    };
    if !labels_ok {
        errors.insert("labels".into(), json!("The label must not contain spaces."));
    }
    if !errors.is_empty() {
        return jira_errors(StatusCode::BAD_REQUEST, &[], Value::Object(errors));
    }
    let (id, key) = {
        let mut issues = jira.issues.lock().unwrap_or_else(PoisonError::into_inner);
        let number = 42 + issues.len();
        let key = format!("SEC-{number}");
        issues.push(key.clone());
        (10_000 + number, key)
    };
    (
        StatusCode::CREATED,
        Json(json!({
            "id": id.to_string(), "key": key,
            "self": format!("http://{}/rest/api/3/issue/{id}", host_of(&headers))
        })),
    )
        .into_response()
}

async fn jira_comment(
    State(jira): State<Arc<Jira>>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = jira_auth(&headers) {
        return refused;
    }
    if let Some(missing) = jira_issue_known(&jira, &key) {
        return missing;
    }
    let Ok(Json(body)) = body else {
        return jira_errors(
            StatusCode::BAD_REQUEST,
            &["Unexpected character: was expecting a JSON value"],
            json!({}),
        );
    };
    if !is_adf(&body["body"]) {
        return jira_errors(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"comment": "Comment body is not valid Atlassian Document Format"}),
        );
    }
    let author =
        json!({"accountId": "5b10a2844c20165700ede21g", "displayName": "SOC bot", "active": true});
    (
        StatusCode::CREATED,
        Json(json!({
            "self": format!("http://{}/rest/api/3/issue/{key}/comment/10100", host_of(&headers)),
            "id": "10100", "author": author, "body": body["body"], "updateAuthor": author,
            "created": "2026-11-22T21:14:02.000+0000", "updated": "2026-11-22T21:14:02.000+0000",
            "jsdPublic": true
        })),
    )
        .into_response()
}

async fn jira_transitions(
    State(jira): State<Arc<Jira>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    if let Some(refused) = jira_auth(&headers) {
        return refused;
    }
    if let Some(missing) = jira_issue_known(&jira, &key) {
        return missing;
    }
    let transitions: Vec<Value> = JIRA_TRANSITIONS
        .iter()
        .enumerate()
        .map(|(i, (id, name))| {
            json!({
                "id": id, "name": name,
                "to": {"name": name, "id": (10_000 + i).to_string(), "statusCategory": {"key": if i == 2 { "done" } else { "indeterminate" }}},
                "hasScreen": false, "isGlobal": true, "isInitial": false, "isAvailable": true,
                "isConditional": false, "isLooped": false
            })
        })
        .collect();
    Json(json!({"expand": "transitions", "transitions": transitions})).into_response()
}

async fn jira_transition(
    State(jira): State<Arc<Jira>>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = jira_auth(&headers) {
        return refused;
    }
    if let Some(missing) = jira_issue_known(&jira, &key) {
        return missing;
    }
    let id = body
        .ok()
        .and_then(|Json(body)| body["transition"]["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if !JIRA_TRANSITIONS.iter().any(|(known, _)| *known == id) {
        return jira_errors(
            StatusCode::BAD_REQUEST,
            &[&format!(
                "Transition id '{id}' is not valid for this issue."
            )],
            json!({}),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

// ServiceNow

#[derive(Default)]
struct ServiceNow {
    incidents: Mutex<HashMap<String, Value>>,
}

const REFERENCE_FIELDS: [&str; 4] = ["assignment_group", "assigned_to", "caller_id", "opened_by"];

fn servicenow_error(status: StatusCode, message: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "detail": detail}, "status": "failure"})),
    )
        .into_response()
}

fn servicenow_auth(headers: &HeaderMap) -> Option<Response> {
    if basic_is(headers, SERVICENOW_USER, SERVICENOW_PASSWORD) {
        return None;
    }
    Some(servicenow_error(
        StatusCode::UNAUTHORIZED,
        "User Not Authenticated",
        "Required to provide Auth information",
    ))
}

/// A record as the Table API shows it: references as `{link, value}` unless the caller asked
/// for plain values.
fn servicenow_shown(record: &Value, query: &HashMap<String, String>, host: &str) -> Value {
    let plain = query
        .get("sysparm_exclude_reference_link")
        .is_some_and(|v| v == "true");
    let mut shown = record.clone();
    if !plain && let Value::Object(fields) = &mut shown {
        for name in REFERENCE_FIELDS {
            if let Some(Value::String(id)) = fields.get(name)
                && !id.is_empty()
            {
                let id = id.clone();
                fields.insert(
                    name.into(),
                    json!({"link": format!("http://{host}/api/now/table/sys_user/{id}"), "value": id}),
                );
            }
        }
    }
    json!({ "result": shown })
}

/// The body's fields as the Table API stores them: every value a string.
fn servicenow_fields(
    body: Result<Json<Value>, JsonRejection>,
) -> Result<serde_json::Map<String, Value>, Box<Response>> {
    let not_json = || {
        servicenow_error(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            "The payload is not valid JSON.",
        )
    };
    let Ok(Json(Value::Object(body))) = body else {
        return Err(Box::new(not_json()));
    };
    body.into_iter()
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name, Value::String(text))),
            Value::Number(n) => Ok((name, Value::String(n.to_string()))),
            Value::Bool(b) => Ok((name, Value::String(b.to_string()))),
            _ => Err(Box::new(servicenow_error(
                StatusCode::BAD_REQUEST,
                "Exception while reading request",
                &format!("The value of `{name}` is not a field value"),
            ))),
        })
        .collect()
}

async fn servicenow_create(
    State(now): State<Arc<ServiceNow>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = servicenow_auth(&headers) {
        return refused;
    }
    let fields = match servicenow_fields(body) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let mut incidents = now.incidents.lock().unwrap_or_else(PoisonError::into_inner);
    let number = 10_042 + incidents.len();
    let sys_id = format!("9d385017c611228701d22104cc95{number:04x}");
    let mut record = json!({
        "sys_id": sys_id, "number": format!("INC{number:07}"), "state": "1", "active": "true",
        "urgency": "3", "impact": "3", "priority": "5", "short_description": "", "description": "",
        "category": "inquiry", "assignment_group": "", "assigned_to": "", "caller_id": "",
        "opened_by": "6816f79cc0a8016401c5a33be04be441", "close_code": "", "close_notes": "",
        "sys_created_on": "2026-11-22 21:14:02", "sys_updated_on": "2026-11-22 21:14:02",
        "sys_mod_count": "0"
    });
    if let Value::Object(stored) = &mut record {
        stored.extend(fields);
        let level = |name: &str| {
            stored[name]
                .as_str()
                .and_then(|v| v.parse::<u8>().ok())
                .unwrap_or(3)
        };
        let priority = (level("urgency") + level("impact"))
            .saturating_sub(1)
            .clamp(1, 5);
        stored.insert("priority".into(), json!(priority.to_string()));
    }
    incidents.insert(sys_id, record.clone());
    (
        StatusCode::CREATED,
        Json(servicenow_shown(&record, &query, &host_of(&headers))),
    )
        .into_response()
}

fn servicenow_missing() -> Response {
    servicenow_error(
        StatusCode::NOT_FOUND,
        "No Record found",
        "Record doesn't exist or ACL restricts the record retrieval",
    )
}

async fn servicenow_get(
    State(now): State<Arc<ServiceNow>>,
    headers: HeaderMap,
    Path(sys_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = servicenow_auth(&headers) {
        return refused;
    }
    let incidents = now.incidents.lock().unwrap_or_else(PoisonError::into_inner);
    match incidents.get(&sys_id) {
        Some(record) => Json(servicenow_shown(record, &query, &host_of(&headers))).into_response(),
        None => servicenow_missing(),
    }
}

async fn servicenow_update(
    State(now): State<Arc<ServiceNow>>,
    headers: HeaderMap,
    Path(sys_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = servicenow_auth(&headers) {
        return refused;
    }
    let fields = match servicenow_fields(body) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let mut incidents = now.incidents.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(Value::Object(record)) = incidents.get_mut(&sys_id) else {
        return servicenow_missing();
    };
    // Work notes and comments are journal fields: they are added to the activity, not kept.
    let journal: Vec<String> = ["work_notes", "comments"]
        .into_iter()
        .filter(|name| fields.contains_key(*name))
        .map(str::to_owned)
        .collect();
    record.extend(fields);
    for name in journal {
        record.insert(name, json!(""));
    }
    if matches!(record["state"].as_str(), Some("6" | "7")) {
        record.insert("active".into(), json!("false"));
    }
    let count = record["sys_mod_count"]
        .as_str()
        .and_then(|c| c.parse::<u32>().ok())
        .unwrap_or(0);
    record.insert("sys_mod_count".into(), json!((count + 1).to_string()));
    record.insert("sys_updated_on".into(), json!("2026-11-22 21:20:40"));
    let record = Value::Object(record.clone());
    Json(servicenow_shown(&record, &query, &host_of(&headers))).into_response()
}

// PagerDuty

async fn pagerduty_enqueue(
    State(events): State<Arc<Mutex<Vec<Value>>>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let invalid = |errors: Vec<String>| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})),
        )
            .into_response()
    };
    let Ok(Json(event)) = body else {
        return invalid(vec!["Event object is not valid JSON".into()]);
    };
    let mut errors = Vec::new();
    match event["routing_key"].as_str() {
        Some(key) if key.len() != 32 => {
            errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into());
        }
        Some(key) if key != PAGERDUTY_ROUTING_KEY => errors.push("Invalid routing key".into()),
        Some(_) => {}
        None => errors.push("'routing_key' is missing or blank".into()),
    }
    let action = event["event_action"].as_str().unwrap_or_default();
    if !matches!(action, "trigger" | "acknowledge" | "resolve") {
        errors.push(
            "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)".into(),
        );
    }
    let dedup_key = event["dedup_key"].as_str().map(str::to_owned);
    if dedup_key.as_ref().is_some_and(|key| key.len() > 255) {
        errors.push("'dedup_key' is too long (must be at most 255 characters)".into());
    }
    if action == "trigger" {
        let payload = &event["payload"];
        for field in ["summary", "source"] {
            if payload[field].as_str().is_none_or(str::is_empty) {
                errors.push(format!("'payload.{field}' is missing or blank"));
            }
        }
        if !matches!(
            payload["severity"].as_str(),
            Some("critical" | "error" | "warning" | "info")
        ) {
            errors.push(
                "'payload.severity' is invalid (must be one of: critical, error, warning, info)"
                    .into(),
            );
        }
    } else if dedup_key.is_none() {
        errors.push(format!("'dedup_key' is required for '{action}' events"));
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    let dedup_key = dedup_key.unwrap_or_else(|| "f1a9c5e6b3d24c7d9a8e2b1c0d3f4e5a".into());
    events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(event);
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key})),
    )
        .into_response()
}

// Cloudflare

struct Cloudflare {
    /// `(id, ip, comment)`, in the order added.
    items: Mutex<Vec<(String, String, String)>>,
    /// Bulk operations, with how often each was asked about.
    operations: Mutex<HashMap<String, usize>>,
    next_id: AtomicUsize,
}

impl Cloudflare {
    fn seeded() -> Cloudflare {
        Cloudflare {
            items: Mutex::new(vec![(
                CLOUDFLARE_RANGE_ITEM.into(),
                "185.220.101.0/24".into(),
                "Tor exit relays (added by hand)".into(),
            )]),
            operations: Mutex::default(),
            next_id: AtomicUsize::new(1),
        }
    }

    /// A fresh 32-hexadecimal-digit id.
    fn id(&self) -> String {
        format!(
            "7c5dae5552338874e5053f2534d2767{:x}",
            self.next_id.fetch_add(1, Ordering::SeqCst) % 16
        )
    }

    fn operation(&self) -> Value {
        let id = format!(
            "4da8780eeb215e6cb7f48dd981c4ea0{:x}",
            self.next_id.fetch_add(1, Ordering::SeqCst) % 16
        );
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), 0);
        cloudflare_ok(json!({ "operation_id": id }))
    }
}

fn cloudflare_ok(result: Value) -> Value {
    json!({"success": true, "errors": [], "messages": [], "result": result})
}

fn cloudflare_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})),
    )
        .into_response()
}

fn cloudflare_check(headers: &HeaderMap, account: &str, list: Option<&str>) -> Option<Response> {
    if !bearer_is(headers, CLOUDFLARE_TOKEN) {
        return Some(cloudflare_error(
            StatusCode::FORBIDDEN,
            10000,
            "Authentication error",
        ));
    }
    if account != CLOUDFLARE_ACCOUNT || list.is_some_and(|list| list != CLOUDFLARE_LIST) {
        return Some(cloudflare_error(
            StatusCode::NOT_FOUND,
            10006,
            "list not found",
        ));
    }
    None
}

/// `ip` written as an IPv4 or IPv6 address, or a range Lists accept (/8 to /32, /12 to /128).
fn list_ip(text: &str) -> bool {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, prefix.parse::<u8>().ok()),
        None => (text, None),
    };
    match (address.parse::<std::net::IpAddr>(), prefix) {
        (Ok(_), None) => !text.contains('/'),
        (Ok(std::net::IpAddr::V4(_)), Some(p)) => (8..=32).contains(&p),
        (Ok(std::net::IpAddr::V6(_)), Some(p)) => (12..=128).contains(&p),
        _ => false,
    }
}

/// Whether the item (an address or an IPv4 range) holds `search`, as Lists' search does.
fn item_holds(item: &str, search: &str) -> bool {
    if item == search {
        return true;
    }
    let (Some((network, prefix)), Ok(address)) =
        (item.split_once('/'), search.parse::<std::net::Ipv4Addr>())
    else {
        return false;
    };
    let (Ok(network), Ok(prefix)) = (network.parse::<std::net::Ipv4Addr>(), prefix.parse::<u32>())
    else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(network) & mask == u32::from(address) & mask
}

async fn cloudflare_add(
    State(flare): State<Arc<Cloudflare>>,
    headers: HeaderMap,
    Path((account, list)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = cloudflare_check(&headers, &account, Some(&list)) {
        return refused;
    }
    let Ok(Json(Value::Array(new))) = body else {
        return cloudflare_error(
            StatusCode::BAD_REQUEST,
            10026,
            "the body must be a list of items",
        );
    };
    let mut added = Vec::new();
    for item in &new {
        let ip = item["ip"].as_str().unwrap_or_default();
        if !list_ip(ip) {
            return cloudflare_error(
                StatusCode::BAD_REQUEST,
                10026,
                &format!("`{ip}` is not a valid IP address or range for an IP list"),
            );
        }
        let comment = item["comment"].as_str().unwrap_or_default().to_owned();
        added.push((flare.id(), ip.to_owned(), comment));
    }
    flare
        .items
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(added);
    Json(flare.operation()).into_response()
}

async fn cloudflare_items(
    State(flare): State<Arc<Cloudflare>>,
    headers: HeaderMap,
    Path((account, list)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = cloudflare_check(&headers, &account, Some(&list)) {
        return refused;
    }
    let per_page = match query.get("per_page").map(|p| p.parse::<usize>()) {
        None => 25,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => {
            return cloudflare_error(
                StatusCode::BAD_REQUEST,
                10026,
                "per_page must be between 1 and 500",
            );
        }
    };
    let start = match query.get("cursor").map(|c| {
        c.strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
    }) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return cloudflare_error(StatusCode::BAD_REQUEST, 10026, "invalid cursor"),
    };
    let items = flare.items.lock().unwrap_or_else(PoisonError::into_inner);
    let found: Vec<Value> = items
        .iter()
        .filter(|(_, ip, _)| {
            query
                .get("search")
                .is_none_or(|search| item_holds(ip, search))
        })
        .map(|(id, ip, comment)| {
            json!({"id": id, "ip": ip, "comment": comment,
                   "created_on": "2026-11-22T21:14:02Z", "modified_on": "2026-11-22T21:14:02Z"})
        })
        .collect();
    let page: Vec<Value> = found.iter().skip(start).take(per_page).cloned().collect();
    let mut answer = cloudflare_ok(Value::Array(page));
    if start + per_page < found.len() {
        answer["result_info"] = json!({"cursors": {"after": format!("page-{}", start + per_page)}});
    } else {
        answer["result_info"] = json!({"cursors": {}});
    }
    Json(answer).into_response()
}

async fn cloudflare_delete(
    State(flare): State<Arc<Cloudflare>>,
    headers: HeaderMap,
    Path((account, list)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = cloudflare_check(&headers, &account, Some(&list)) {
        return refused;
    }
    let ids: Option<Vec<String>> = body.ok().and_then(|Json(body)| {
        body["items"].as_array().map(|items| {
            items
                .iter()
                .filter_map(|item| item["id"].as_str().map(str::to_owned))
                .collect()
        })
    });
    let Some(ids) = ids.filter(|ids| !ids.is_empty()) else {
        return cloudflare_error(
            StatusCode::BAD_REQUEST,
            10026,
            "items: a list of {\"id\": …} is required",
        );
    };
    flare
        .items
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|(id, _, _)| !ids.contains(id));
    Json(flare.operation()).into_response()
}

async fn cloudflare_operation(
    State(flare): State<Arc<Cloudflare>>,
    headers: HeaderMap,
    Path((account, operation)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = cloudflare_check(&headers, &account, None) {
        return refused;
    }
    let mut operations = flare
        .operations
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(asked) = operations.get_mut(&operation) else {
        return cloudflare_error(StatusCode::NOT_FOUND, 10006, "bulk operation not found");
    };
    *asked += 1;
    let result = if *asked == 1 {
        json!({"id": operation, "status": "running"})
    } else {
        json!({"id": operation, "status": "completed", "completed": "2026-11-22T21:14:03Z"})
    };
    Json(cloudflare_ok(result)).into_response()
}

// Defender for Endpoint

struct Defender {
    token_requests: Arc<AtomicUsize>,
    /// Access tokens issued.
    tokens: Mutex<Vec<String>>,
    isolated: Mutex<bool>,
}

fn identity_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code], "timestamp": "2026-11-22 21:14:02Z",
            "trace_id": "0b7a1c1e-8f2d-4c3b-9e6a-2d5f4c3b2a10",
            "correlation_id": "5e2d1c0b-9a8f-4e7d-b6c5-a4b3c2d1e0f9",
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}")
        })),
    )
        .into_response()
}

async fn defender_token(
    State(defender): State<Arc<Defender>>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    defender.token_requests.fetch_add(1, Ordering::SeqCst);
    if tenant != DEFENDER_TENANT {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let Ok(Form(form)) = form else {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id") != DEFENDER_CLIENT_ID {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                field("client_id")
            ),
        );
    }
    if field("client_secret") != DEFENDER_CLIENT_SECRET {
        return identity_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    if field("scope") != DEFENDER_SCOPE {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
                field("scope")
            ),
        );
    }
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.defender-test-{}.sig",
        defender.token_requests.load(Ordering::SeqCst)
    );
    defender
        .tokens
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(token.clone());
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
        .into_response()
}

fn defender_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message, "target": "8f3c2b1a-0e9d-4c8b-a7f6-e5d4c3b2a190"}})),
    )
        .into_response()
}

fn defender_check(defender: &Defender, headers: &HeaderMap, id: &str) -> Option<Response> {
    let tokens = defender
        .tokens
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if !tokens.iter().any(|token| bearer_is(headers, token)) {
        return Some(defender_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Authorization token is missing, invalid or expired",
        ));
    }
    if id != DEFENDER_MACHINE {
        return Some(defender_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("Machine {id} was not found"),
        ));
    }
    None
}

async fn defender_machine(
    State(defender): State<Arc<Defender>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = defender_check(&defender, &headers, &id) {
        return refused;
    }
    Json(json!({
        "@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#Machines/$entity",
        "id": id, "computerDnsName": "ws-0231.corp.acme.example",
        "firstSeen": "2025-03-02T08:11:45.1337Z", "lastSeen": "2026-11-22T20:58:12.4521Z",
        "osPlatform": "Windows11", "osVersion": null, "osProcessor": "x64", "version": "23H2",
        "lastIpAddress": "10.20.30.41", "lastExternalIpAddress": "198.51.100.23",
        "agentVersion": "10.8760.22621.3085", "osBuild": 22631, "healthStatus": "Active",
        "deviceValue": "Normal", "rbacGroupId": 140, "rbacGroupName": "Workstations",
        "riskScore": "High", "exposureLevel": "Medium", "isAadJoined": true,
        "aadDeviceId": "80fe8ff8-2624-418e-9591-41f0491218f9", "machineTags": ["finance"],
        "defenderAvStatus": "Updated", "onboardingStatus": "Onboarded", "osArchitecture": "64-bit",
        "managedBy": "Intune", "managedByStatus": "Success", "vmMetadata": null
    }))
    .into_response()
}

async fn defender_action(
    State(defender): State<Arc<Defender>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = defender_check(&defender, &headers, &id) {
        return refused;
    }
    let kind = match action.as_str() {
        "isolate" => "Isolate",
        "unisolate" => "Unisolate",
        _ => {
            return defender_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "Resource not found",
            );
        }
    };
    let Ok(Json(body)) = body else {
        return defender_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "Request body is not valid JSON",
        );
    };
    let Some(comment) = body["Comment"].as_str().filter(|c| !c.is_empty()) else {
        return defender_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "Comment is required",
        );
    };
    let scope = match (kind, body["IsolationType"].as_str()) {
        ("Isolate", None | Some("Full")) => "Full",
        ("Isolate", Some("Selective")) => "Selective",
        ("Isolate", Some(other)) => {
            return defender_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestBody",
                &format!("IsolationType '{other}' is not valid"),
            );
        }
        _ => "Full",
    };
    {
        let mut isolated = defender
            .isolated
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *isolated == (kind == "Isolate") {
            return defender_error(
                StatusCode::BAD_REQUEST,
                "ActiveRequestAlreadyExists",
                &format!("Machine {id} is already in the requested isolation state"),
            );
        }
        *isolated = kind == "Isolate";
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions/$entity",
            "id": if kind == "Isolate" { "b89eb834-4578-496c-8be0-03f004061435" } else { "c0a3e1f2-6b7d-4e8f-9a1b-2c3d4e5f6a7b" },
            "type": kind, "title": null, "requestor": DEFENDER_CLIENT_ID, "requestorComment": comment,
            "status": "Pending", "machineId": id, "computerDnsName": "ws-0231.corp.acme.example",
            "creationDateTimeUtc": "2026-11-22T21:14:02.5164398Z",
            "lastUpdateDateTimeUtc": "2026-11-22T21:14:02.5164398Z",
            "cancellationRequestor": null, "cancellationComment": null, "cancellationDateTimeUtc": null,
            "errorHResult": 0, "scope": scope, "externalId": null, "requestSource": "PublicApi",
            "relatedFileInfo": null, "commands": [], "troubleshootInfo": null
        })),
    )
        .into_response()
}

// Credentials

fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"))
}

fn basic_is(headers: &HeaderMap, user: &str, password: &str) -> bool {
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"))
}

/// The `Host` the request was sent to, for the links an API puts in its answers.
fn host_of(headers: &HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}
