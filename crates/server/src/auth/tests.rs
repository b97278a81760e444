//! Published test vectors (GitHub's and Standard Webhooks' documentation), rotation, replay and
//! malformed input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{AuthError, AuthProfile, verify, verify_delivery};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            )
        })
        .collect()
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn github(secrets: &[&str]) -> AuthProfile {
    AuthProfile::HmacSha256 {
        header: HeaderName::from_static("x-hub-signature-256"),
        prefix: "sha256=".into(),
        secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
    }
}

/// From GitHub's "Validating webhook deliveries".
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_signatures_verify_with_the_current_or_the_previous_secret() {
    let signed = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
    let body = b"Hello, World!";
    assert_eq!(
        verify(
            &github(&["It's a Secret to Everybody"]),
            &signed,
            body,
            at(0)
        ),
        Ok(())
    );
    // During a rotation both secrets are configured; either order works.
    let rotating = github(&["new-secret-0000", "It's a Secret to Everybody"]);
    assert_eq!(verify(&rotating, &signed, body, at(0)), Ok(()));
    assert_eq!(
        verify(&github(&["another secret"]), &signed, body, at(0)),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        verify(
            &github(&["It's a Secret to Everybody"]),
            &signed,
            b"Hello, World?",
            at(0)
        ),
        Err(AuthError::Mismatch),
        "a changed body must not verify"
    );
}

#[test]
fn github_signature_problems_are_named() {
    let profile = github(&["s"]);
    let cases = [
        (
            headers(&[]),
            AuthError::Missing("x-hub-signature-256".into()),
        ),
        (
            headers(&[("x-hub-signature-256", "757107ea")]),
            AuthError::Malformed {
                header: "x-hub-signature-256".into(),
                reason: "it does not start with `sha256=`".into(),
            },
        ),
        (
            headers(&[("x-hub-signature-256", "sha256=zz")]),
            AuthError::Malformed {
                header: "x-hub-signature-256".into(),
                reason: "the digest is not hex".into(),
            },
        ),
    ];
    for (given, expected) in cases {
        assert_eq!(verify(&profile, &given, b"x", at(0)), Err(expected));
    }
    assert_eq!(
        verify(
            &github(&[]),
            &headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]),
            b"x",
            at(0)
        ),
        Err(AuthError::Misconfigured)
    );
}

/// From the Standard Webhooks specification's examples.
fn standard(secrets: &[&str]) -> AuthProfile {
    AuthProfile::StandardWebhooks {
        secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        tolerance: Duration::from_secs(300),
    }
}

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STANDARD_BODY: &[u8] = br#"{"test": 2432232314}"#;

fn standard_headers(signature: &str, timestamp: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signature),
    ])
}

#[test]
fn standard_webhooks_verify_within_the_window_and_with_several_signatures() {
    let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let sent = 1_614_265_330;
    let signed = standard_headers(good, "1614265330");
    assert_eq!(
        verify(
            &standard(&[STANDARD_SECRET]),
            &signed,
            STANDARD_BODY,
            at(sent + 10)
        ),
        Ok(())
    );
    // Senders list several signatures while they rotate; one valid is enough.
    let several = standard_headers(&format!("v1,bm90IHRoaXMgb25l {good}"), "1614265330");
    assert_eq!(
        verify(
            &standard(&[STANDARD_SECRET]),
            &several,
            STANDARD_BODY,
            at(sent)
        ),
        Ok(())
    );
    assert_eq!(
        verify(
            &standard(&["whsec_c29tZXRoaW5nIGVsc2U=", STANDARD_SECRET]),
            &signed,
            STANDARD_BODY,
            at(sent)
        ),
        Ok(()),
        "a receiver rotating its keys accepts either"
    );
    assert_eq!(
        verify(
            &standard(&[STANDARD_SECRET]),
            &signed,
            br#"{"test": 1}"#,
            at(sent)
        ),
        Err(AuthError::Mismatch)
    );
}

#[test]
fn standard_webhooks_refuse_replays_outside_the_window() {
    let signed = standard_headers(
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "1614265330",
    );
    let sent = 1_614_265_330;
    for now in [sent + 301, sent - 301] {
        assert_eq!(
            verify(
                &standard(&[STANDARD_SECRET]),
                &signed,
                STANDARD_BODY,
                at(now)
            ),
            Err(AuthError::Stale(Duration::from_secs(300)))
        );
    }
    let missing = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", "1")]);
    assert_eq!(
        verify(
            &standard(&[STANDARD_SECRET]),
            &missing,
            STANDARD_BODY,
            at(1)
        ),
        Err(AuthError::Missing("webhook-signature".into()))
    );
}

