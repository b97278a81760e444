//! The conformance suite: every test runs against both stores, Redis (a real `redis-server`
//! started for the test) and SQLite (a fresh file).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use runner::{Journal, RunEvent, RunStatus};
use store::{DedupeKey, Delivery, NewRun, OpenedRun, RedisStore, SqliteStore, Store, Synchronous};
use test_support::RedisServer;

mod cases;

/// A store under test, with whatever keeps its backing service alive.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

async fn backends() -> Vec<Backend> {
    let redis = RedisServer::start();
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let redis_store = RedisStore::connect(&redis.url(), &prefix)
        .await
        .expect("connect to the test redis");
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite =
        SqliteStore::open(&dir.path().join("riposte.db"), Synchronous::Normal).expect("open");
    vec![
        Backend {
            name: "redis",
            store: Arc::new(redis_store),
            _redis: Some(redis),
            _dir: tempfile::tempdir().expect("temp dir"),
        },
        Backend {
            name: "sqlite",
            store: Arc::new(sqlite),
            _redis: None,
            _dir: dir,
        },
    ]
}

fn run(playbook: &str, dedupe: Option<(&str, u64)>) -> NewRun {
    let event = serde_json::json!({"ip": "203.0.113.7", "big": 9007199254740993u64});
    NewRun {
        run_id: runner::new_run_id(),
        playbook: playbook.into(),
        accepted: RunEvent::RunAccepted {
            trigger: "siem".into(),
            actor: "siem-hmac".into(),
            delivery_id: None,
            playbook: Some(playbook.into()),
            event_sha256: Some(runner::event_digest(&event)),
            at: store::now_millis(),
        },
        event,
        dedupe: dedupe.map(|(key, window_ms)| DedupeKey {
            key: key.into(),
            window_ms,
        }),
    }
}

