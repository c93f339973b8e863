//! The persistent embedding cache: vectors kept on disk across runs and shared by every
//! process that points at the same folder.
//!
//! SQLite (through `rusqlite`, built from its bundled amalgamation) in WAL mode: one file,
//! `embeddings.sqlite`, that several processes read and write at once (readers never block
//! the writer), whose transactions survive a process killed mid-write (the journal rolls an
//! interrupted write back on the next open), with no server to run. An embedded key-value
//! store (LMDB) would be faster per lookup but needs a map size chosen up front and gives
//! no SQL for `dp cache stats|clear --model`.
//!
//! A row is keyed by the same 128-bit hash as the in-memory cache (model signature,
//! preprocess signature, input bytes), so a changed model, preset or prompt can never be
//! served an old vector. Its `used` time is refreshed at most once a minute on hits (cheap
//! reads), and when the stored bytes pass the bound, the least recently used rows go first.
//! A file that is not this cache (another program's, or corrupt) is reported and moved aside
//! as `embeddings.sqlite.unreadable-<time>`, never served; an error while running turns the
//! store off for the rest of the run (every text is then computed), with a warning.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dp_spec::{ErrorCode, ModelError};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The file inside the cache folder.
pub const CACHE_FILE: &str = "embeddings.sqlite";

/// What this build writes in the `meta` table; another value is a foreign file.
const FORMAT: &str = "dp-models-embedding-cache-1";

/// How stale a row's `used` time may get before a hit refreshes it, in milliseconds.
const USED_REFRESH_MS: i64 = 60_000;

/// Where and how large the persistent cache is
/// ([`crate::ManagerBuilder::persistent_embedding_cache`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentCacheConfig {
    /// The folder holding `embeddings.sqlite` (created if missing).
    pub dir: PathBuf,
    /// The most vector bytes kept; past it, the least recently used vectors are dropped
    /// (default 1 GiB).
    pub max_bytes: u64,
}

impl PersistentCacheConfig {
    /// The cache in `dir`, 1 GiB at most.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: 1 << 30,
        }
    }
}

/// What the persistent cache holds (`dp cache stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersistentCacheStats {
    /// The cache file.
    pub path: PathBuf,
    /// Vectors stored.
    pub entries: u64,
    /// Bytes of vectors stored.
    pub bytes: u64,
    /// The bound on `bytes`.
    pub max_bytes: u64,
    /// Vectors per model name.
    pub models: std::collections::BTreeMap<String, u64>,
}

/// The on-disk store of one manager (or one `dp cache` command).
pub struct PersistentEmbeddingCache {
    path: PathBuf,
    max_bytes: u64,
    conn: Mutex<Connection>,
    /// Set after an error while running: the store is left alone from then on.
    broken: AtomicBool,
}

fn io_error(path: &Path, what: &str, err: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::Io,
        format!(
            "embedding cache {}: {what}: {err}; check the folder's permissions and free space, \
             or point --embedding-cache elsewhere",
            path.display()
        ),
    )
    .with_detail("path", path.display().to_string())
}

