//! Cases and the approvals inbox, on both stores.

use std::time::Duration;

use cases::{Case, CaseEvent, Change, Observable, ObservableType, Phase, Severity};
use runner::{RunEvent, RunStatus};
use store::{CaseKey, CaseQuery, CaseWrite, Store, audit::GENESIS};
use test_support::RedisServer;

use super::{backends, delivery, run};

fn ip(value: &str) -> Observable {
    Observable {
        kind: ObservableType::IpAddress,
        value: value.into(),
    }
}

fn opening(key: &str, severity: Severity) -> playbook::CaseOpening {
    playbook::CaseOpening {
        key: key.into(),
        window: Duration::from_secs(3600),
        title: format!("case for {key}"),
        severity,
        observables: Vec::new(),
        join_on: Vec::new(),
    }
}

/// The write that opens a case for `run_id` of `playbook`, with its key and what it saw.
fn open(
    case: u64,
    key: &str,
    playbook: &str,
    run_id: &str,
    seen: Vec<Observable>,
    at: u64,
) -> CaseWrite {
    let events = Case::opening(
        &opening(key, Severity::High),
        playbook,
        run_id,
        seen.clone(),
        at,
    );
    let summary = Case::fold(case, &events).expect("opened").summary();
    CaseWrite {
        case,
        head: (0, GENESIS.to_owned()),
        events,
        summary,
        run: Some(run_id.to_owned()),
        key: Some(CaseKey {
            key: key.to_owned(),
            expires_at: at + 3_600_000,
            exclusive: true,
        }),
        seen,
        at,
    }
}

/// The case as stored, with the head of its chain.
async fn read(store: &dyn Store, case: u64) -> (Case, (u64, String)) {
    let records = store.case_records(case).await.expect("records");
    let events: Vec<CaseEvent> = records
        .iter()
        .map(|record| serde_json::from_str(&record.event).expect("a case event"))
        .collect();
    let head = records
        .last()
        .map(|record| (record.seq, record.hash.clone()))
        .expect("a case has records");
    (Case::fold(case, &events).expect("opened"), head)
}

/// A person's change, written on the head it was decided on.
async fn change(store: &dyn Store, case: u64, change: Change, at: u64) -> bool {
    let (mut folded, head) = read(store, case).await;
    let events = folded.change(change, "alice", at).expect("a change");
    for event in &events {
        folded.apply(event);
    }
    store
        .write_case(&CaseWrite {
            case,
            head,
            events,
            summary: folded.summary(),
            run: None,
            key: None,
            seen: Vec::new(),
            at,
        })
        .await
        .expect("write")
}

#[tokio::test]
async fn a_case_is_written_only_on_the_head_its_writer_read() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let name = backend.name;
        let first = store.next_case_id().await.expect("id");
        let second = store.next_case_id().await.expect("id");
        assert!(second > first, "{name}: numbers only grow");
        let now = store::now_millis();
        let write = open(first, "k1", "ssh", "run-1", vec![ip("203.0.113.7")], now);
        assert!(store.write_case(&write).await.expect("write"), "{name}");
        assert!(
            !store.write_case(&write).await.expect("write"),
            "{name}: the same write again finds the chain moved"
        );
        let records = store.case_records(first).await.expect("records");
        assert_eq!(
            store::audit::verify(&cases::chain_id(first), &records),
            Ok(3),
            "{name}"
        );
        let (case, _) = read(store, first).await;
        assert_eq!(case.alerts.len(), 1, "{name}");
        assert!(case.knows(&ip("203.0.113.7")), "{name}");
        assert_eq!(
            store.case_of_run("run-1").await.expect("case of run"),
            Some(first)
        );
        assert_eq!(store.case_of_run("run-2").await.expect("none"), None);

        // Two people change it at once: one of them is told to read again.
        let (folded, head) = read(store, first).await;
        let note = |text: &str| {
            let events = folded
                .change(Change::Note(text.into()), "bob", now + 1)
                .expect("note");
            let mut after = folded.clone();
            for event in &events {
                after.apply(event);
            }
            CaseWrite {
                case: first,
                head: head.clone(),
                events,
                summary: after.summary(),
                run: None,
                key: None,
                seen: Vec::new(),
                at: now + 1,
            }
        };
        let (one, two) = (note("one"), note("two"));
        let (one, two) = tokio::join!(store.write_case(&one), store.write_case(&two));
        assert_eq!(
            [one.expect("write"), two.expect("write")]
                .iter()
                .filter(|written| **written)
                .count(),
            1,
            "{name}: exactly one of two writes on one head lands"
        );
        let (case, _) = read(store, first).await;
        assert_eq!(case.notes.len(), 1, "{name}");
        assert!(case.acknowledged.is_some(), "{name}");
        let verification = store::audit::verify_store(store).await.expect("verify");
        assert_eq!(verification.cases, 1, "{name}");
        assert!(verification.problems.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn a_run_joins_one_case_only() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let now = store::now_millis();
        let (a, b) = (
            store.next_case_id().await.expect("id"),
            store.next_case_id().await.expect("id"),
        );
        assert!(
            store
                .write_case(&open(a, "ka", "ssh", "run-x", vec![], now))
                .await
                .expect("write")
        );
        assert!(
            !store
                .write_case(&open(b, "kb", "ssh", "run-x", vec![], now))
                .await
                .expect("write"),
            "{}: run-x is in case {a} already",
            backend.name
        );
        assert!(store.case_records(b).await.expect("records").is_empty());
        assert_eq!(store.case_of_run("run-x").await.expect("case"), Some(a));
    }
}