/// A delivery of `runs` (each run's first record names its delivery id).
fn delivery(delivery_id: Option<&str>, mut runs: Vec<NewRun>) -> Delivery {
    for run in &mut runs {
        if let RunEvent::RunAccepted {
            delivery_id: id, ..
        } = &mut run.accepted
        {
            *id = delivery_id.map(str::to_owned);
        }
    }
    Delivery {
        trigger: "siem".into(),
        delivery_id: delivery_id.map(str::to_owned),
        delivery_ttl: Duration::from_secs(60),
        runs,
        ignored: Vec::new(),
        received_at: store::now_millis(),
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn accepted_runs_are_recorded_queued_claimed_once_and_acked() {
    for backend in backends().await {
        let store = &backend.store;
        let (first, second) = (run("block", None), run("notify", None));
        let admissions = store
            .accept(&delivery(None, vec![first.clone(), second.clone()]))
            .await
            .expect("accept");
        assert_eq!(admissions.len(), 2, "{}", backend.name);
        assert!(admissions.iter().all(|a| !a.duplicate), "{}", backend.name);
        let record = store
            .run(&first.run_id)
            .await
            .expect("run")
            .expect("exists");
        assert_eq!(record.playbook, "block");
        assert_eq!(record.trigger, "siem");
        // Large integers survive the trip unchanged (no detour through doubles).
        assert_eq!(record.event, first.event, "{}", backend.name);
        // The acceptance is the run's first record, with who sent it.
        let journal = store.events(&first.run_id).await.expect("events");
        assert!(
            matches!(&journal[..], [RunEvent::RunAccepted { trigger, actor, .. }]
                if trigger == "siem" && actor == "siem-hmac"),
            "{}: {journal:?}",
            backend.name
        );
        assert_eq!(store.queue_depth().await.expect("depth"), 2);

        let claims = store.claim("w1", 10, LEASE).await.expect("claim");
        let runs: Vec<_> = claims.iter().map(|c| c.run_id.clone()).collect();
        assert_eq!(
            runs,
            vec![first.run_id.clone(), second.run_id.clone()],
            "{}",
            backend.name
        );
        assert!(claims.iter().all(|c| c.deliveries == 1), "{}", backend.name);
        assert!(
            store
                .claim("w2", 10, LEASE)
                .await
                .expect("claim")
                .is_empty(),
            "{}",
            backend.name
        );
        // Jobs done together are acked together.
        store.ack("w1", &claims).await.expect("ack");
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            0,
            "{}",
            backend.name
        );
        assert!(store.run("nope").await.expect("run").is_none());
    }
}

#[tokio::test]
async fn acking_jobs_releases_their_workers_locks_on_their_runs_and_no_other() {
    for backend in backends().await {
        let store = &backend.store;
        let (mine, theirs) = (run("a", None), run("b", None));
        store
            .accept(&delivery(None, vec![mine.clone(), theirs.clone()]))
            .await
            .expect("accept");
        let claims = store.claim("w1", 10, LEASE).await.expect("claim");
        assert_eq!(claims.len(), 2, "{}", backend.name);
        assert!(
            store
                .lock_run(&mine.run_id, "w1", LEASE)
                .await
                .expect("lock")
        );
        // Another worker took the second run over (the first stalled past its lease).
        assert!(
            store
                .lock_run(&theirs.run_id, "w2", LEASE)
                .await
                .expect("lock")
        );
        store.ack("w1", &claims).await.expect("ack");
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            0,
            "{}",
            backend.name
        );
        assert!(
            store
                .lock_run(&mine.run_id, "w3", LEASE)
                .await
                .expect("lock"),
            "{}: the ack left w1's lock",
            backend.name
        );
        assert!(
            !store
                .lock_run(&theirs.run_id, "w3", LEASE)
                .await
                .expect("lock"),
            "{}: the ack released w2's lock",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_repeated_delivery_id_gets_the_original_answer_and_starts_nothing() {
    for backend in backends().await {
        let store = &backend.store;
        let original = store
            .accept(&delivery(Some("d-1"), vec![run("block", None)]))
            .await
            .expect("accept");
        let repeat = store
            .accept(&delivery(Some("d-1"), vec![run("block", None)]))
            .await
            .expect("accept");
        assert_eq!(repeat.len(), 1, "{}", backend.name);
        assert_eq!(repeat[0].run_id, original[0].run_id, "{}", backend.name);
        assert!(
            repeat[0].duplicate && !original[0].duplicate,
            "{}",
            backend.name
        );
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            1,
            "{}",
            backend.name
        );
        // Another delivery id is another delivery.
        store
            .accept(&delivery(Some("d-2"), vec![run("block", None)]))
            .await
            .expect("accept");
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            2,
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_dedupe_key_suppresses_repeats_within_its_window_only() {
    for backend in backends().await {
        let store = &backend.store;
        let first = store
            .accept(&delivery(
                None,
                vec![run("block", Some(("203.0.113.7", 300)))],
            ))
            .await
            .expect("accept");
        let repeat = store
            .accept(&delivery(
                None,
                vec![
                    run("block", Some(("203.0.113.7", 300))),
                    run("notify", None),
                ],
            ))
            .await
            .expect("accept");
        assert!(repeat[0].duplicate, "{}", backend.name);
        assert_eq!(repeat[0].run_id, first[0].run_id, "{}", backend.name);
        assert!(!repeat[1].duplicate, "{}", backend.name);
        // The same key for another playbook is another key.
        let other = store
            .accept(&delivery(
                None,
                vec![run("isolate", Some(("203.0.113.7", 300)))],
            ))
            .await
            .expect("accept");
        assert!(!other[0].duplicate, "{}", backend.name);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let later = store
            .accept(&delivery(
                None,
                vec![run("block", Some(("203.0.113.7", 300)))],
            ))
            .await
            .expect("accept");
        assert!(
            !later[0].duplicate,
            "{}: the window has passed",
            backend.name
        );
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            4,
            "{}",
            backend.name
        );
    }
}

/// A dedupe key finds the run it started while its window lasts (how a resolved alert finds
/// the run its firing alert started).
#[tokio::test]
async fn a_dedupe_key_finds_its_run_within_its_window() {
    for backend in backends().await {
        let store = &backend.store;
        let started = store
            .accept(&delivery(None, vec![run("block", Some(("fp-1", 300)))]))
            .await
            .expect("accept");
        let found = store.dedupe_run("block", "fp-1").await.expect("lookup");
        assert_eq!(
            found.as_deref(),
            Some(started[0].run_id.as_str()),
            "{}",
            backend.name
        );
        for (playbook, key) in [("block", "fp-2"), ("notify", "fp-1")] {
            assert_eq!(
                store.dedupe_run(playbook, key).await.expect("lookup"),
                None,
                "{}: {playbook} {key}",
                backend.name
            );
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            store.dedupe_run("block", "fp-1").await.expect("lookup"),
            None,
            "{}: the window has passed",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_job_whose_lease_runs_out_is_handed_out_again_unless_renewed() {
    for backend in backends().await {
        let store = &backend.store;
        let (lost, kept) = (run("a", None), run("b", None));
        store
            .accept(&delivery(None, vec![lost.clone(), kept.clone()]))
            .await
            .expect("accept");
        let lease = Duration::from_millis(300);
        let claims = store.claim("crashed", 10, lease).await.expect("claim");
        assert_eq!(claims.len(), 2, "{}", backend.name);
        let kept_job = claims
            .iter()
            .find(|c| c.run_id == kept.run_id)
            .expect("kept job")
            .job_id
            .clone();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store
                .extend("crashed", std::slice::from_ref(&kept_job), lease)
                .await
                .expect("extend");
        }
        let again = store.claim("rescuer", 10, lease).await.expect("claim");
        assert_eq!(again.len(), 1, "{}: {again:?}", backend.name);
        assert_eq!(again[0].run_id, lost.run_id, "{}", backend.name);
        assert_eq!(again[0].deliveries, 2, "{}", backend.name);
        // The old owner's renewal does not take the job back.
        store
            .extend("crashed", std::slice::from_ref(&again[0].job_id), lease)
            .await
            .expect("extend");
        store
            .release("rescuer", &[again[0].job_id.clone()])
            .await
            .expect("release");
        let released = store.claim("third", 10, lease).await.expect("claim");
        assert_eq!(released.len(), 1, "{}", backend.name);
        assert_eq!(released[0].run_id, lost.run_id, "{}", backend.name);
        assert_eq!(
            released[0].deliveries, 2,
            "{}: a release is not a failed delivery",
            backend.name
        );
    }
}

#[tokio::test]
async fn concurrent_workers_never_get_the_same_job() {
    for backend in backends().await {
        let store = &backend.store;
        for chunk in 0..10 {
            let runs = (0..50)
                .map(|i| run(&format!("p{chunk}-{i}"), None))
                .collect();
            store.accept(&delivery(None, runs)).await.expect("accept");
        }
        let mut workers = Vec::new();
        for worker in 0..4 {
            let store = Arc::clone(store);
            workers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let claims = store
                        .claim(&format!("w{worker}"), 7, LEASE)
                        .await
                        .expect("claim");
                    if claims.is_empty() {
                        break seen;
                    }
                    for claim in claims {
                        store
                            .ack(&format!("w{worker}"), std::slice::from_ref(&claim))
                            .await
                            .expect("ack");
                        seen.push(claim.run_id);
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.expect("worker"));
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 500, "{}", backend.name);
        assert_eq!(unique.len(), 500, "{}", backend.name);
    }
}

#[tokio::test]
async fn the_journal_keeps_events_in_order_per_run() {
    for backend in backends().await {
        let store = &backend.store;
        let finished = |n: u64| RunEvent::RunFinished {
            status: RunStatus::Succeeded,
            outputs: serde_json::json!({ "n": n }),
            error: None,
            at: n,
        };
        for n in 0..20 {
            store.append("run-a", &finished(n)).await.expect("append");
            store
                .append("run-b", &finished(100 + n))
                .await
                .expect("append");
        }
        let events = store.events("run-a").await.expect("events");
        assert_eq!(
            events,
            (0..20).map(finished).collect::<Vec<_>>(),
            "{}",
            backend.name
        );
        assert!(store.events("none").await.expect("events").is_empty());
    }
}

#[tokio::test]
async fn timers_become_jobs_when_due_and_the_earliest_wins() {
    for backend in backends().await {
        let store = &backend.store;
        store.schedule("run-t", 5_000).await.expect("schedule");
        store.schedule("run-t", 2_000).await.expect("schedule");
        store.schedule("run-t", 9_000).await.expect("schedule");
        assert_eq!(
            store.promote_due(1_999).await.expect("promote"),
            0,
            "{}",
            backend.name
        );
        assert_eq!(
            store.promote_due(2_000).await.expect("promote"),
            1,
            "{}",
            backend.name
        );
        assert_eq!(
            store.promote_due(10_000).await.expect("promote"),
            0,
            "{}",
            backend.name
        );
        let claims = store.claim("w", 10, LEASE).await.expect("claim");
        assert_eq!(claims.len(), 1, "{}", backend.name);
        assert_eq!(claims[0].run_id, "run-t", "{}", backend.name);
    }
}

#[tokio::test]
async fn a_run_lock_has_one_holder_until_released_or_expired() {
    for backend in backends().await {
        let store = &backend.store;
        let accepted = run("a", None);
        store
            .accept(&delivery(None, vec![accepted.clone()]))
            .await
            .expect("accept");
        let id = &accepted.run_id;
        let short = Duration::from_millis(200);
        assert!(
            store.lock_run(id, "w1", short).await.expect("lock"),
            "{}",
            backend.name
        );
        assert!(
            store.lock_run(id, "w1", short).await.expect("renew"),
            "{}",
            backend.name
        );
        assert!(
            !store.lock_run(id, "w2", short).await.expect("lock"),
            "{}",
            backend.name
        );
        store
            .unlock_run(id, "w2")
            .await
            .expect("unlock by a stranger is a no-op");
        assert!(
            !store.lock_run(id, "w2", short).await.expect("lock"),
            "{}",
            backend.name
        );
        store.unlock_run(id, "w1").await.expect("unlock");
        assert!(
            store.lock_run(id, "w2", short).await.expect("lock"),
            "{}",
            backend.name
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            store.lock_run(id, "w3", short).await.expect("lock"),
            "{}: an expired lock is free",
            backend.name
        );
    }
}

#[tokio::test]
async fn opening_a_run_locks_it_and_reads_its_record_and_journal_in_one_go() {
    for backend in backends().await {
        let store = &backend.store;
        let accepted = run("a", None);
        store
            .accept(&delivery(None, vec![accepted.clone()]))
            .await
            .expect("accept");
        let id = &accepted.run_id;
        store
            .append(
                id,
                &RunEvent::RunFinished {
                    status: RunStatus::Succeeded,
                    outputs: serde_json::json!({ "n": 5 }),
                    error: None,
                    at: 5,
                },
            )
            .await
            .expect("append");
        let opened = store.open_run(id, "w1", LEASE).await.expect("open");
        let OpenedRun::Locked { record, events } = opened else {
            panic!("{}: {opened:?}", backend.name);
        };
        assert_eq!(record.playbook, "a", "{}", backend.name);
        assert_eq!(record.event, accepted.event, "{}", backend.name);
        assert!(
            matches!(
                &events[..],
                [
                    RunEvent::RunAccepted { .. },
                    RunEvent::RunFinished { at: 5, .. }
                ]
            ),
            "{}: {events:?}",
            backend.name
        );
        // The lock is taken: another worker finds the run busy, the holder opens it again.
        assert_eq!(
            store.open_run(id, "w2", LEASE).await.expect("open"),
            OpenedRun::Busy,
            "{}",
            backend.name
        );
        assert!(!store.lock_run(id, "w2", LEASE).await.expect("lock"));
        assert!(matches!(
            store.open_run(id, "w1", LEASE).await.expect("reopen"),
            OpenedRun::Locked { .. }
        ));
        store.unlock_run(id, "w1").await.expect("unlock");
        assert_eq!(
            store.open_run("nope", "w1", LEASE).await.expect("open"),
            OpenedRun::Missing,
            "{}",
            backend.name
        );
        // A dead run is neither advanced nor locked.
        store
            .dead_letter(id, "given up")
            .await
            .expect("dead letter");
        assert_eq!(
            store.open_run(id, "w2", LEASE).await.expect("open"),
            OpenedRun::Dead,
            "{}",
            backend.name
        );
        assert!(
            store.lock_run(id, "w3", LEASE).await.expect("lock"),
            "{}: opening a dead run left it unlocked",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_dead_lettered_run_keeps_its_reason_until_revived() {
    for backend in backends().await {
        let store = &backend.store;
        let accepted = run("a", None);
        store
            .accept(&delivery(None, vec![accepted.clone()]))
            .await
            .expect("accept");
        store
            .dead_letter(&accepted.run_id, "lost its worker 5 times")
            .await
            .expect("dead letter");
        let record = store
            .run(&accepted.run_id)
            .await
            .expect("run")
            .expect("exists");
        assert_eq!(
            record.dead.as_deref(),
            Some("lost its worker 5 times"),
            "{}",
            backend.name
        );
        store.ping().await.expect("ping");
    }
}

#[tokio::test]
async fn sqlite_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/riposte.db");
    let accepted = run("a", None);
    {
        let store = SqliteStore::open(&path, Synchronous::Full).expect("open");
        store
            .accept(&delivery(Some("x"), vec![accepted.clone()]))
            .await
            .expect("accept");
        store
            .claim("w", 1, Duration::from_millis(1))
            .await
            .expect("claim");
    }
    let store = SqliteStore::open(&path, Synchronous::Normal).expect("reopen");
    assert!(store.run(&accepted.run_id).await.expect("run").is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let claims = store.claim("w2", 5, LEASE).await.expect("claim");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].deliveries, 2);
    let repeat = store
        .accept(&delivery(Some("x"), vec![run("a", None)]))
        .await
        .expect("accept");
    assert!(repeat[0].duplicate);
}

#[tokio::test]
async fn redis_keeps_acknowledged_writes_across_a_restart() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "restart")
        .await
        .expect("connect");
    let accepted = run("a", None);
    store
        .accept(&delivery(None, vec![accepted.clone()]))
        .await
        .expect("accept");
    redis.restart();
    // The connection comes back by itself; commands may fail while it does.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let claims = loop {
        match store.claim("w", 5, LEASE).await {
            Ok(claims) => break claims,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no reconnect: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].run_id, accepted.run_id);
}

#[tokio::test]
async fn ignored_deliveries_are_recorded_newest_first() {
    for backend in backends().await {
        let store = &backend.store;
        for n in 0..3 {
            let mut filtered = delivery(None, Vec::new());
            filtered.ignored = vec![format!("playbook-{n}")];
            let admissions = store.accept(&filtered).await.expect("accept");
            assert!(admissions.is_empty(), "{}", backend.name);
        }
        let ignored = store.ignored(2).await.expect("ignored");
        let names: Vec<_> = ignored.iter().map(|i| i.playbooks[0].as_str()).collect();
        assert_eq!(names, ["playbook-2", "playbook-1"], "{}", backend.name);
        assert_eq!(ignored[0].trigger, "siem");
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            0,
            "{}",
            backend.name
        );
    }
}

/// What a tamperer with write access to the store does to a run's journal.
enum Tamper {
    Edit(usize),
    Delete(usize),
    Swap(usize, usize),
}

/// Rewrites a run's journal in Redis, keeping entry ids, with one change.
async fn tamper_redis(url: &str, key: &str, tamper: &Tamper) {
    let client = redis::Client::open(url).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let entries: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut connection, key)
            .await
            .expect("xrange");
    let mut rows: Vec<(String, Vec<(String, String)>)> = entries
        .ids
        .iter()
        .map(|entry| {
            let fields = ["e", "n", "p", "h"]
                .iter()
                .map(|name| {
                    (
                        (*name).to_owned(),
                        entry.get::<String>(name).unwrap_or_default(),
                    )
                })
                .collect();
            (entry.id.clone(), fields)
        })
        .collect();
    match tamper {
        Tamper::Edit(index) => {
            rows[*index].1[0].1 = rows[*index].1[0].1.replace("succeeded", "failed")
        }
        Tamper::Delete(index) => {
            rows.remove(*index);
        }
        Tamper::Swap(a, b) => {
            let (first, second) = (rows[*a].1.clone(), rows[*b].1.clone());
            rows[*a].1 = second;
            rows[*b].1 = first;
        }
    }
    let _: () = redis::AsyncCommands::del(&mut connection, key)
        .await
        .expect("del");
    for (id, fields) in rows {
        let _: String = redis::AsyncCommands::xadd(&mut connection, key, &id, &fields)
            .await
            .expect("xadd");
    }
}

fn tamper_sqlite(path: &std::path::Path, run_id: &str, tamper: &Tamper) {
    let connection = rusqlite::Connection::open(path).expect("open");
    match tamper {
        Tamper::Edit(index) => connection.execute(
            "UPDATE run_events SET event = replace(event, 'succeeded', 'failed') WHERE run_id = ?1 AND seq = ?2",
            rusqlite::params![run_id, *index as i64 + 1],
        ),
        Tamper::Delete(index) => connection.execute(
            "DELETE FROM run_events WHERE run_id = ?1 AND seq = ?2",
            rusqlite::params![run_id, *index as i64 + 1],
        ),
        // Swap the positions of two rows, as a reordering of records would.
        Tamper::Swap(a, b) => connection
            .execute(
                "UPDATE run_events SET seq = CASE seq WHEN ?2 THEN -?3 WHEN ?3 THEN -?2 END
                 WHERE run_id = ?1 AND seq IN (?2, ?3)",
                rusqlite::params![run_id, *a as i64 + 1, *b as i64 + 1],
            )
            .and_then(|_| {
                connection.execute(
                    "UPDATE run_events SET seq = -seq WHERE run_id = ?1 AND seq < 0",
                    rusqlite::params![run_id],
                )
            }),
    }
    .expect("tampered");
}

/// A run of four records: accepted, started and finished (one batch), finished again (as a
/// resumed run does); so two seals in the trail.
async fn journal_of_four(store: &dyn Store) -> String {
    let accepted = run("a", None);
    store
        .accept(&delivery(None, vec![accepted.clone()]))
        .await
        .expect("accept");
    let started = RunEvent::RunStarted {
        run_id: accepted.run_id.clone(),
        playbook: "a".into(),
        playbook_version: None,
        event: accepted.event.clone(),
        incident: Default::default(),
        at: 1,
    };
    let finished = |n: u64| RunEvent::RunFinished {
        status: RunStatus::Succeeded,
        outputs: serde_json::json!({ "n": n }),
        error: None,
        at: n,
    };
    store
        .append_all(&accepted.run_id, &[started, finished(2)])
        .await
        .expect("append");
    store
        .append(&accepted.run_id, &finished(3))
        .await
        .expect("append");
    accepted.run_id
}

#[tokio::test]
async fn the_journal_is_hash_chained_and_tampering_is_found_and_named() {
    for tamper in [Tamper::Edit(2), Tamper::Delete(2), Tamper::Swap(2, 3)] {
        // Redis.
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), "chain")
            .await
            .expect("connect");
        let run_id = journal_of_four(&store).await;
        let records = store.audit_records(&run_id).await.expect("records");
        assert_eq!(store::audit::verify(&run_id, &records), Ok(4));
        assert_eq!(store.run_ids().await.expect("runs"), vec![run_id.clone()]);
        tamper_redis(&redis.url(), &format!("chain:run:{run_id}:events"), &tamper).await;
        let records = store.audit_records(&run_id).await.expect("records");
        let broken = store::audit::verify(&run_id, &records).expect_err("tampering is found");
        assert_eq!(broken.position, 3, "redis: {broken}");

        // SQLite.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("riposte.db");
        let store = SqliteStore::open(&path, Synchronous::Normal).expect("open");
        let run_id = journal_of_four(&store).await;
        let records = store.audit_records(&run_id).await.expect("records");
        assert_eq!(store::audit::verify(&run_id, &records), Ok(4));
        assert_eq!(store.run_ids().await.expect("runs"), vec![run_id.clone()]);
        tamper_sqlite(&path, &run_id, &tamper);
        let records = store.audit_records(&run_id).await.expect("records");
        let broken = store::audit::verify(&run_id, &records).expect_err("tampering is found");
        assert_eq!(broken.position, 3, "sqlite: {broken}");
    }
}