/// Milliseconds since the Unix epoch: the `used` clock.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl PersistentEmbeddingCache {
    /// Opens (or creates) the cache in `config.dir`. A file there that is not a cache of
    /// this format is moved aside (with a warning) and a new one started.
    ///
    /// # Errors
    /// `io` when the folder or a new file cannot be created.
    pub fn open(config: &PersistentCacheConfig) -> Result<Self, ModelError> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| io_error(&config.dir, "cannot create the folder", e))?;
        let path = config.dir.join(CACHE_FILE);
        let conn = match open_checked(&path) {
            Ok(conn) => conn,
            Err(why) => {
                let aside = path.with_file_name(format!("{CACHE_FILE}.unreadable-{}", now_ms()));
                tracing::warn!(
                    cache = %path.display(),
                    moved_to = %aside.display(),
                    reason = %why,
                    "the embedding cache file is not readable as a dp-models cache; it was moved \
                     aside and a new cache started"
                );
                std::fs::rename(&path, &aside)
                    .map_err(|e| io_error(&path, "cannot move the unreadable file aside", e))?;
                for suffix in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{suffix}", path.display()));
                    let _ignored = std::fs::remove_file(side);
                }
                open_checked(&path).map_err(|e| io_error(&path, "cannot create the cache", e))?
            }
        };
        Ok(Self {
            path,
            max_bytes: config.max_bytes,
            conn: Mutex::new(conn),
            broken: AtomicBool::new(false),
        })
    }

    /// The cache file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turns the store off after `err`, once, with a warning.
    fn give_up(&self, what: &str, err: &rusqlite::Error) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cache = %self.path.display(),
                error = %err,
                "embedding cache {what} failed; the persistent cache is off for the rest of \
                 this run (texts are computed instead)"
            );
        }
    }

    /// The vectors of `keys` that are stored (`None` for the others), refreshing the
    /// `used` time of stale hits.
    pub(crate) fn get_many(&self, keys: &[u128]) -> Vec<Option<Vec<f32>>> {
        if self.broken.load(Ordering::Relaxed) || keys.is_empty() {
            return vec![None; keys.len()];
        }
        match self.try_get_many(keys) {
            Ok(found) => found,
            Err(err) => {
                self.give_up("read", &err);
                vec![None; keys.len()]
            }
        }
    }

    fn try_get_many(&self, keys: &[u128]) -> rusqlite::Result<Vec<Option<Vec<f32>>>> {
        /// Keys per query: well under SQLite's limit of bound parameters.
        const CHUNK: usize = 256;
        let conn = self.conn();
        let now = now_ms();
        let mut found: std::collections::HashMap<[u8; 16], Vec<f32>> =
            std::collections::HashMap::with_capacity(keys.len());
        let mut stale: Vec<[u8; 16]> = Vec::new();
        // One statement per chunk of keys (`key IN (…)`), read without a write lock: a
        // hit costs a B-tree probe, not a statement and a transaction.
        for chunk in keys.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut select = conn.prepare_cached(&format!(
                "SELECT key, data, used FROM vectors WHERE key IN ({marks})"
            ))?;
            let bound: Vec<[u8; 16]> = chunk.iter().map(|k| k.to_le_bytes()).collect();
            let mut rows = select.query(rusqlite::params_from_iter(bound.iter()))?;
            while let Some(row) = rows.next()? {
                let key: Vec<u8> = row.get(0)?;
                let Ok(key) = <[u8; 16]>::try_from(key.as_slice()) else {
                    continue;
                };
                let data: Vec<u8> = row.get(1)?;
                let used: i64 = row.get(2)?;
                if let Some(vector) = decode(&data) {
                    if used < now - USED_REFRESH_MS {
                        stale.push(key);
                    }
                    found.insert(key, vector);
                }
            }
        }
        if !stale.is_empty() {
            // Best effort: a busy writer elsewhere only delays the refresh.
            let refresh = || -> rusqlite::Result<()> {
                let tx = conn.unchecked_transaction()?;
                {
                    let mut touch =
                        tx.prepare_cached("UPDATE vectors SET used = ?2 WHERE key = ?1")?;
                    for key in &stale {
                        touch.execute(params![key.as_slice(), now])?;
                    }
                }
                tx.commit()
            };
            let _refreshed = refresh();
        }
        Ok(keys
            .iter()
            .map(|k| found.remove(&k.to_le_bytes()))
            .collect())
    }

    /// Stores `rows` (key, model name, vector), then drops the least recently used vectors
    /// while the store is over its bound.
    pub(crate) fn put_many(&self, rows: &[(u128, &str, &[f32])]) {
        if self.broken.load(Ordering::Relaxed) || rows.is_empty() {
            return;
        }
        if let Err(err) = self.try_put_many(rows) {
            self.give_up("write", &err);
        }
    }

    fn try_put_many(&self, rows: &[(u128, &str, &[f32])]) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut added: i64 = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO vectors (key, model, data, used) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (key, model, vector) in rows {
                let data: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
                if insert.execute(params![key.to_le_bytes().as_slice(), model, data, now])? == 1 {
                    added = added.saturating_add(len);
                }
            }
        }
        tx.execute("UPDATE stats SET bytes = bytes + ?1", params![added])?;
        let bytes: i64 = tx.query_row("SELECT bytes FROM stats", [], |r| r.get(0))?;
        let max = i64::try_from(self.max_bytes).unwrap_or(i64::MAX);
        if bytes > max {
            // Down to 90% of the bound, so that eviction is not paid on every write.
            let target = max / 10 * 9;
            let mut left = bytes;
            let mut oldest: Vec<Vec<u8>> = Vec::new();
            {
                let mut scan = tx.prepare("SELECT key, length(data) FROM vectors ORDER BY used")?;
                let mut rows = scan.query([])?;
                while left > target {
                    let Some(row) = rows.next()? else {
                        break;
                    };
                    oldest.push(row.get(0)?);
                    left -= row.get::<_, i64>(1)?;
                }
            }
            let mut delete = tx.prepare("DELETE FROM vectors WHERE key = ?1")?;
            for key in &oldest {
                delete.execute(params![key])?;
            }
            drop(delete);
            tx.execute("UPDATE stats SET bytes = ?1", params![left.max(0)])?;
        }
        tx.commit()
    }

    /// What the cache holds.
    ///
    /// # Errors
    /// `io` when the file cannot be read.
    pub fn stats(&self) -> Result<PersistentCacheStats, ModelError> {
        let conn = self.conn();
        let read = |e: rusqlite::Error| io_error(&self.path, "cannot read the cache", e);
        let mut models = std::collections::BTreeMap::new();
        let mut entries = 0;
        {
            let mut stmt = conn
                .prepare("SELECT model, COUNT(*) FROM vectors GROUP BY model")
                .map_err(read)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(read)?;
            for row in rows {
                let (model, n) = row.map_err(read)?;
                let n = u64::try_from(n).unwrap_or(0);
                entries += n;
                models.insert(model, n);
            }
        }
        let bytes: i64 = conn
            .query_row("SELECT bytes FROM stats", [], |r| r.get(0))
            .map_err(read)?;
        Ok(PersistentCacheStats {
            path: self.path.clone(),
            entries,
            bytes: u64::try_from(bytes).unwrap_or(0),
            max_bytes: self.max_bytes,
            models,
        })
    }

    /// Removes every vector, or those of `model` only; returns how many were removed.
    ///
    /// # Errors
    /// `io` when the file cannot be written.
    pub fn clear(&self, model: Option<&str>) -> Result<u64, ModelError> {
        let mut conn = self.conn();
        let write = |e: rusqlite::Error| io_error(&self.path, "cannot clear the cache", e);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(write)?;
        let removed = match model {
            Some(model) => tx.execute("DELETE FROM vectors WHERE model = ?1", params![model]),
            None => tx.execute("DELETE FROM vectors", []),
        }
        .map_err(write)?;
        tx.execute(
            "UPDATE stats SET bytes = (SELECT COALESCE(SUM(length(data)), 0) FROM vectors)",
            [],
        )
        .map_err(write)?;
        tx.commit().map_err(write)?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }
}

