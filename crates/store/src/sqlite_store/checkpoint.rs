//! Copying the WAL back into the database file, on a thread and connection of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages. It
//! writes those pages into the file and syncs twice, about 8 ms on our machines, and every
//! operation queued behind that commit waits for it: that wait was the embedded store's accept
//! p99. Here the writer never checkpoints. Passive checkpoints copy the pages while the writer
//! goes on writing.
//!
//! The WAL starts over from its beginning only when a write begins with every frame already
//! copied, which a pause of the writer allows and a writer that never pauses never does. So once
//! the WAL passes [`Restart::when_calm`] frames, a RESTART checkpoint holds writers back for the
//! frames written since the last passive one and its syncs, and lets the WAL start over. That
//! hold-up, 4–11 ms on our machines, stalls every accept in flight at once: during a burst of
//! webhooks it set the API's accept p99 (docs/server.md, issue 19, fifteenth round). So while
//! accepts keep arriving the restart waits for the burst's calm, up to [`Restart::at_the_latest`]
//! frames, past which it happens anyway; the price is disk, as the WAL file keeps the largest
//! size it reached. Litestream checkpoints the same way, with a 10,000-page limit.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Error;

/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// When the checkpointer makes the WAL start over, in WAL frames (pages).
#[derive(Debug, Clone, Copy)]
pub(super) struct Restart {
    /// Past this, when no accept arrived since the last look.
    pub(super) when_calm: i64,
    /// Past this, whatever arrives.
    pub(super) at_the_latest: i64,
}

impl Restart {
    /// About 40 MiB of WAL in a calm, 160 MiB under a burst that never pauses.
    pub(super) const AS_SHIPPED: Restart = Restart {
        when_calm: 10_000,
        at_the_latest: 40_000,
    };
}

/// The checkpointer's connection, when it makes the WAL start over, and how it tells a burst.
pub(super) struct Checkpointer<A> {
    connection: Connection,
    restart: Restart,
    /// Counts the operations that wait for an answer (the prompt lane's): a burst while it grows.
    arrivals: A,
    arrivals_seen: u64,
}

/// A busy handler: waits for a lock another connection holds, up to 5 s, in steps of 100 µs.
/// SQLite's own busy timeout sleeps ever longer, up to 100 ms at a time, so a lock held for two
/// milliseconds cost a waiter up to eight.
pub(super) fn wait_for_lock(tries: i32) -> bool {
    std::thread::sleep(Duration::from_micros(100));
    tries < 50_000
}