#[tokio::test]
async fn two_processes_writing_one_journal_keep_one_chain() {
    // A worker that lost its run appends after another one took over: the chain stays linked.
    let redis = RedisServer::start();
    let first = RedisStore::connect(&redis.url(), "two")
        .await
        .expect("connect");
    let second = RedisStore::connect(&redis.url(), "two")
        .await
        .expect("connect");
    let event = |n: u64| RunEvent::RunRecovered {
        deliveries: n as u32,
        at: n,
    };
    for n in 0..6 {
        let writer = if n % 2 == 0 { &first } else { &second };
        writer.append("shared", &event(n)).await.expect("append");
    }
    let records = first.audit_records("shared").await.expect("records");
    assert_eq!(store::audit::verify("shared", &records), Ok(6));
    // An append refused because the head moved left nothing behind in the activity stream.
    let activity = first.activity_page(None, 100).await.expect("activity");
    let copied: Vec<_> = activity.records.into_iter().map(|a| a.record).collect();
    assert_eq!(copied, records);
}

/// How many times Redis has run `command` since it started (`INFO commandstats`).
async fn redis_calls(url: &str, command: &str) -> u64 {
    let client = redis::Client::open(url).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

/// A claim looks for orphans (jobs whose worker went quiet) only when a pass over the pending list
/// is due: every quarter lease, at most a second apart; looking on every claim cost Redis more
/// than the claim itself. An orphan is still found once its lease has run out.
#[tokio::test]
async fn redis_claims_look_for_orphans_once_a_quarter_lease() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "orphans")
        .await
        .expect("connect");
    let lease = Duration::from_millis(400);
    let lost = run("a", None);
    store
        .accept(&delivery(None, vec![lost.clone()]))
        .await
        .expect("accept");
    assert_eq!(
        store.claim("quiet", 1, lease).await.expect("claim").len(),
        1
    );
    for _ in 0..20 {
        assert!(
            store
                .claim("busy", 1, lease)
                .await
                .expect("claim")
                .is_empty()
        );
    }
    assert_eq!(
        redis_calls(&redis.url(), "xautoclaim").await,
        1,
        "21 claims within a quarter lease look for orphans once"
    );
    tokio::time::sleep(lease + lease / 4).await;
    let again = store.claim("busy", 1, lease).await.expect("claim");
    assert_eq!(again.len(), 1, "the orphan is found: {again:?}");
    assert_eq!(again[0].run_id, lost.run_id);
    assert_eq!(again[0].deliveries, 2);
}