#[tokio::test]
async fn a_key_finds_its_open_case_until_it_expires_or_the_case_closes() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let name = backend.name;
        let now = store::now_millis();
        let a = store.next_case_id().await.expect("id");
        assert!(
            store
                .write_case(&open(a, "src:203.0.113.7", "ssh", "r1", vec![], now))
                .await
                .expect("write")
        );
        let found = store
            .find_case("src:203.0.113.7", &[], 0, now)
            .await
            .expect("find");
        assert_eq!(found.map(|m| (m.case, m.by)), Some((a, None)), "{name}");
        assert_eq!(
            store
                .find_case("src:other", &[], 0, now)
                .await
                .expect("find"),
            None
        );

        // While case a takes alerts, nobody opens another case under its key.
        let b = store.next_case_id().await.expect("id");
        let rival = open(b, "src:203.0.113.7", "ssh", "r2", vec![], now);
        assert!(!store.write_case(&rival).await.expect("write"), "{name}");

        // Once it is closed, the key opens a new case.
        assert!(
            change(
                store,
                a,
                Change::Move {
                    to: Phase::Closed,
                    reason: None
                },
                now + 1
            )
            .await,
            "{name}"
        );
        assert_eq!(
            store
                .find_case("src:203.0.113.7", &[], 0, now + 2)
                .await
                .expect("find"),
            None,
            "{name}: a closed case takes no alerts"
        );
        assert!(store.write_case(&rival).await.expect("write"), "{name}");
        assert_eq!(
            store
                .find_case("src:203.0.113.7", &[], 0, now + 2)
                .await
                .expect("find")
                .map(|m| m.case),
            Some(b),
            "{name}"
        );

        // A key forgets its case when its window has passed.
        let c = store.next_case_id().await.expect("id");
        let mut short = open(c, "short", "ssh", "r3", vec![], now);
        short.key = Some(CaseKey {
            key: "short".into(),
            expires_at: store::now_millis() + 300,
            exclusive: true,
        });
        assert!(store.write_case(&short).await.expect("write"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            store
                .find_case("short", &[], 0, store::now_millis())
                .await
                .expect("find"),
            None,
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_observable_finds_the_open_case_that_saw_it_most_recently() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let name = backend.name;
        let now = store::now_millis();
        let (a, b) = (
            store.next_case_id().await.expect("id"),
            store.next_case_id().await.expect("id"),
        );
        let shared = ip("198.51.100.9");
        let writes = [
            open(a, "ka", "ssh", "ra", vec![shared.clone()], now - 5_000),
            open(b, "kb", "scan", "rb", vec![shared.clone()], now - 1_000),
        ];
        for write in &writes {
            assert!(store.write_case(write).await.expect("write"), "{name}");
        }
        let found = store
            .find_case("kc", &[ip("192.0.2.1"), shared.clone()], now - 10_000, now)
            .await
            .expect("find");
        assert_eq!(
            found.map(|m| (m.case, m.by)),
            Some((b, Some(shared.clone()))),
            "{name}"
        );
        assert_eq!(
            store
                .find_case("kc", std::slice::from_ref(&shared), now - 500, now)
                .await
                .expect("find"),
            None,
            "{name}: seen before the window"
        );
        assert_eq!(
            store
                .find_case("kc", &[ip("192.0.2.1")], now - 10_000, now)
                .await
                .expect("find"),
            None,
            "{name}"
        );
    }
}

