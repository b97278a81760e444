//! A plugin for testing the host: well-behaved actions that exercise every host service, and
//! hostile ones that misbehave on purpose (spin forever, allocate without bound, trap, flood the
//! output). Built by the test setup; never installed in production.

use riposte_plugin_sdk::http::Request;
use riposte_plugin_sdk::{
    Action, Context, Error, Manifest, Plugin, Secret, Value, json, kv, log, plugin,
};

struct Testbed;

impl Plugin for Testbed {
    fn manifest() -> Manifest {
        Manifest::new(
            "testbed",
            env!("CARGO_PKG_VERSION"),
            "Exercises and abuses the plugin host.",
        )
        .action(Action::new("echo", "Returns its input and call context."))
        .action(Action::new("noop", "Returns an empty object."))
        .action(
            Action::new(
                "fetch",
                "GETs `url` (`times` times, 1 by default) and returns the last status and body.",
            )
            .not_idempotent(),
        )
        .action(Action::new(
            "secret",
            "Tells whether the secret `name` is readable.",
        ))
        .action(Action::new(
            "log",
            "Logs `message` with `value` (`times` times, 1 by default).",
        ))
        .action(Action::new(
            "kv",
            "Sets `key` to `value` if given, then reads it.",
        ))
        .action(Action::new("block", "Pretends to block `target`.").destructive())
        .action(Action::new(
            "sandbox",
            "Reports what it can reach: environment, files, sockets.",
        ))
        .action(Action::new("spin", "Loops forever."))
        .action(Action::new("allocate", "Allocates memory until it fails."))
        .action(Action::new("trap", "Panics."))
        .action(Action::new(
            "huge-output",
            "Returns `megabytes` MiB of output.",
        ))
        .action(Action::new("fail", "Fails with the error `kind`."))
        .secret(Secret::readable(
            "readable_token",
            "A secret the plugin reads itself.",
        ))
        .secret(Secret::header(
            "api_token",
            "A secret the host attaches.",
            "authorization",
            "Bearer {secret}",
        ))
    }

    fn invoke(action: &str, input: Value, context: &Context) -> Result<Value, Error> {
        match action {
            "echo" => Ok(json!({
                "input": input,
                "run_id": context.run_id,
                "step_id": context.step_id,
                "attempt": context.attempt,
                "idempotency_key": context.idempotency_key,
            })),
            "noop" => Ok(json!({})),
            "fetch" => {
                let url = input["url"]
                    .as_str()
                    .ok_or_else(|| Error::InvalidInput("`url` is required".into()))?;
                let request = || {
                    let mut request = Request::get(url);
                    if let Some(secret) = input["attach"].as_str() {
                        request = request.with_secret(secret);
                    }
                    request.send()
                };
                // A plugin that retries a refused request in a loop, as a buggy one would.
                for _ in 1..input["times"].as_u64().unwrap_or(1) {
                    let _ = request();
                }
                let response = request()?;
                Ok(json!({ "status": response.status, "body": response.text() }))
            }
            "secret" => {
                let name = input["name"].as_str().unwrap_or_default();
                let value = riposte_plugin_sdk::secret(name);
                Ok(json!({ "readable": value.is_some(), "length": value.map_or(0, |v| v.len()) }))
            }
            "log" => {
                let message = input["message"].as_str().unwrap_or_default();
                let value = input["value"].as_str().unwrap_or_default();
                for _ in 0..input["times"].as_u64().unwrap_or(1) {
                    log::info(message, &[("value", value)]);
                }
                Ok(json!({ "logged": true }))
            }
            "kv" => {
                let key = input["key"].as_str().unwrap_or_default();
                if let Some(value) = input["value"].as_str() {
                    kv::set(key, value, None);
                }
                Ok(json!({ "value": kv::get(key) }))
            }
            "block" => Ok(json!({ "blocked": input["target"] })),
            "sandbox" => {
                let tcp = input["connect"]
                    .as_str()
                    .map(|address| std::net::TcpStream::connect(address).is_ok());
                Ok(json!({
                    "env_vars": std::env::vars().count(),
                    "args": std::env::args().count(),
                    "root_listable": std::fs::read_dir("/").is_ok(),
                    "file_readable": std::fs::read("/etc/passwd").is_ok(),
                    "tcp_connected": tcp,
                }))
            }
            "spin" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("the testbed was asked to trap"),
            "huge-output" => {
                let megabytes = input["megabytes"].as_u64().unwrap_or(8) as usize;
                Ok(json!({ "data": "x".repeat(megabytes * 1024 * 1024) }))
            }
            "fail" => Err(match input["kind"].as_str().unwrap_or_default() {
                "rate_limited" => Error::RateLimited(riposte_plugin_sdk::RateLimit {
                    message: "slow down".into(),
                    retry_after_ms: Some(1500),
                }),
                "unauthorized" => Error::Unauthorized("bad credentials".into()),
                "not_found" => Error::NotFound("no such thing".into()),
                "upstream" => Error::Upstream("the upstream failed".into()),
                "invalid_input" => Error::InvalidInput("bad input".into()),
                _ => Error::Internal("internal".into()),
            }),
            other => Err(Error::unknown_action(other)),
        }
    }
}

plugin!(Testbed);