#[tokio::test]
async fn a_run_opened_on_redis_is_written_without_reading_its_journal_head_again() {
    let redis = RedisServer::start();
    // The run is written by one process and opened by another, which has seen none of it.
    let writer = RedisStore::connect(&redis.url(), "heads")
        .await
        .expect("connect");
    let opener = RedisStore::connect(&redis.url(), "heads")
        .await
        .expect("connect");
    let accepted = run("a", None);
    writer
        .accept(&delivery(None, vec![accepted.clone()]))
        .await
        .expect("accept");
    let id = &accepted.run_id;
    let recovered = |n: u64| RunEvent::RunRecovered {
        deliveries: n as u32,
        at: n,
    };
    writer.append(id, &recovered(1)).await.expect("append");
    let opened = opener.open_run(id, "w1", LEASE).await.expect("open");
    assert!(matches!(opened, OpenedRun::Locked { .. }), "{opened:?}");
    let reads = redis_calls(&redis.url(), "xrevrange").await;
    opener.append(id, &recovered(2)).await.expect("append");
    // One read: the chain script's own check of the head, not another before it.
    assert_eq!(redis_calls(&redis.url(), "xrevrange").await, reads + 1);
    let records = opener.audit_records(id).await.expect("records");
    assert_eq!(store::audit::verify(id, &records), Ok(3));
    // A head that moved after the open is found by the write itself.
    writer.append(id, &recovered(3)).await.expect("append");
    opener.append(id, &recovered(4)).await.expect("append");
    let records = opener.audit_records(id).await.expect("records");
    assert_eq!(store::audit::verify(id, &records), Ok(5));
}