#[tokio::test]
async fn cases_are_listed_open_first_newest_first_filtered_and_paged() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let name = backend.name;
        let now = store::now_millis();
        let mut ids = Vec::new();
        for (index, playbook) in ["ssh", "scan", "ssh", "phish", "ssh"].iter().enumerate() {
            let id = store.next_case_id().await.expect("id");
            let write = open(
                id,
                &format!("k{index}"),
                playbook,
                &format!("run-{index}"),
                vec![],
                now + index as u64 * 10,
            );
            assert!(store.write_case(&write).await.expect("write"));
            ids.push(id);
        }
        // ids[1] is contained, ids[3] closed, ids[4] low: each change also updates the case.
        let moves = [
            (
                ids[1],
                Change::Move {
                    to: Phase::Containment,
                    reason: None,
                },
            ),
            (
                ids[3],
                Change::Move {
                    to: Phase::Closed,
                    reason: Some("duplicate".into()),
                },
            ),
            (ids[4], Change::Severity(Severity::Low)),
        ];
        for (offset, (id, what)) in moves.into_iter().enumerate() {
            assert!(change(store, id, what, now + 100 + offset as u64).await);
        }
        let list = async |query: CaseQuery| -> Vec<u64> {
            store
                .list_cases(&CaseQuery { limit: 10, ..query })
                .await
                .expect("list")
                .iter()
                .map(|summary| summary.id)
                .collect()
        };
        assert_eq!(
            list(CaseQuery::default()).await,
            vec![ids[4], ids[1], ids[2], ids[0], ids[3]],
            "{name}: open ones by last update, then closed"
        );
        assert_eq!(
            list(CaseQuery {
                phase: Some(Phase::Containment),
                ..CaseQuery::default()
            })
            .await,
            vec![ids[1]],
            "{name}"
        );
        assert_eq!(
            list(CaseQuery {
                severity: Some(Severity::High),
                ..CaseQuery::default()
            })
            .await,
            vec![ids[1], ids[2], ids[0], ids[3]],
            "{name}"
        );
        assert_eq!(
            list(CaseQuery {
                playbook: Some("ssh".into()),
                offset: 1,
                ..CaseQuery::default()
            })
            .await,
            vec![ids[2], ids[0]],
            "{name}"
        );
        let page = store
            .list_cases(&CaseQuery {
                offset: 3,
                limit: 1,
                ..CaseQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(page.len(), 1, "{name}");
        assert_eq!(
            page[0].id, ids[0],
            "{name}: pages run across open and closed"
        );
        let counts = store.case_counts().await.expect("counts");
        assert_eq!(counts.get(&Phase::DetectionAndAnalysis), Some(&3), "{name}");
        assert_eq!(counts.get(&Phase::Containment), Some(&1), "{name}");
        assert_eq!(counts.get(&Phase::Closed), Some(&1), "{name}");
        assert_eq!(store.case_ids().await.expect("ids"), ids, "{name}");
    }
}