impl<A: Fn() -> u64 + Send + 'static> Checkpointer<A> {
    /// Starts checkpointing the database at `path` (in WAL mode), restarting its WAL as `restart`
    /// says while `arrivals` counts what arrives; it stops when the returned sender is dropped.
    pub(super) fn start(
        path: &Path,
        restart: Restart,
        arrivals: A,
    ) -> Result<mpsc::Sender<()>, Error> {
        let connection = Connection::open(path)?;
        connection.busy_handler(Some(wait_for_lock))?;
        let arrivals_seen = arrivals();
        let mut checkpointer = Checkpointer {
            connection,
            restart,
            arrivals,
            arrivals_seen,
        };
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("riposte-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(error) = checkpointer.checkpoint() {
                        tracing::warn!(%error, "Could not checkpoint the SQLite WAL.");
                    }
                }
            })
            .map_err(|error| {
                Error::Config(format!("cannot start the SQLite checkpointer: {error}"))
            })?;
        Ok(stop)
    }

    /// Copies what it can of the WAL into the file, and makes the WAL start over when `restart`
    /// says so.
    fn checkpoint(&mut self) -> Result<(), Error> {
        let frames = self.run("PRAGMA wal_checkpoint(PASSIVE)")?;
        let arrived = (self.arrivals)();
        let calm = arrived == self.arrivals_seen;
        self.arrivals_seen = arrived;
        if frames >= self.restart.at_the_latest || (calm && frames >= self.restart.when_calm) {
            self.run("PRAGMA wal_checkpoint(RESTART)")?;
        }
        Ok(())
    }

    /// Runs a checkpoint pragma; gives back how many frames the WAL held.
    fn run(&self, pragma: &str) -> Result<i64, Error> {
        // The row: whether the checkpoint was kept from finishing, the WAL's frames, and how
        // many of them are in the file now.
        Ok(self.connection.query_row(pragma, [], |row| row.get(1))?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use rusqlite::params;

    use super::*;

    const PAGE: u64 = 4096;

    /// A writer like the store's: WAL, no checkpoints of its own, the fine busy handler.
    fn writer(path: &Path) -> Connection {
        let connection = Connection::open(path).expect("open");
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .expect("WAL");
        connection
            .pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no autocheckpoint");
        connection
            .busy_handler(Some(wait_for_lock))
            .expect("busy handler");
        connection
            .execute_batch("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
            .expect("table");
        connection
    }

    /// Inserts a page-sized row per transaction, without pausing, `at_least` times and for at
    /// least a second (twenty looks of the checkpointer), calling `on_insert` after each; gives
    /// back how many it inserted and the largest the WAL file grew.
    fn write_without_pause(
        writer: &Connection,
        wal: &Path,
        at_least: u64,
        mut on_insert: impl FnMut(),
    ) -> (u64, u64) {
        let blob = vec![7u8; PAGE as usize];
        let (mut inserted, mut largest) = (0, 0);
        let start = Instant::now();
        while inserted < at_least || start.elapsed() < Duration::from_secs(1) {
            writer
                .execute("INSERT INTO blobs (data) VALUES (?1)", params![blob])
                .expect("insert");
            on_insert();
            inserted += 1;
            largest = largest.max(std::fs::metadata(wal).map_or(0, |meta| meta.len()));
        }
        (inserted, largest)
    }

    /// Whether the WAL stayed under a third of what the inserts wrote to it (each at least two
    /// pages: the row overflows one). Without restarts it holds all of it; with them, about
    /// what is written between two looks of the checkpointer, however fast the writer is.
    fn stayed_small(inserted: u64, largest: u64) -> bool {
        largest * 3 < inserted * 2 * PAGE
    }

    #[test]
    fn the_wal_starts_over_while_the_writer_never_pauses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let writer = writer(&path);
        let restart = Restart {
            when_calm: 64,
            at_the_latest: i64::MAX,
        };
        let stop = Checkpointer::start(&path, restart, || 0).expect("checkpointer");
        let (inserted, largest) =
            write_without_pause(&writer, &dir.path().join("wal.db-wal"), 3_000, || ());
        drop(stop);
        assert!(
            stayed_small(inserted, largest),
            "the WAL grew to {largest} bytes over {inserted} inserts"
        );
        let kept: u64 = writer
            .query_row("SELECT count(*) FROM blobs", [], |row| row.get(0))
            .expect("count");
        assert_eq!(kept, inserted);
        let check: String = Connection::open(&path)
            .expect("reopen")
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok");
    }

    /// How many times the WAL has started over: its header's checkpoint sequence number.
    fn wal_restarts(wal: &Path) -> u32 {
        let mut header = [0u8; 16];
        std::fs::File::open(wal)
            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
            .expect("the WAL's header");
        u32::from_be_bytes([header[12], header[13], header[14], header[15]])
    }

    #[test]
    fn while_accepts_keep_arriving_the_wal_starts_over_only_past_the_latest_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let wal = dir.path().join("wal.db-wal");
        let writer = writer(&path);
        let arrivals = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&arrivals);
        let latest: i64 = 4_096;
        let restart = Restart {
            when_calm: 64,
            at_the_latest: latest,
        };
        let stop = Checkpointer::start(&path, restart, move || counted.load(Ordering::Relaxed))
            .expect("checkpointer");
        // An accept arrives with every insert, and the inserts between two restarts are counted.
        let (mut restarts, mut since_restart, mut fewest_between) = (0, 0, u64::MAX);
        write_without_pause(&writer, &wal, 3 * latest as u64 / 2, || {
            arrivals.fetch_add(1, Ordering::Relaxed);
            since_restart += 1;
            let now = wal_restarts(&wal);
            if now != restarts {
                restarts = now;
                fewest_between = fewest_between.min(since_restart);
                since_restart = 0;
            }
        });
        drop(stop);
        assert!(restarts > 0, "the WAL never started over");
        // Each insert writes two or three frames. Restarting at the first limit, the WAL would
        // start over at every look of the checkpointer (about every 200 inserts on our machines).
        assert!(
            fewest_between >= latest as u64 / 4,
            "the WAL started over after {fewest_between} inserts"
        );
    }

    #[test]
    fn passive_checkpoints_alone_let_the_wal_grow_under_such_a_writer() {
        // The control for the test above: it is the restart that bounds the WAL.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let writer = writer(&path);
        let never = Restart {
            when_calm: i64::MAX,
            at_the_latest: i64::MAX,
        };
        let stop = Checkpointer::start(&path, never, || 0).expect("checkpointer");
        let (inserted, largest) =
            write_without_pause(&writer, &dir.path().join("wal.db-wal"), 3_000, || ());
        drop(stop);
        assert!(
            !stayed_small(inserted, largest),
            "the WAL stayed at {largest} bytes over {inserted} inserts"
        );
    }
}