/// Problems `verify_store` reports, as (chain, position, words of the reason).
async fn problems(store: &dyn Store) -> Vec<(String, usize, String)> {
    store::audit::verify_store(store)
        .await
        .expect("verify")
        .problems
        .into_iter()
        .map(|broken| (broken.run_id, broken.position, broken.reason))
        .collect()
}

fn api_call(n: u16) -> store::TrailEntry {
    store::TrailEntry::ApiCall {
        actor: "oncall".into(),
        role: "responder".into(),
        method: "POST".into(),
        path: "/api/v1/runs/x/cancel".into(),
        status: n,
        at: 1,
    }
}

/// What `journal_of_four` twice and one API call leave: 5 trail records, 2 runs of 4 records,
/// both sealed, nothing broken.
async fn assert_two_sealed_runs_and_a_call(store: &dyn Store) {
    let report = store::audit::verify_store(store).await.expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        (
            report.trail_records,
            report.runs,
            report.records,
            report.sealed
        ),
        (5, 2, 8, 2)
    );
}

#[tokio::test]
async fn the_whole_trail_verifies_and_a_cut_tail_a_deleted_run_or_an_edited_trail_is_found() {
    // Redis.
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "trail")
        .await
        .expect("connect");
    let (cut, deleted) = (journal_of_four(&store).await, journal_of_four(&store).await);
    store.trail_append(&api_call(200)).await.expect("trail");
    assert_two_sealed_runs_and_a_call(&store).await;
    let client = redis::Client::open(redis.url()).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let last: redis::streams::StreamRangeReply = redis::AsyncCommands::xrevrange_count(
        &mut raw,
        format!("trail:run:{cut}:events"),
        "+",
        "-",
        1,
    )
    .await
    .expect("last");
    let _: () = redis::AsyncCommands::xdel(
        &mut raw,
        format!("trail:run:{cut}:events"),
        &[&last.ids[0].id],
    )
    .await
    .expect("cut");
    let _: () = redis::AsyncCommands::del(
        &mut raw,
        &[
            format!("trail:run:{deleted}"),
            format!("trail:run:{deleted}:events"),
        ],
    )
    .await
    .expect("delete");
    let _: () = redis::AsyncCommands::zrem(&mut raw, "trail:runs", &deleted)
        .await
        .expect("delete");
    let mut found = problems(&store).await;
    found.sort();
    let mut expected = vec![(cut.clone(), 4), (deleted.clone(), 1)];
    expected.sort();
    assert_eq!(
        found
            .iter()
            .map(|(id, at, _)| (id.clone(), *at))
            .collect::<Vec<_>>(),
        expected,
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(_, _, why)| why.contains("cut from its end")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(_, _, why)| why.contains("gone from the store")),
        "{found:?}"
    );
    tamper_redis(&redis.url(), "trail:trail", &Tamper::Edit(3)).await;
    let found = problems(&store).await;
    assert!(
        found.contains(&(
            "trail".into(),
            4,
            "its content does not match its hash: it was edited".into()
        )),
        "{found:?}"
    );

    // SQLite.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("riposte.db");
    let store = SqliteStore::open(&path, Synchronous::Normal).expect("open");
    let (cut, deleted) = (journal_of_four(&store).await, journal_of_four(&store).await);
    store.trail_append(&api_call(200)).await.expect("trail");
    assert_two_sealed_runs_and_a_call(&store).await;
    let raw = rusqlite::Connection::open(&path).expect("open");
    raw.execute(
        "DELETE FROM run_events WHERE run_id = ?1 AND seq = 4",
        rusqlite::params![cut],
    )
    .expect("cut");
    raw.execute(
        "DELETE FROM run_events WHERE run_id = ?1",
        rusqlite::params![deleted],
    )
    .expect("delete");
    raw.execute(
        "DELETE FROM runs WHERE run_id = ?1",
        rusqlite::params![deleted],
    )
    .expect("delete");
    let mut found: Vec<_> = problems(&store)
        .await
        .into_iter()
        .map(|(id, at, _)| (id, at))
        .collect();
    found.sort();
    let mut expected = vec![(cut, 4), (deleted, 1)];
    expected.sort();
    assert_eq!(found, expected);
    raw.execute(
        "UPDATE trail SET entry = replace(entry, '200', '403') WHERE seq = 5",
        [],
    )
    .expect("edit");
    assert!(
        problems(&store)
            .await
            .iter()
            .any(|(id, at, why)| id == "trail" && *at == 5 && why.contains("edited"))
    );
}

