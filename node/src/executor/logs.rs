//! Invocation logs kept per function on each node, as JSON lines in
//! `<data_dir>/logs/<function>.log`, rotated once so that a function never
//! holds more than the configured retention.

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One invocation's log, START to REPORT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    pub time_ms: i64,
    pub node_id: u64,
    pub function: String,
    pub version: String,
    pub request_id: String,
    pub text: String,
}

pub struct LogStore {
    dir: PathBuf,
    retention: u64,
    /// One writer at a time, so rotation never races an append.
    lock: Mutex<()>,
}

impl LogStore {
    pub fn open(data_dir: &Path, retention: u64) -> anyhow::Result<LogStore> {
        let dir = data_dir.join("logs");
        fs::create_dir_all(&dir)?;
        Ok(LogStore {
            dir,
            retention: retention.max(4096),
            lock: Mutex::new(()),
        })
    }

    fn path(&self, function: &str, old: bool) -> PathBuf {
        self.dir.join(if old {
            format!("{function}.log.1")
        } else {
            format!("{function}.log")
        })
    }

    pub fn append(&self, record: &LogRecord) -> std::io::Result<()> {
        let _one_writer = self.lock.lock().expect("log lock");
        let path = self.path(&record.function, false);
        if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > self.retention / 2 {
            fs::rename(&path, self.path(&record.function, true))?;
        }
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(&line)
    }

    /// Records newer than `since_ms`, oldest first, at most `limit` (the newest ones).
    pub fn read(&self, function: &str, since_ms: i64, limit: usize) -> Vec<LogRecord> {
        let mut records = Vec::new();
        for old in [true, false] {
            let Ok(file) = fs::File::open(self.path(function, old)) else {
                continue;
            };
            for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
                if let Ok(record) = serde_json::from_str::<LogRecord>(&line) {
                    if record.time_ms > since_ms {
                        records.push(record);
                    }
                }
            }
        }
        if records.len() > limit {
            records.drain(..records.len() - limit);
        }
        records
    }

    /// Forgets a function's logs (it was deleted).
    pub fn remove(&self, function: &str) {
        let _one_writer = self.lock.lock().expect("log lock");
        let _ = fs::remove_file(self.path(function, false));
        let _ = fs::remove_file(self.path(function, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time_ms: i64, text: &str) -> LogRecord {
        LogRecord {
            time_ms,
            node_id: 1,
            function: "f".into(),
            version: "$LATEST".into(),
            request_id: format!("r{time_ms}"),
            text: text.into(),
        }
    }

    #[test]
    fn keeps_recent_records_within_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), 8192).unwrap();
        for i in 0..200 {
            store.append(&record(i, &"x".repeat(100))).unwrap();
        }
        let all = store.read("f", -1, usize::MAX);
        assert!(all.len() < 200, "old records were dropped");
        assert_eq!(all.last().unwrap().time_ms, 199);
        let total: u64 = ["f.log", "f.log.1"]
            .iter()
            .map(|f| {
                fs::metadata(dir.path().join("logs").join(f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        assert!(total <= 8192 + 200, "retention holds: {total}");
        assert_eq!(store.read("f", 197, 10).len(), 2);
        assert_eq!(store.read("f", -1, 3).first().unwrap().time_ms, 197);
    }
}