#[test]
fn bearer_and_basic_credentials_are_checked_against_every_configured_value() {
    let bearer = AuthProfile::Bearer {
        tokens: vec!["old-token-1".into(), "new-token-2".into()],
    };
    for token in ["old-token-1", "new-token-2"] {
        let given = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(verify(&bearer, &given, b"", at(0)), Ok(()));
    }
    let wrong = headers(&[("authorization", "Bearer new-token-")]);
    assert_eq!(
        verify(&bearer, &wrong, b"", at(0)),
        Err(AuthError::Mismatch)
    );
    let other_scheme = headers(&[("authorization", "Basic b2xkLXRva2VuLTE=")]);
    assert!(matches!(
        verify(&bearer, &other_scheme, b"", at(0)),
        Err(AuthError::Malformed { .. })
    ));
    assert_eq!(
        verify(&bearer, &headers(&[]), b"", at(0)),
        Err(AuthError::Missing("authorization".into()))
    );

    let basic = AuthProfile::Basic {
        credentials: vec![("splunk".into(), "s3cret".into())],
    };
    // base64("splunk:s3cret")
    let given = headers(&[("authorization", "Basic c3BsdW5rOnMzY3JldA==")]);
    assert_eq!(verify(&basic, &given, b"", at(0)), Ok(()));
    let wrong = headers(&[("authorization", "Basic c3BsdW5rOnMzY3JldDI=")]);
    assert_eq!(verify(&basic, &wrong, b"", at(0)), Err(AuthError::Mismatch));
    let garbage = headers(&[("authorization", "Basic ***")]);
    assert!(matches!(
        verify(&basic, &garbage, b"", at(0)),
        Err(AuthError::Malformed { .. })
    ));
}

#[test]
fn only_an_explicitly_public_trigger_skips_authentication_and_nothing_prints_secrets() {
    assert_eq!(
        verify(&AuthProfile::Public, &headers(&[]), b"{}", at(0)),
        Ok(())
    );
    assert_eq!(
        verify(
            &AuthProfile::Bearer { tokens: vec![] },
            &headers(&[("authorization", "Bearer x")]),
            b"",
            at(0)
        ),
        Err(AuthError::Misconfigured)
    );
    let profile = AuthProfile::Bearer {
        tokens: vec!["canary-token-77".into()],
    };
    assert!(!format!("{profile:?}").contains("canary"));
    let error = verify(
        &profile,
        &headers(&[("authorization", "Bearer nope")]),
        b"",
        at(0),
    )
    .expect_err("refused");
    assert!(!error.to_string().contains("canary"));
}

#[test]
fn a_custom_signature_header_is_named_in_the_refusal() {
    let profile = AuthProfile::HmacSha256 {
        header: http::HeaderName::from_static("x-wazuh-signature"),
        prefix: "sha256=".into(),
        secrets: vec![b"s".to_vec()],
    };
    let refused = verify(&profile, &headers(&[]), b"{}", SystemTime::now());
    assert_eq!(refused, Err(AuthError::Missing("x-wazuh-signature".into())));
    assert_eq!(
        refused.map_err(|e| e.to_string()),
        Err("the `x-wazuh-signature` header is missing".to_owned())
    );
}

#[test]
fn a_url_token_is_checked_against_every_token_and_only_for_its_profile() {
    let profile = AuthProfile::UrlToken {
        tokens: vec![
            "current-token-0123456789abcdef".into(),
            "next-token-0123456789abcdef0".into(),
        ],
    };
    let none = headers(&[]);
    for token in [
        "current-token-0123456789abcdef",
        "next-token-0123456789abcdef0",
    ] {
        assert_eq!(
            verify_delivery(&profile, Some(token), &none, b"{}", at(0)),
            Ok(())
        );
    }
    assert_eq!(
        verify_delivery(
            &profile,
            Some("current-token-0123456789abcdeF"),
            &none,
            b"{}",
            at(0)
        ),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        verify_delivery(&profile, None, &none, b"{}", at(0)),
        Err(AuthError::TokenNotInUrl)
    );
    // A token in the URL of a trigger whose profile takes none is refused, never ignored.
    let bearer = AuthProfile::Bearer {
        tokens: vec!["t0ken-in-a-header".into()],
    };
    let authorized = headers(&[("authorization", "Bearer t0ken-in-a-header")]);
    assert_eq!(
        verify_delivery(&bearer, Some("anything"), &authorized, b"{}", at(0)),
        Err(AuthError::UnexpectedUrlToken)
    );
    assert_eq!(format!("{profile:?}"), "UrlToken", "never printed");
}