/// The run record's columns (its playbook, its event) are covered by the run's first record:
/// editing either is found, on both stores.
#[tokio::test]
async fn editing_a_run_records_playbook_or_event_is_found() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "columns")
        .await
        .expect("connect");
    let (event_edited, playbook_edited) =
        (journal_of_four(&store).await, journal_of_four(&store).await);
    let client = redis::Client::open(redis.url()).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    for (run_id, field, value) in [
        (&event_edited, "event", r#"{"ip":"10.0.0.1"}"#),
        (&playbook_edited, "playbook", "b"),
    ] {
        let _: () =
            redis::AsyncCommands::hset(&mut raw, format!("columns:run:{run_id}"), field, value)
                .await
                .expect("edit");
    }
    assert_columns_edited(&store, &event_edited, &playbook_edited).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("riposte.db");
    let store = SqliteStore::open(&path, Synchronous::Normal).expect("open");
    let (event_edited, playbook_edited) =
        (journal_of_four(&store).await, journal_of_four(&store).await);
    let raw = rusqlite::Connection::open(&path).expect("open");
    raw.execute(
        r#"UPDATE runs SET event = '{"ip":"10.0.0.1"}' WHERE run_id = ?1"#,
        rusqlite::params![event_edited],
    )
    .expect("edit");
    raw.execute(
        "UPDATE runs SET playbook = 'b' WHERE run_id = ?1",
        rusqlite::params![playbook_edited],
    )
    .expect("edit");
    assert_columns_edited(&store, &event_edited, &playbook_edited).await;
}

async fn assert_columns_edited(store: &dyn Store, event_edited: &str, playbook_edited: &str) {
    let mut found = problems(store).await;
    found.sort();
    let mut expected: Vec<(String, usize, String)> = [event_edited, playbook_edited]
        .iter()
        .map(|run_id| {
            (
                (*run_id).to_owned(),
                1,
                "the run record's playbook or event is not what was accepted: the record was edited"
                    .to_owned(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn runs_are_listed_newest_first_filtered_by_playbook_and_time_and_paged() {
    for backend in backends().await {
        let store = &backend.store;
        let mut accepted = Vec::new();
        // Three runs share a millisecond: paging must neither skip nor repeat them.
        for (n, at) in [1_000, 2_000, 2_000, 2_000, 3_000].into_iter().enumerate() {
            let new = run(if n % 2 == 0 { "block" } else { "notify" }, None);
            let mut one = delivery(None, vec![new.clone()]);
            one.received_at = at;
            store.accept(&one).await.expect("accept");
            accepted.push((at, new.run_id, new.playbook));
        }
        let query = |limit| store::RunQuery {
            limit,
            ..Default::default()
        };
        let all: Vec<String> = store
            .list_runs(&query(10))
            .await
            .expect("list")
            .into_iter()
            .map(|record| record.run_id)
            .collect();
        let mut newest_first = accepted.clone();
        newest_first.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        let expected: Vec<String> = newest_first.iter().map(|(_, id, _)| id.clone()).collect();
        assert_eq!(all, expected, "{}", backend.name);

        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_runs(&store::RunQuery {
                    after: after.clone(),
                    ..query(2)
                })
                .await
                .expect("list");
            let Some(last) = page.last() else { break };
            after = Some((last.accepted_at, last.run_id.clone()));
            paged.extend(page.into_iter().map(|record| record.run_id));
        }
        assert_eq!(paged, expected, "{}", backend.name);

        let blocks = store
            .list_runs(&store::RunQuery {
                playbook: Some("block".into()),
                since: Some(1_500),
                ..query(10)
            })
            .await
            .expect("list");
        let mut wanted: Vec<&String> = accepted
            .iter()
            .filter(|(at, _, playbook)| playbook == "block" && *at >= 1_500)
            .map(|(_, id, _)| id)
            .collect();
        wanted.sort_by(|a, b| b.cmp(a));
        let got: Vec<&String> = blocks.iter().map(|record| &record.run_id).collect();
        assert_eq!(got.len(), 2, "{}", backend.name);
        assert_eq!(
            got.iter().collect::<HashSet<_>>(),
            wanted.iter().collect::<HashSet<_>>(),
            "{}",
            backend.name
        );
        let until = store
            .list_runs(&store::RunQuery {
                until: Some(1_000),
                ..query(10)
            })
            .await
            .expect("list");
        assert_eq!(until.len(), 1, "{}", backend.name);
    }
}

#[tokio::test]
async fn the_activity_stream_holds_every_record_of_every_run_in_the_order_stored() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let (first, second) = (journal_of_four(store).await, journal_of_four(store).await);
        // The first run again after the second: the stream is in the order stored, not by run.
        let again = RunEvent::RunRecovered {
            deliveries: 2,
            at: 5,
        };
        store.append(&first, &again).await.expect("append");
        // A trail entry is not run activity.
        store.trail_append(&api_call(200)).await.expect("trail");
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .activity_page(after.as_deref(), 3)
                .await
                .expect("activity");
            assert!(page.records.len() <= 3, "{}", backend.name);
            seen.extend(page.records);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let of = |run_id: &String, records: Vec<store::AuditRecord>| -> Vec<_> {
            records
                .into_iter()
                .map(|record| store::ActivityRecord {
                    run_id: run_id.clone(),
                    record,
                })
                .collect()
        };
        let mut first_records = store.audit_records(&first).await.expect("records");
        let fifth = first_records.split_off(4);
        let second_records = store.audit_records(&second).await.expect("records");
        let expected = [
            of(&first, first_records),
            of(&second, second_records),
            of(&first, fifth),
        ]
        .concat();
        assert_eq!(seen, expected, "{}", backend.name);
        // The last page's cursor reads only what comes later: nothing yet, then a new record.
        let end = after.expect("a cursor after the last record");
        let later = store.activity_page(Some(&end), 3).await.expect("activity");
        assert!(later.records.is_empty(), "{}", backend.name);
        store.append(&second, &again).await.expect("append");
        let later = store.activity_page(Some(&end), 3).await.expect("activity");
        assert_eq!(
            later
                .records
                .iter()
                .map(|a| (&a.run_id, a.record.seq))
                .collect::<Vec<_>>(),
            [(&second, 5)],
            "{}",
            backend.name
        );
        let bad = store.activity_page(Some("not-a-cursor"), 3).await;
        assert!(
            matches!(bad, Err(store::Error::Cursor(ref cursor)) if cursor == "not-a-cursor"),
            "{}: {bad:?}",
            backend.name
        );
    }
}

#[tokio::test]
async fn redis_keeps_only_the_newest_activity_when_bounded() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "bounded")
        .await
        .expect("connect")
        .with_activity_max_len(1);
    let mut last = String::new();
    for _ in 0..300 {
        last = journal_of_four(&store).await;
    }
    let page = store.activity_page(None, 500).await.expect("activity");
    // Trimming is by whole stream nodes (100 entries by default), so "about 1" is under 200,
    // and what is kept is the newest: it ends with the last run's last record.
    assert!(
        !page.records.is_empty() && page.records.len() < 200,
        "{} records kept",
        page.records.len()
    );
    let newest = page.records.last().expect("a record");
    let last_run = store.audit_records(&last).await.expect("records");
    assert_eq!(
        (&newest.run_id, &newest.record),
        (&last, last_run.last().expect("records"))
    );
    // The runs' own journals are complete.
    let report = store::audit::verify_store(&store).await.expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.runs, report.records), (300, 1200));
}