impl std::fmt::Debug for PersistentEmbeddingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentEmbeddingCache")
            .field("path", &self.path)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// A stored vector, or `None` for bytes that cannot be one (never served).
fn decode(data: &[u8]) -> Option<Vec<f32>> {
    if data.is_empty() || !data.len().is_multiple_of(4) {
        return None;
    }
    Some(
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Opens `path` as a cache of this format, creating the tables in a new file; `Err` (with
/// the reason) for a file that is not one.
fn open_checked(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    // Large pages keep a vector inside its B-tree leaf (with 4 KiB pages a 384-value vector
    // spills into an overflow page, one more read per hit). Only a new file takes it.
    conn.pragma_update(None, "page_size", 16_384)
        .map_err(|e| e.to_string())?;
    // WAL: readers and the writer of several processes do not block each other, and an
    // interrupted write is rolled back on the next open.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal mode {mode}, not wal"));
    }
    // A database that already has tables must be ours: never add tables to another
    // program's file.
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if tables > 0 {
        check_format(&conn)?;
    }
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL;
         BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS vectors (
             key BLOB PRIMARY KEY, model TEXT NOT NULL, data BLOB NOT NULL, used INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS vectors_used ON vectors (used);
         CREATE INDEX IF NOT EXISTS vectors_model ON vectors (model);
         CREATE TABLE IF NOT EXISTS stats (bytes INTEGER NOT NULL);
         INSERT INTO stats (bytes) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM stats);
         INSERT OR IGNORE INTO meta (key, value) VALUES ('format', 'dp-models-embedding-cache-1');
         COMMIT;",
    )
    .map_err(|e| e.to_string())?;
    check_format(&conn)?;
    Ok(conn)
}

/// Fails unless the `meta` table says this is a cache of [`FORMAT`].
fn check_format(conn: &Connection) -> Result<(), String> {
    let format: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| format!("no dp-models cache metadata ({e})"))?;
    if format.as_deref() == Some(FORMAT) {
        Ok(())
    } else {
        Err(format!("format {format:?}, not {FORMAT}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_survive_a_reopen_and_the_bound_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let config = PersistentCacheConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 10 * 16,
        };
        let store = PersistentEmbeddingCache::open(&config).unwrap();
        let v = [1.0_f32, 2.0, 3.0, 4.0];
        store.put_many(&[(1, "a", &v), (2, "a", &v), (3, "b", &v)]);
        // Written twice (another process raced): stored and counted once.
        store.put_many(&[(3, "b", &v)]);
        drop(store);
        let store = PersistentEmbeddingCache::open(&config).unwrap();
        assert_eq!(store.get_many(&[1, 9]), vec![Some(v.to_vec()), None]);
        let stats = store.stats().unwrap();
        assert_eq!((stats.entries, stats.bytes), (3, 48));
        assert_eq!(stats.models["a"], 2);
        // Over the bound (160 bytes): the oldest go until 90% (144 bytes) is left.
        let more: Vec<(u128, &str, &[f32])> = (10..20).map(|k| (k, "c", &v[..])).collect();
        store.put_many(&more);
        let stats = store.stats().unwrap();
        assert_eq!((stats.entries, stats.bytes), (9, 144), "{stats:?}");
        let c = stats.models.get("c").copied().unwrap_or(0);
        assert_eq!(store.clear(Some("c")).unwrap(), c);
        assert_eq!(store.clear(None).unwrap(), stats.entries - c);
        assert_eq!(store.stats().unwrap().bytes, 0);
    }

    #[test]
    fn a_foreign_file_is_moved_aside_and_never_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CACHE_FILE),
            b"not a database at all, just text",
        )
        .unwrap();
        let store =
            PersistentEmbeddingCache::open(&PersistentCacheConfig::new(dir.path())).unwrap();
        assert_eq!(store.get_many(&[1]), vec![None]);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".unreadable-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            std::fs::read(aside[0].path()).unwrap(),
            b"not a database at all, just text"
        );
        // Another program's SQLite database is foreign too.
        drop(store);
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let conn = Connection::open(other.join(CACHE_FILE)).unwrap();
        conn.execute_batch("CREATE TABLE notes (x INTEGER)")
            .unwrap();
        drop(conn);
        let store = PersistentEmbeddingCache::open(&PersistentCacheConfig::new(&other)).unwrap();
        store.put_many(&[(5, "m", &[1.0])]);
        assert_eq!(store.get_many(&[5]), vec![Some(vec![1.0])]);
    }

    #[test]
    fn malformed_vector_bytes_are_not_served() {
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&1.5_f32.to_le_bytes()), Some(vec![1.5]));
    }
}
