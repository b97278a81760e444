//! Scheduled triggers across real processes sharing one Redis: every tick fires one run, however
//! many processes look at the clock, and a process that starts late catches up once.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use store::{RunQuery, Store};
use test_support::process::Launcher;
use test_support::{RedisServer, free_port};

/// `riposte worker` processes on one Redis, with one scheduled playbook.
struct Workers {
    launcher: Launcher,
    processes: Vec<Child>,
    redis: RedisServer,
    _dir: tempfile::TempDir,
}

impl Workers {
    fn new(playbook: &str) -> Workers {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("playbooks")).expect("dir");
        std::fs::write(dir.path().join("playbooks/scheduled.yaml"), playbook).expect("playbook");
        std::fs::write(
            dir.path().join("riposte.yaml"),
            "playbooks: playbooks\ndata_dir: data\nredis: { url_env: SCHEDULE_REDIS_URL, prefix: sched }\nworkers: { concurrency: 4, poll_interval: 20ms }\n",
        )
        .expect("config");
        let launcher = Launcher {
            binary: env!("CARGO_BIN_EXE_riposte").into(),
            dir: dir.path().to_owned(),
            env: BTreeMap::from([("SCHEDULE_REDIS_URL".to_owned(), redis.url())]),
            port: free_port(),
        };
        Workers {
            launcher,
            processes: Vec::new(),
            redis,
            _dir: dir,
        }
    }

    fn start_one(&mut self) {
        self.processes.push(self.launcher.spawn("worker", 4));
    }

    /// The `schedule` part of the event of every run accepted so far.
    async fn fired(&self) -> Vec<serde_json::Value> {
        let store = store::RedisStore::connect(&self.redis.url(), "sched")
            .await
            .expect("redis");
        let runs = store
            .list_runs(&RunQuery {
                playbook: None,
                since: None,
                until: None,
                after: None,
                limit: 1_000,
            })
            .await
            .expect("runs");
        runs.into_iter()
            .map(|run| run.event["schedule"].clone())
            .collect()
    }

    /// Waits until `enough` runs were accepted, or panics with the processes' logs.
    async fn wait_for(&self, enough: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let fired = self.fired().await;
            if fired.len() >= enough {
                return fired;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {enough} runs after 30 s:\n{}",
                fired.len(),
                self.launcher.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

fn seconds(tick: &serde_json::Value) -> u64 {
    let text = tick["tick"].as_str().expect("a tick");
    humantime::parse_rfc3339(text)
        .expect("RFC 3339")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_fire_each_tick_of_a_schedule_once() {
    let mut workers = Workers::new(
        r#"
name: every-second
trigger:
  webhook: every-second
  schedule: { cron: "* * * * * *", timezone: UTC }
steps:
  - { id: note, uses: core/echo, with: { tick: "{{ trigger.schedule.tick }}" } }
"#,
    );
    workers.start_one();
    workers.start_one();
    // Both processes look at the clock four times a second; five ticks is enough to see them
    // race for every one.
    workers.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fired = workers.fired().await;
    let mut ticks: Vec<u64> = fired.iter().map(seconds).collect();
    ticks.sort_unstable();
    let distinct = {
        let mut distinct = ticks.clone();
        distinct.dedup();
        distinct
    };
    assert_eq!(ticks, distinct, "a tick fired twice: {fired:?}");
    let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
    assert_eq!(
        last - first + 1,
        ticks.len() as u64,
        "every second between the first and last tick fired: {ticks:?}"
    );
    assert!(
        fired.iter().all(|tick| tick["caught_up"] == false
            && tick["cron"] == "* * * * * *"
            && tick["timezone"] == "UTC"),
        "{fired:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_tick_is_caught_up_once_however_many_processes_start() {
    // Hourly, at the minute half an hour ago: the last tick was missed (nothing ran) and
    // `catch_up` asks for it; the next one is half an hour away.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let minute = (now - 1800) / 60 % 60;
    let mut workers = Workers::new(&format!(
        r#"
name: hourly
trigger:
  webhook: hourly
  schedule: {{ cron: "0 {minute} * * * *", catch_up: 1h }}
steps:
  - {{ id: note, uses: core/echo, with: {{ tick: "{{{{ trigger.schedule.tick }}}}" }} }}
"#
    ));
    workers.start_one();
    let fired = workers.wait_for(1).await;
    assert_eq!(fired[0]["caught_up"], true, "{fired:?}");
    let tick = seconds(&fired[0]);
    assert_eq!(tick / 60 % 60, minute, "{fired:?}");
    assert!(now - tick < 3600, "the most recent one: {fired:?}");

    // A second process starting later asks for the same tick: it is not fired again.
    workers.start_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        workers.fired().await.len(),
        1,
        "{}",
        workers.launcher.logs()
    );
}