#[tokio::test]
async fn redis_over_tls_trusts_only_the_configured_authority() {
    let redis = RedisServer::start_tls();
    let ca = std::fs::read(redis.ca_file()).expect("the test authority's certificate");
    let store = RedisStore::connect_trusting(&redis.url(), "tls", Some(ca))
        .await
        .expect("a TLS connection verified against the test authority");
    let accepted = run("a", None);
    store
        .accept(&delivery(None, vec![accepted.clone()]))
        .await
        .expect("accept over TLS");
    assert!(
        store.run(&accepted.run_id).await.expect("read").is_some(),
        "the run is stored"
    );
    // The public roots do not vouch for this server, and plain TCP is refused. Connecting
    // retries a few times before giving up (about 10 s): both at once.
    let (tls_url, plain_url) = (
        redis.url(),
        redis.url().replacen("rediss://", "redis://", 1),
    );
    let (untrusted, plain) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            RedisStore::connect(&tls_url, "tls"),
            RedisStore::connect(&plain_url, "tls")
        )
    })
    .await
    .expect("answers in time");
    let error = untrusted
        .expect_err("an unknown authority must be refused")
        .to_string();
    assert!(error.contains("certificate"), "{error}");
    assert!(plain.is_err(), "plain TCP to a TLS-only Redis");
}

