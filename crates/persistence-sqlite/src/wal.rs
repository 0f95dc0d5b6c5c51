//! Reads a SQLite write-ahead log on its own, without SQLite, to tell whether it holds
//! committed transactions that the main file may not: the open must never delete or replace a
//! log that does. Format: <https://www.sqlite.org/fileformat2.html#walformat> (a 32-byte header,
//! then frames of a 24-byte header and one page; a frame counts only while its salts match the
//! header's and the running checksum holds, and a frame with a database size ends a commit).
use std::io::Read;
use std::path::Path;

const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
const MAGIC_LITTLE_ENDIAN: u32 = 0x377f_0682;
const MAGIC_BIG_ENDIAN: u32 = 0x377f_0683;

/// The committed transactions a log holds, as SQLite would recover them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Transactions whose commit frame is valid.
    pub transactions: usize,
    /// Valid frames up to the last commit.
    pub frames: usize,
}

/// The committed transactions in the log at `path`; nothing for a missing, empty or invalid
/// log (SQLite ignores those too).
pub fn committed(path: &Path) -> std::io::Result<Committed> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Committed::default()),
        Err(e) => return Err(e),
    };
    Ok(scan(&bytes))
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing from `(s0, s1)`.
fn checksum(data: &[u8], big_endian: bool, (mut s0, mut s1): (u32, u32)) -> (u32, u32) {
    let word = |chunk: &[u8]| {
        let b: [u8; 4] = chunk.try_into().expect("4 bytes");
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    for pair in data.chunks_exact(8) {
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// Walks the frames of a log held in memory.
pub fn scan(bytes: &[u8]) -> Committed {
    let mut found = Committed::default();
    if bytes.len() < HEADER {
        return found;
    }
    let big_endian = match be32(bytes, 0) {
        MAGIC_LITTLE_ENDIAN => false,
        MAGIC_BIG_ENDIAN => true,
        _ => return found,
    };
    let page_size = match be32(bytes, 8) {
        1 => 65_536,
        n if n.is_power_of_two() && (512..=32_768).contains(&n) => n as usize,
        _ => return found,
    };
    let (salt1, salt2) = (be32(bytes, 16), be32(bytes, 20));
    let mut sum = checksum(&bytes[..24], big_endian, (0, 0));
    if sum != (be32(bytes, 24), be32(bytes, 28)) {
        return found;
    }
    let mut at = HEADER;
    let mut frames = 0;
    while at + FRAME_HEADER + page_size <= bytes.len() {
        let frame = &bytes[at..at + FRAME_HEADER + page_size];
        if be32(frame, 8) != salt1 || be32(frame, 12) != salt2 {
            break;
        }
        sum = checksum(&frame[..8], big_endian, sum);
        sum = checksum(&frame[FRAME_HEADER..], big_endian, sum);
        if sum != (be32(frame, 16), be32(frame, 20)) {
            break;
        }
        frames += 1;
        if be32(frame, 4) != 0 {
            found.transactions += 1;
            found.frames = frames;
        }
        at += FRAME_HEADER + page_size;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log made by SQLite itself: a database in WAL mode whose commits are not checkpointed.
    fn sqlite_log(transactions: usize) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);",
        )
        .expect("schema");
        for n in 1..transactions {
            conn.execute("INSERT INTO t VALUES (?1)", [n as i64])
                .expect("insert");
        }
        let log = std::fs::read(dir.path().join("t.db-wal")).expect("the log exists");
        // Read before the connection closes (a close checkpoints and may reset the log).
        drop(conn);
        (dir, log)
    }

    #[test]
    fn counts_the_commits_sqlite_wrote_and_nothing_after_damage() {
        let (_dir, log) = sqlite_log(3);
        let all = scan(&log);
        assert_eq!(all.transactions, 3, "{all:?}");
        // A torn last frame loses only the last commit.
        let torn = scan(&log[..log.len() - 100]);
        assert_eq!(torn.transactions, 2);
        // A flipped byte in the first frame's page stops the walk there.
        let mut damaged = log.clone();
        damaged[HEADER + FRAME_HEADER + 10] ^= 0xff;
        assert_eq!(scan(&damaged).transactions, 0);
        // Junk, empty and header-only logs hold nothing.
        assert_eq!(
            scan(b"junk junk junk junk junk junk junk junk"),
            Committed::default()
        );
        assert_eq!(scan(&[]), Committed::default());
        assert_eq!(scan(&log[..HEADER]), Committed::default());
    }
}
