//! The real [`Engine`]: RocksDB through the `rocksdb` crate. This file is the only place that names
//! RocksDB types; it maps our column families, batches and durability classes onto RocksDB's and
//! turns its errors into [`EngineError`].
//!
//! Durability (why two classes: `docs/reference/decisions.md` §3): `Durability::Sync` is
//! `WriteOptions::set_sync(true)` (WAL written and fsynced before the write returns);
//! `Durability::Buffered` is `sync = false` (WAL written to the OS, which survives a process crash
//! but not a machine crash) and is fsynced by [`Engine::sync_wal`], which the server calls
//! periodically and before exit.

use super::{
    Cf, Durability, Engine, EngineError, EngineOptions, KeyValue, Op, WriteBatch, expired, unix_ms,
};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBRecoveryMode, Options, ReadOptions,
    WriteOptions,
};
use std::path::{Path, PathBuf};

/// How we recover from a WAL that ends badly after an unclean stop; see [`RocksEngine::open`].
pub const WAL_RECOVERY_MODE: DBRecoveryMode = DBRecoveryMode::PointInTime;

/// An expiring family's files are rewritten (and its expired entries dropped by the compaction
/// filter) at least this often, even when no new writes would trigger a compaction: one day.
pub const EXPIRY_COMPACTION_PERIOD_SECS: u64 = 24 * 60 * 60;

/// Bloom filter bits per key: about 1% false positives, so a point read of a missing key rarely
/// touches a data block.
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// RocksDB behind the [`Engine`] trait.
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend(err: rocksdb::Error) -> EngineError {
    EngineError::Backend(err.into_string())
}