#[tokio::test]
async fn the_trail_tail_is_its_newest_records_newest_first() {
    for backend in backends().await {
        let store = backend.store.as_ref();
        let name = backend.name;
        assert!(
            store.trail_tail(3).await.expect("empty").is_empty(),
            "{name}"
        );
        for status in 1..=5 {
            store.trail_append(&api_call(status)).await.expect("trail");
        }
        let tail = store.trail_tail(3).await.expect("tail");
        let statuses: Vec<u16> = tail
            .iter()
            .map(|record| match serde_json::from_str(&record.event) {
                Ok(store::TrailEntry::ApiCall { status, .. }) => status,
                other => panic!("{name}: {other:?}"),
            })
            .collect();
        assert_eq!(statuses, [5, 4, 3], "{name}");
        let page = store.trail_page(None, 10).await.expect("page");
        let oldest_first: Vec<_> = tail.iter().rev().map(|record| &record.hash).collect();
        let page_tail: Vec<_> = page.records[2..]
            .iter()
            .map(|record| &record.hash)
            .collect();
        assert_eq!(
            oldest_first, page_tail,
            "{name}: the same records as the page's last three"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_rate_admits_exactly_its_calls_among_concurrent_takers() {
    use store::limits::{Limit, Outcome};
    let limit = Limit {
        rate: Some((10, 60_000)),
        concurrency: Some(25),
        breaker: None,
    };
    for backend in backends().await {
        let now = store::now_millis();
        let mut takers = Vec::new();
        for taker in 0..8 {
            let (store, limit) = (Arc::clone(&backend.store), limit.clone());
            takers.push(tokio::spawn(async move {
                let mut taken = 0;
                for call in 0..5 {
                    let holder = format!("t{taker}-{call}");
                    let answer = store
                        .take_slot("plugin:x", &holder, &limit, now, now + 60_000)
                        .await
                        .expect("take");
                    if answer.is_ok() {
                        taken += 1;
                        store
                            .give_slot_back("plugin:x", &holder, &limit, Outcome::Succeeded, now)
                            .await
                            .expect("give back");
                    }
                }
                taken
            }));
        }
        let mut taken = 0;
        for taker in takers {
            taken += taker.await.expect("taker");
        }
        assert_eq!(
            taken, 10,
            "{}: 40 tries, a rate of 10 a minute",
            backend.name
        );
        let held = backend
            .store
            .take_slot("plugin:x", "late", &limit, now, now + 60_000)
            .await
            .expect("take")
            .expect_err("over the rate");
        assert_eq!(held.until, now + 6_000, "{}", backend.name);
        // Another key is another limit.
        assert!(
            backend
                .store
                .take_slot("plugin:y", "first", &limit, now, now + 60_000)
                .await
                .expect("take")
                .is_ok()
        );
    }
}

/// Group commit: SQLite operations that arrive together share one transaction, yet each stays
/// all-or-nothing (one that fails leaves nothing of itself and fails no other), and each answer
/// still means "stored": everything answered is in the file when it is opened again.
#[tokio::test]
async fn sqlite_operations_committed_together_stay_separate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("riposte.db");
    let store = SqliteStore::open(&path, Synchronous::Normal).expect("open");
    let taken = run("a", None);
    store
        .accept(&delivery(Some("first"), vec![taken.clone()]))
        .await
        .expect("accept");
    // 200 deliveries at once. Every tenth reuses the stored run's id: its dedupe key is written,
    // then its run's insert fails.
    let deliveries: Vec<Delivery> = (0..200)
        .map(|n| {
            let mut new = run("a", Some((&format!("key-{n}"), 60_000)));
            if n % 10 == 0 {
                new.run_id = taken.run_id.clone();
            }
            delivery(Some(&format!("d{n}")), vec![new])
        })
        .collect();
    let mut sent = tokio::task::JoinSet::new();
    for (n, delivery) in deliveries.iter().cloned().enumerate() {
        let store = store.clone();
        sent.spawn(async move { (n, store.accept(&delivery).await) });
    }
    while let Some(answer) = sent.join_next().await {
        let (n, result) = answer.expect("task");
        assert_eq!(result.is_err(), n % 10 == 0, "delivery {n}: {result:?}");
    }
    drop(store);

    let store = SqliteStore::open(&path, Synchronous::Normal).expect("reopen");
    for (n, delivery) in deliveries.iter().enumerate().filter(|(n, _)| n % 10 != 0) {
        let stored = store.run(&delivery.runs[0].run_id).await.expect("read");
        assert!(stored.is_some(), "delivery {n} was answered as stored");
    }
    // A failed delivery left nothing: sent again with a fresh run, neither its delivery id nor
    // its dedupe key is known.
    let again = delivery(Some("d10"), vec![run("a", Some(("key-10", 60_000)))]);
    let admissions = store.accept(&again).await.expect("accept again");
    assert_eq!(admissions.len(), 1);
    assert!(!admissions[0].duplicate, "{admissions:?}");
    assert_eq!(admissions[0].run_id, again.runs[0].run_id);
    assert_eq!(store.queue_depth().await.expect("depth"), 1 + 180 + 1);
}

#[tokio::test]
async fn worker_processes_sealing_runs_at_once_all_land_on_one_trail() {
    // Each process seals the runs it finishes to the one global trail: under contention every
    // seal still lands (none fails for a trail that "kept changing"), and the trail verifies.
    const PROCESSES: usize = 8;
    const RUNS_EACH: usize = 90;
    let redis = RedisServer::start();
    let mut processes = Vec::new();
    for _ in 0..PROCESSES {
        let store = RedisStore::connect(&redis.url(), "seals")
            .await
            .expect("connect");
        processes.push(Arc::new(store));
    }
    let runs: Vec<NewRun> = (0..PROCESSES * RUNS_EACH)
        .map(|_| run("seal", None))
        .collect();
    processes[0]
        .accept(&delivery(None, runs.clone()))
        .await
        .expect("accept");
    let mut writers = Vec::new();
    for (index, chunk) in runs.chunks(RUNS_EACH / 3).enumerate() {
        let store = Arc::clone(&processes[index % PROCESSES]);
        let run_ids: Vec<String> = chunk.iter().map(|run| run.run_id.clone()).collect();
        writers.push(tokio::spawn(async move {
            for run_id in run_ids {
                let finished = RunEvent::RunFinished {
                    status: RunStatus::Succeeded,
                    outputs: serde_json::json!({}),
                    error: None,
                    at: 1,
                };
                store.append(&run_id, &finished).await?;
            }
            Ok::<_, runner::Error>(())
        }));
    }
    for writer in writers {
        writer.await.expect("writer").expect("every seal lands");
    }
    let report = store::audit::verify_store(processes[1].as_ref())
        .await
        .expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let all = PROCESSES * RUNS_EACH;
    assert_eq!((report.trail_records, report.sealed), (all, all));
}

#[tokio::test]
async fn redis_writes_the_journals_of_runs_advancing_together_in_shared_script_calls() {
    // A worker advances many runs at once: their journal writes of one moment go to Redis in one
    // script call (group commit), and each still lands on its own chain, sealed on the trail.
    const RUNS: usize = 40;
    const WRITES_EACH: usize = 4;
    let redis = RedisServer::start();
    let store = Arc::new(
        RedisStore::connect(&redis.url(), "group")
            .await
            .expect("connect"),
    );
    let runs: Vec<NewRun> = (0..RUNS).map(|_| run("group", None)).collect();
    store
        .accept(&delivery(None, runs.clone()))
        .await
        .expect("accept");
    let calls_before = redis_calls(&redis.url(), "evalsha").await;
    let mut writers = Vec::new();
    for run in &runs {
        let store = Arc::clone(&store);
        let run_id = run.run_id.clone();
        writers.push(tokio::spawn(async move {
            for n in 1..WRITES_EACH {
                let recovered = RunEvent::RunRecovered {
                    deliveries: n as u32,
                    at: n as u64,
                };
                store.append(&run_id, &recovered).await?;
            }
            let finished = RunEvent::RunFinished {
                status: RunStatus::Succeeded,
                outputs: serde_json::json!({}),
                error: None,
                at: 9,
            };
            store.append(&run_id, &finished).await
        }));
    }
    for writer in writers {
        writer.await.expect("writer").expect("every write lands");
    }
    let calls = redis_calls(&redis.url(), "evalsha").await - calls_before;
    let writes = (RUNS * WRITES_EACH) as u64;
    assert!(
        calls <= writes / 4,
        "{writes} writes of {RUNS} runs took {calls} script calls"
    );
    let report = store::audit::verify_store(store.as_ref())
        .await
        .expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.trail_records, report.sealed), (RUNS, RUNS));
    for run in &runs {
        let records = store.audit_records(&run.run_id).await.expect("records");
        // The accepted record, then this test's writes.
        assert_eq!(
            store::audit::verify(&run.run_id, &records),
            Ok(1 + WRITES_EACH)
        );
    }
}
