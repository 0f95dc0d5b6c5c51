//! Identifiers: shard hashing and the key of one run.
use std::fmt;

/// Identifies one run of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey {
    /// Namespace id (not name).
    pub namespace_id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Run id.
    pub run_id: String,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace_id, self.workflow_id, self.run_id
        )
    }
}

/// The shard that owns a workflow id: a stable FNV-1a hash, so it never changes across
/// versions or machines.
pub fn shard_for(namespace_id: &str, workflow_id: &str, shard_count: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace_id.bytes().chain([0u8]).chain(workflow_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shard_count.max(1) as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_in_range() {
        let shard = shard_for("ns", "order-1", 4);
        assert!((0..4).contains(&shard));
        assert_eq!(shard, shard_for("ns", "order-1", 4));
        let spread: std::collections::HashSet<_> = (0..64)
            .map(|i| shard_for("ns", &format!("order-{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "64 ids should reach every one of 4 shards");
    }
}