#[tokio::test]
async fn steps_waiting_for_approval_are_listed_until_decided_or_the_run_ends() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let name = backend.name;
        let (first, second) = (run("block", None), run("isolate", None));
        store
            .accept(&delivery(None, vec![first.clone(), second.clone()]))
            .await
            .expect("accept");
        let requested = |step: &str, deadline: u64| RunEvent::ApprovalRequested {
            step: step.into(),
            approvers: vec!["soc".into()],
            message: None,
            deadline,
            at: 1,
        };
        store
            .append_all(
                &first.run_id,
                &[requested("ban", 900), requested("tell", 950)],
            )
            .await
            .expect("append");
        store
            .append(&second.run_id, &requested("isolate", 500))
            .await
            .expect("append");
        let waiting = async || -> Vec<(String, String, u64)> {
            store
                .pending_approvals(10)
                .await
                .expect("pending")
                .into_iter()
                .map(|pending| (pending.run_id, pending.step, pending.deadline))
                .collect()
        };
        assert_eq!(
            waiting().await,
            vec![
                (second.run_id.clone(), "isolate".into(), 500),
                (first.run_id.clone(), "ban".into(), 900),
                (first.run_id.clone(), "tell".into(), 950),
            ],
            "{name}: soonest deadline first"
        );
        store
            .append(
                &first.run_id,
                &RunEvent::ApprovalDecided {
                    step: "ban".into(),
                    decision: runner::Decision::TimedOut,
                    at: 2,
                },
            )
            .await
            .expect("append");
        store
            .append(
                &second.run_id,
                &RunEvent::RunFinished {
                    status: RunStatus::Cancelled,
                    outputs: serde_json::json!({}),
                    error: None,
                    at: 3,
                },
            )
            .await
            .expect("append");
        assert_eq!(
            waiting().await,
            vec![(first.run_id.clone(), "tell".into(), 950)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_edited_case_record_is_found_by_verification() {
    let redis = RedisServer::start();
    let redis_store = store::RedisStore::connect(&redis.url(), "cases")
        .await
        .expect("connect");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("riposte.db");
    let sqlite = store::SqliteStore::open(&path, store::Synchronous::Normal).expect("open");
    let stores: [&dyn Store; 2] = [&redis_store, &sqlite];
    for store in stores {
        let id = store.next_case_id().await.expect("id");
        let write = open(id, "k", "ssh", "r", vec![ip("203.0.113.7")], 1_000);
        assert!(store.write_case(&write).await.expect("write"));
    }
    edit_first_record(&redis.url(), "cases:case:1:events").await;
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute(
            "UPDATE case_events SET event = replace(event, 'high', 'low') WHERE seq = 1",
            [],
        )
        .expect("tamper");
    for store in stores {
        let problems = super::problems(store).await;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "case:1");
        assert_eq!(problems[0].1, 1);
    }
}

/// Rewrites a case's stream with its first record's severity edited, as someone with access to
/// Redis could.
async fn edit_first_record(url: &str, key: &str) {
    use redis::AsyncCommands as _;
    let client = redis::Client::open(url).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let entries: redis::streams::StreamRangeReply =
        connection.xrange_all(key).await.expect("xrange");
    let _: () = connection.del(key).await.expect("del");
    for (index, entry) in entries.ids.iter().enumerate() {
        let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
        let mut event = field("e");
        if index == 0 {
            event = event.replace("high", "low");
        }
        let fields = [
            ("e", event),
            ("n", field("n")),
            ("p", field("p")),
            ("h", field("h")),
        ];
        let _: String = connection
            .xadd(key, &entry.id, &fields)
            .await
            .expect("xadd");
    }
}

#[tokio::test]
async fn a_session_lasts_until_it_expires_or_ends() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let name = backend.name;
        let now = store::now_millis();
        let session = store::Session {
            actor: "oncall".into(),
            token_sha256: "ab".repeat(32),
            csrf: "c".repeat(43),
            expires_at: now + 60_000,
        };
        store.put_session("h1", &session).await.expect("put");
        assert_eq!(
            store.session("h1", now).await.expect("get"),
            Some(session.clone()),
            "{name}"
        );
        assert_eq!(store.session("h2", now).await.expect("get"), None, "{name}");
        assert_eq!(
            store.session("h1", now + 60_000).await.expect("get"),
            None,
            "{name}: expired"
        );
        store.end_session("h1").await.expect("end");
        assert_eq!(store.session("h1", now).await.expect("get"), None, "{name}");
    }
}
