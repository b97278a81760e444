//! Content types, depth and malformed bodies.

use super::*;

#[test]
fn json_bodies_are_parsed_and_everything_else_gets_the_right_status() {
    let alert = br#"{"rule": {"name": "Brute force"}, "source": {"ip": "203.0.113.7"}}"#;
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/cloudevents+json",
    ] {
        let event = parse_event(Some(content_type), alert).expect(content_type);
        assert_eq!(event["source"]["ip"], "203.0.113.7");
    }
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let error = parse_event(content_type, alert).expect_err("not JSON");
        assert_eq!(error.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let broken = parse_event(Some("application/json"), b"{\"rule\": ").expect_err("malformed");
    assert_eq!(broken.status(), http::StatusCode::BAD_REQUEST);
    assert!(broken.to_string().contains("line 1 column"), "{broken}");
}

#[test]
fn deep_documents_are_refused_before_parsing_and_strings_do_not_count() {
    let deep = format!(
        "{}{}",
        "[".repeat(MAX_JSON_DEPTH + 1),
        "]".repeat(MAX_JSON_DEPTH + 1)
    );
    assert_eq!(
        parse_event(Some("application/json"), deep.as_bytes()),
        Err(IngressError::TooDeep)
    );
    let at_limit = format!(
        "{}{}",
        "[".repeat(MAX_JSON_DEPTH),
        "]".repeat(MAX_JSON_DEPTH)
    );
    assert!(parse_event(Some("application/json"), at_limit.as_bytes()).is_ok());
    // Brackets inside strings (and escaped quotes) are text, not nesting.
    let text = format!(
        r#"{{"note": "{} \" {}"}}"#,
        "[".repeat(500),
        "{".repeat(500)
    );
    assert!(parse_event(Some("application/json"), text.as_bytes()).is_ok());
}
