use std::collections::BTreeMap;
use std::time::Duration;

use super::{Config, StoreConfig};
use crate::auth::AuthProfile;
use crate::error::Error;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn with_file(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("riposte.yaml");
    std::fs::write(&file, yaml).expect("write");
    Config::from_parts(Some(&file), &env(vars))
}

fn problems(result: Result<Config, Error>) -> Vec<String> {
    match result {
        Err(Error::Config(problems)) => problems,
        other => panic!("expected configuration problems, got {other:?}"),
    }
}

#[test]
fn without_a_file_the_defaults_make_a_local_single_node() {
    let config = Config::from_parts(None, &env(&[])).expect("defaults are valid");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.ops_listen, None);
    assert_eq!(
        config.store,
        StoreConfig::Sqlite {
            path: ".riposte/riposte.db".into(),
            synchronous: store::Synchronous::Normal,
        }
    );
    assert_eq!(config.workers.lease, Duration::from_secs(60));
    assert!(!config.workers.lease_configured);
    assert_eq!(config.webhooks.max_body_bytes, 1024 * 1024);
    assert!(config.auth.is_empty());
}

#[test]
fn the_environment_overrides_the_file_and_carries_the_secrets() {
    let config = with_file(
        "listen: 0.0.0.0:9000\nworkers: { concurrency: 4 }\nauth:\n  siem: { type: bearer, tokens_env: [SIEM_TOKEN] }\n",
        &[
            ("RIPOSTE_LISTEN", "127.0.0.1:7000"),
            ("RIPOSTE_OPS_LISTEN", "0.0.0.0:9090"),
            ("RIPOSTE_WORKERS", "0"),
            ("RIPOSTE_REDIS_URL", "redis://:pw@redis:6379/0"),
            ("SIEM_TOKEN", "t0ken"),
            ("RIPOSTE_SECRET_ABUSEIPDB_KEY", "k"),
        ],
    )
    .expect("valid");
    assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(
        config.ops_listen.map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:9090")
    );
    assert_eq!(config.workers.concurrency, 0);
    assert_eq!(
        config.store,
        StoreConfig::Redis {
            url: "redis://:pw@redis:6379/0".into(),
            prefix: "riposte".into(),
            activity_max_len: store::ACTIVITY_MAX_LEN,
            ca_file: None,
        }
    );
    assert!(matches!(&config.auth["siem"], AuthProfile::Bearer { tokens } if tokens == &["t0ken"]));
    assert_eq!(
        config.secrets.get("ABUSEIPDB_KEY").map(String::as_str),
        Some("k")
    );
    // Paths in the file are relative to the file.
    let config = with_file("playbooks: books\n", &[]).expect("valid");
    assert!(config.playbooks.ends_with("books") && config.playbooks.is_absolute());
}

