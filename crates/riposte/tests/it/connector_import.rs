//! `riposte connector import`: a vendor's OpenAPI document in, a connector that compiles out, and
//! what could not be mapped on standard error, located like a compiler's warnings.

use crate::commands::{riposte, text};

const CROWDSEC: &str = "tests/data/openapi/crowdsec-service-api.json";
const PAGERDUTY: &str = "tests/data/openapi/pagerduty-events-v2.json";

fn compiles(yaml: &str) -> playbook::connector::Connector {
    match playbook::connector::compile(yaml) {
        Ok(connector) => connector,
        Err(diagnostics) => {
            panic!("the imported connector does not compile: {diagnostics:#?}\n{yaml}")
        }
    }
}

#[test]
fn imports_a_vendor_document_with_located_leftovers() {
    let output = riposte(&[
        "connector",
        "import",
        CROWDSEC,
        "--name",
        "crowdsec-service",
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let connector = compiles(&text(&output.stdout));
    assert_eq!(connector.name, "crowdsec-service");
    assert!(connector.actions.contains_key("add-ips-to-blocklist"));
    assert!(!connector.actions.contains_key("upload-blocklist-content"));

    // One line per unmapped part: `<file>:<line>:<col>: <message>`.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{CROWDSEC}:1:7800: operation `upload-blocklist-content` is not imported: its request body is `multipart/form-data`, and connectors send JSON or form fields"
            ),
            format!(
                "{CROWDSEC}:1:62169: security scheme `BasicAuth` is not mapped: a connector authenticates one way, and this one uses `ApiKeyAuth`"
            ),
        ],
        "{stderr}"
    );
}

#[test]
fn names_the_connector_after_the_file_by_default() {
    let output = riposte(&["connector", "import", PAGERDUTY]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "", "everything maps");
    let connector = compiles(&text(&output.stdout));
    assert_eq!(connector.name, "pagerduty-events-v2");
    assert!(connector.actions.contains_key("create-v2-event"));
}

#[test]
fn refuses_what_it_cannot_import() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("old.yaml");
    std::fs::write(
        &file,
        "swagger: \"2.0\"\ninfo: { title: Old, version: \"1\" }\npaths: {}\n",
    )
    .expect("write");
    let output = riposte(&["connector", "import", file.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("Swagger 2.0"), "{stderr}");
    assert!(stderr.contains("old.yaml:1:1"), "{stderr}");
    assert!(output.stdout.is_empty());

    let output = riposte(&["connector", "import", "tests/data/openapi/missing.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("cannot read"));

    for args in [
        vec!["connector", "--help"],
        vec!["connector", "import", "--help"],
    ] {
        let output = riposte(&args);
        assert!(output.status.success(), "{args:?}");
        assert!(text(&output.stdout).contains("Usage:"), "{args:?}");
    }
}