impl RocksEngine {
    /// Opens (or creates) the database in `path` with default [`EngineOptions`].
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        Self::open_with(path, &EngineOptions::default())
    }

    /// Opens (or creates) the database in `path`, creating any missing column family.
    pub fn open_with(path: &Path, options: &EngineOptions) -> Result<Self, EngineError> {
        let open_err = |reason: String| EngineError::Open {
            path: path.display().to_string(),
            reason,
        };
        let mut opts = Options::default();
        opts.create_if_missing(options.create_if_missing);
        opts.create_missing_column_families(true);
        // After an unclean stop (SIGKILL, power loss) the WAL may end in a torn or half-written
        // record, or hold a corrupt one. PointInTime replays the WAL up to the first bad record
        // and stops there, so the database opens at a consistent point in time: every batch that
        // was fsynced (every acknowledged Sync write) precedes the tear and is kept, batches are
        // never split, and no write after a hole is replayed without the writes before it.
        // AbsoluteConsistency would refuse to open after an ordinary power loss (a torn tail is
        // normal), TolerateCorruptedTailRecords can refuse on mid-log corruption, and
        // SkipAnyCorruptedRecords could replay a later batch without an earlier one. RocksDB's
        // default is also PointInTime today; we set it explicitly so that never changes under us.
        opts.set_wal_recovery_mode(WAL_RECOVERY_MODE);
        // Every write reaches the WAL file (the OS) before it returns, so Buffered writes survive
        // a process crash. With manual WAL flush they would sit in RocksDB's memory until a flush.
        opts.set_manual_wal_flush(false);

        // Open every family already on disk (RocksDB refuses to open a database without naming
        // all of them): a newer format may have added some, and the schema's version check then
        // refuses it with a clear message rather than RocksDB with an obscure one.
        let mut names: Vec<String> = Cf::ALL.iter().map(|cf| cf.name().to_owned()).collect();
        if path.join("CURRENT").exists() {
            for name in DB::list_cf(&opts, path).map_err(|e| open_err(e.into_string()))? {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let descriptors = names.iter().map(|name| {
            let cf = Cf::ALL.into_iter().find(|cf| cf.name() == name);
            ColumnFamilyDescriptor::new(name, family_options(cf, &cache))
        });
        let db = DB::open_cf_descriptors(&opts, path, descriptors)
            .map_err(|e| open_err(e.into_string()))?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn handle(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, EngineError> {
        self.db
            .cf_handle(cf.name())
            .ok_or(EngineError::MissingCf(cf.name()))
    }
}

/// Options of one column family: the shared block cache with bloom filters, and for an expiring
/// family the compaction filter that drops expired entries plus a periodic compaction so that
/// happens even in files no write touches again.
fn family_options(cf: Option<Cf>, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    if cf.is_some_and(Cf::expires) {
        opts.set_compaction_filter(
            "portcullis-expiry",
            |_level: u32, _key: &[u8], value: &[u8]| {
                if expired(value, unix_ms()) {
                    Decision::Remove
                } else {
                    Decision::Keep
                }
            },
        );
        opts.set_periodic_compaction_seconds(EXPIRY_COMPACTION_PERIOD_SECS);
    }
    opts
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.db.get_cf(self.handle(cf)?, key).map_err(backend)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut rb = rocksdb::WriteBatch::default();
        for op in batch.into_ops() {
            match op {
                Op::Put { cf, key, value } => rb.put_cf(self.handle(cf)?, key, value),
                Op::Delete { cf, key } => rb.delete_cf(self.handle(cf)?, key),
                Op::DeleteRange { cf, start, end } => {
                    rb.delete_range_cf(self.handle(cf)?, start, end);
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Sync);
        self.db.write_opt(rb, &wo).map_err(backend)
    }

    fn scan_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        if limit == 0 || end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let mut ro = ReadOptions::default();
        if let Some(end) = end {
            ro.set_iterate_upper_bound(end.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.handle(cf)?, ro);
        it.seek(start);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((k, v)) = it.item() else { break };
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(backend)?;
        Ok(out)
    }

    fn sync_wal(&self) -> Result<(), EngineError> {
        self.db.flush_wal(true).map_err(backend)
    }

    fn compact(&self, cf: Cf) -> Result<(), EngineError> {
        // Flush first so entries still in the memtable are compacted (and filtered) too.
        self.db.flush_cf(self.handle(cf)?).map_err(backend)?;
        self.db
            .compact_range_cf(self.handle(cf)?, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), EngineError> {
        // A checkpoint hard-links the live SST files and copies the WAL tail as of one sequence
        // number, so it is consistent without pausing writers.
        Checkpoint::new(&self.db)
            .and_then(|cp| cp.create_checkpoint(dir))
            .map_err(backend)
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        // RocksDB's close does not promise to sync the WAL; the server syncs before it exits, and
        // this is the last chance for any other owner.
        if let Err(err) = self.db.flush_wal(true) {
            tracing::error!(path = %self.path.display(), %err, "WAL sync on close failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    fn wal_files(dir: &Path) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read data dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        logs
    }

    #[test]
    fn reopen_keeps_buffered_and_sync_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = RocksEngine::open(dir.path()).expect("open");
            let mut b = WriteBatch::new();
            b.put(Cf::Devices, key(1), b"one".to_vec());
            e.write(b, Durability::Sync).expect("sync write");
            let mut b = WriteBatch::new();
            b.put(Cf::Pins, key(2), b"two".to_vec());
            e.write(b, Durability::Buffered).expect("buffered write");
        }
        let e = RocksEngine::open(dir.path()).expect("reopen");
        assert_eq!(
            e.get(Cf::Devices, &key(1)).expect("get"),
            Some(b"one".to_vec())
        );
        assert_eq!(
            e.get(Cf::Pins, &key(2)).expect("get"),
            Some(b"two".to_vec())
        );
    }

    #[test]
    fn opens_a_database_with_an_unknown_column_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            DB::open_cf(&opts, dir.path(), ["from_the_future"]).expect("create foreign db");
        }
        let e = RocksEngine::open(dir.path()).expect("open with an extra family");
        assert_eq!(e.get(Cf::Meta, b"x").expect("get"), None);
    }

    /// A WAL corrupted in the middle (a torn sector after power loss) must still open, and what
    /// comes back must be a prefix of the writes: no batch after the damage without the ones
    /// before it. This is what PointInTime recovery promises; SkipAnyCorruptedRecords would fail
    /// the no-gap check and AbsoluteConsistency would fail to open.
    #[test]
    fn point_in_time_recovery_keeps_a_gapless_prefix() {
        const N: u32 = 600;
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = RocksEngine::open(dir.path()).expect("open");
            for i in 0..N {
                let mut b = WriteBatch::new();
                b.put(Cf::Pins, key(i), vec![b'x'; 100]);
                e.write(b, Durability::Buffered).expect("write");
            }
            e.sync_wal().expect("sync");
        }
        let logs = wal_files(dir.path());
        let log = logs
            .iter()
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .expect("a WAL file");
        let mut bytes = std::fs::read(log).expect("read WAL");
        assert!(
            bytes.len() > 40_000,
            "the writes should still be in the WAL, found {} bytes",
            bytes.len()
        );
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(log, &bytes).expect("corrupt WAL");

        let e = RocksEngine::open(dir.path()).expect("PointInTime opens a damaged WAL");
        let present: Vec<u32> = (0..N)
            .filter(|&i| e.get(Cf::Pins, &key(i)).expect("get").is_some())
            .collect();
        let k = present.len() as u32;
        assert!(k > 0 && k < N, "expected a strict prefix, kept {k} of {N}");
        assert_eq!(
            present,
            (0..k).collect::<Vec<_>>(),
            "recovered writes must have no gaps"
        );
    }
}