#[test]
fn every_problem_is_listed_at_once() {
    let found = problems(with_file(
        r#"
listen: "localhost"
ops_listen: "everywhere"
workers: { lease: "soon" }
sqlite: { synchronous: sometimes }
redis: { url_env: NO_SUCH_VARIABLE }
auth:
  siem: { type: hmac-sha256, secrets_env: [MISSING_SECRET] }
  weird: { type: kerberos }
  empty: { type: bearer }
  pair: { type: basic, credentials_env: [NOT_A_PAIR] }
egress: { allow_private: [10.0.0.0/33] }
console: { session_ttl: 10s, secure_cookie: sometimes }
slack: { signing_secret_env: NO_SLACK_SECRET, bot_token_env: NO_SLACK_TOKEN, users: { U0GHOST: ghost } }
"#,
        &[("NOT_A_PAIR", "no-colon-here")],
    ));
    let expected = [
        "listen: `localhost`",
        "ops_listen: `everywhere`",
        "workers.lease: `soon`",
        "redis.url_env: the environment variable NO_SUCH_VARIABLE is not set",
        "sqlite.synchronous: `sometimes`",
        "auth.siem.secrets_env: the environment variable MISSING_SECRET is not set",
        "auth.weird.type: `kerberos`",
        "auth.empty: `tokens_env` must name at least one environment variable",
        "auth.pair.credentials_env: NOT_A_PAIR must hold `user:password`",
        "egress.allow_private: `10.0.0.0/33`",
        "console.session_ttl: 10s is not between 1m and 30d",
        "console.secure_cookie: `sometimes` is not `auto`, `always` or `never`",
        "slack.signing_secret_env: the environment variable NO_SLACK_SECRET is not set",
        "slack.bot_token_env: the environment variable NO_SLACK_TOKEN is not set",
        "slack.users.U0GHOST: `ghost` is not the name of an API token",
    ];
    for text in expected {
        assert!(
            found.iter().any(|problem| problem.contains(text)),
            "no problem mentions `{text}`: {found:#?}"
        );
    }
    // Without a usable Redis URL the SQLite settings are checked too.
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn secrets_anybody_could_guess_are_refused_at_start() {
    let found = problems(with_file(
        r#"
auth:
  empty_key: { type: standard-webhooks, secrets_env: [EMPTY_KEY] }
  colon: { type: basic, credentials_env: [JUST_A_COLON] }
  no_password: { type: basic, credentials_env: [NO_PASSWORD] }
  space: { type: hmac-sha256, secrets_env: [ONE_SPACE] }
  blank_token: { type: bearer, tokens_env: [BLANK_TOKEN] }
  short_url: { type: url-token, tokens_env: [SHORT_URL_TOKEN] }
  slash_url: { type: url-token, tokens_env: [SLASH_URL_TOKEN] }
  good_url: { type: url-token, tokens_env: [GOOD_URL_TOKEN] }
  good: { type: standard-webhooks, secrets_env: [GOOD_KEY] }
"#,
        &[
            ("EMPTY_KEY", "whsec_"),
            ("JUST_A_COLON", ":"),
            ("NO_PASSWORD", "siem: "),
            ("ONE_SPACE", " "),
            ("BLANK_TOKEN", "\t  "),
            ("SHORT_URL_TOKEN", "abc123"),
            ("SLASH_URL_TOKEN", "abcdefghijklmnop/qrstuvwxyz0123"),
            ("GOOD_URL_TOKEN", "4f9c1a7e0b2d4c6e8a1f3b5d7c9e0a2b"),
            ("GOOD_KEY", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ],
    ));
    let expected = [
        "auth.empty_key.secrets_env: EMPTY_KEY holds an empty Standard Webhooks key",
        "auth.colon.credentials_env: JUST_A_COLON must hold `user:password`, with neither part empty",
        "auth.no_password.credentials_env: NO_PASSWORD must hold `user:password`, with neither part empty",
        "auth.space.secrets_env: the environment variable ONE_SPACE holds only whitespace",
        "auth.blank_token.tokens_env: the environment variable BLANK_TOKEN holds only whitespace",
        "auth.short_url.tokens_env: SHORT_URL_TOKEN must hold at least 24 characters",
        "auth.slash_url.tokens_env: SLASH_URL_TOKEN must hold at least 24 characters",
    ];
    for text in expected {
        assert!(
            found.iter().any(|problem| problem.contains(text)),
            "no problem mentions `{text}`: {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let found = problems(with_file("listen: 127.0.0.1:1\nworkerz: {}\n", &[]));
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("workerz"), "{}", found[0]);
    assert!(found[0].contains("riposte.yaml"), "{}", found[0]);
}

#[test]
fn no_secret_value_appears_in_the_debug_form() {
    let config = with_file(
        "auth:\n  siem: { type: hmac-sha256, secrets_env: [S] }\n",
        &[
            ("S", "very-secret-value"),
            ("RIPOSTE_SECRET_X", "another-secret"),
        ],
    )
    .expect("valid");
    let printed = format!("{config:?}");
    assert!(!printed.contains("very-secret-value"), "{printed}");
    assert!(!printed.contains("another-secret"), "{printed}");
}

#[test]
fn api_tokens_are_configured_by_hash_with_a_role_and_cors_only_by_exact_origins() {
    let hash = crate::tokens::token_hash("rpt_example");
    let config = with_file(
        &format!(
            "api:\n  tokens:\n    - {{ name: oncall, role: responder, sha256: {hash}, groups: [soc] }}\n  cors_origins: [\"https://soc.example.com\"]\n"
        ),
        &[("RIPOSTE_API_TOKEN_SIEM_BOT", &format!("viewer:{hash}"))],
    )
    .expect("valid");
    let tokens: Vec<_> = config
        .api
        .tokens
        .iter()
        .map(|token| (token.name.as_str(), token.role, token.groups.clone()))
        .collect();
    assert_eq!(
        tokens,
        vec![
            (
                "oncall",
                crate::tokens::Role::Responder,
                vec!["soc".to_owned()]
            ),
            ("siem-bot", crate::tokens::Role::Viewer, vec![]),
        ]
    );
    assert_eq!(config.api.cors_origins, vec!["https://soc.example.com"]);
    assert!(
        Config::from_parts(None, &env(&[]))
            .expect("defaults")
            .api
            .cors_origins
            .is_empty()
    );

    let found = problems(with_file(
        "api:\n  tokens:\n    - { name: a, role: root, sha256: abc }\n    - { name: b, role: admin, sha256: rpt_the_token_itself }\n  cors_origins: [\"*\", \"https://soc.example.com/\"]\n",
        &[],
    ));
    assert!(
        found
            .iter()
            .any(|p| p.contains("api.tokens[0]: role `root`")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("api.tokens[1]: `sha256` must be")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("`*` is not an exact origin")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("`https://soc.example.com/` is not")),
        "{found:?}"
    );
    // The token itself never appears in the problems.
    assert!(
        !found.iter().any(|p| p.contains("rpt_the_token_itself")),
        "{found:?}"
    );
}

#[test]
fn a_private_authority_for_redis_tls_is_a_file_beside_the_configuration_or_a_variable() {
    let yaml = "redis: { url_env: REDIS_URL, ca_file: certs/ca.pem, activity_max_len: 5000 }\n";
    let config = with_file(yaml, &[("REDIS_URL", "rediss://redis:6380/0")]).expect("valid");
    let StoreConfig::Redis {
        ca_file,
        activity_max_len,
        ..
    } = &config.store
    else {
        panic!("not Redis: {:?}", config.store);
    };
    assert_eq!(*activity_max_len, 5000);
    let ca_file = ca_file.as_ref().expect("a CA file");
    assert!(
        ca_file.is_absolute() && ca_file.ends_with("certs/ca.pem"),
        "{ca_file:?}"
    );
    let config = with_file(
        yaml,
        &[
            ("REDIS_URL", "rediss://redis:6380/0"),
            ("RIPOSTE_REDIS_CA_FILE", "/etc/riposte/redis-ca.pem"),
        ],
    )
    .expect("valid");
    assert!(
        matches!(&config.store, StoreConfig::Redis { ca_file: Some(file), .. } if file == std::path::Path::new("/etc/riposte/redis-ca.pem")),
        "{:?}",
        config.store
    );
}

#[tokio::test]
async fn a_redis_ca_file_without_a_certificate_is_refused_before_connecting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, "not a certificate\n").expect("file");
    let store = StoreConfig::Redis {
        // Nothing listens there: the file must be refused first.
        url: "rediss://127.0.0.1:1".into(),
        prefix: "riposte".into(),
        activity_max_len: 0,
        ca_file: Some(file),
    };
    match crate::open_store(&store).await {
        Err(Error::Config(problems)) => assert!(
            problems
                .iter()
                .any(|p| p.contains("holds no PEM certificate")),
            "{problems:?}"
        ),
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("opened a store with an empty trust store"),
    }
}
