//! Copying the WAL back into the database file, on a thread and connection of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages. It
//! writes those pages into the file and syncs twice, about 8 ms on our machines, and every
//! operation queued behind that commit waits for it: that wait was the embedded store's accept
//! p99. Here the writer never checkpoints. Passive checkpoints copy the pages while the writer
//! goes on writing.
//!
//! The WAL starts over from its beginning only when a write begins with every frame already
//! copied, and a writer that never pauses never allows that. So once the WAL passes
//! [`WAL_RESTART_FRAMES`], a RESTART checkpoint holds writers back for the few frames written
//! since the last passive one (about 2–3 ms here, a few times a minute under load) and lets the
//! WAL start over. Litestream checkpoints the same way, with the same 10,000-page limit.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Error;

/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// WAL frames (pages) past which the checkpointer makes the WAL start over: about 40 MiB.
pub(super) const WAL_RESTART_FRAMES: i64 = 10_000;

/// The checkpointer's connection and when it makes the WAL start over.
pub(super) struct Checkpointer {
    connection: Connection,
    restart_frames: i64,
}

/// A busy handler: waits for a lock another connection holds, up to 5 s, in steps of 100 µs.
/// SQLite's own busy timeout sleeps ever longer, up to 100 ms at a time, so a lock held for two
/// milliseconds cost a waiter up to eight.
pub(super) fn wait_for_lock(tries: i32) -> bool {
    std::thread::sleep(Duration::from_micros(100));
    tries < 50_000
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (in WAL mode), restarting its WAL past
    /// `restart_frames`; it stops when the returned sender is dropped.
    pub(super) fn start(path: &Path, restart_frames: i64) -> Result<mpsc::Sender<()>, Error> {
        let connection = Connection::open(path)?;
        connection.busy_handler(Some(wait_for_lock))?;
        let checkpointer = Checkpointer {
            connection,
            restart_frames,
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

    fn checkpoint(&self) -> Result<(), Error> {
        let frames = self.run("PRAGMA wal_checkpoint(PASSIVE)")?;
        if frames >= self.restart_frames {
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

    /// Inserts a page-sized row per transaction, without pausing, 3,000 times and for at least
    /// a second (twenty looks of the checkpointer); gives back how many it inserted and the
    /// largest the WAL file grew.
    fn write_without_pause(writer: &Connection, wal: &Path) -> (u64, u64) {
        let blob = vec![7u8; PAGE as usize];
        let (mut inserted, mut largest) = (0, 0);
        let start = Instant::now();
        while inserted < 3_000 || start.elapsed() < Duration::from_secs(1) {
            writer
                .execute("INSERT INTO blobs (data) VALUES (?1)", params![blob])
                .expect("insert");
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
        let stop = Checkpointer::start(&path, 64).expect("checkpointer");
        let (inserted, largest) = write_without_pause(&writer, &dir.path().join("wal.db-wal"));
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

    #[test]
    fn passive_checkpoints_alone_let_the_wal_grow_under_such_a_writer() {
        // The control for the test above: it is the restart that bounds the WAL.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let writer = writer(&path);
        let stop = Checkpointer::start(&path, i64::MAX).expect("checkpointer");
        let (inserted, largest) = write_without_pause(&writer, &dir.path().join("wal.db-wal"));
        drop(stop);
        assert!(
            !stayed_small(inserted, largest),
            "the WAL stayed at {largest} bytes over {inserted} inserts"
        );
    }
}
