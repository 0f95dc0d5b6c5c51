//! Cluster membership: one row per node, its heartbeat stamped by the database's clock, so
//! nodes whose clocks disagree still agree on who is alive.
use kairos_persistence::{MemberRow, Result};

use crate::error::pg_err;

pub(crate) async fn heartbeat(client: &tokio_postgres::Client, member: &MemberRow) -> Result<()> {
    client
        .execute(
            "INSERT INTO cluster_members
                 (name, rpc_address, internal_address, session, services, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, clock_timestamp())
             ON CONFLICT (name) DO UPDATE SET rpc_address = EXCLUDED.rpc_address,
                 internal_address = EXCLUDED.internal_address, session = EXCLUDED.session,
                 services = EXCLUDED.services, heartbeat_at = EXCLUDED.heartbeat_at",
            &[
                &member.name,
                &member.rpc_address,
                &member.internal_address,
                &member.session,
                &member.services.join(","),
            ],
        )
        .await
        .map_err(pg_err("failed to record a heartbeat"))?;
    Ok(())
}

pub(crate) async fn live(
    client: &tokio_postgres::Client,
    within: std::time::Duration,
) -> Result<Vec<MemberRow>> {
    let rows = client
        .query(
            "SELECT name, rpc_address, internal_address, session, services FROM cluster_members
             WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1)
             ORDER BY name",
            &[&within.as_secs_f64()],
        )
        .await
        .map_err(pg_err("failed to read the cluster's members"))?;
    Ok(rows
        .iter()
        .map(|row| MemberRow {
            name: row.get(0),
            rpc_address: row.get(1),
            internal_address: row.get(2),
            session: row.get(3),
            services: row
                .get::<_, String>(4)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
        .collect())
}

pub(crate) async fn remove(
    client: &tokio_postgres::Client,
    name: &str,
    session: i64,
) -> Result<()> {
    client
        .execute(
            "DELETE FROM cluster_members WHERE name = $1 AND session = $2",
            &[&name, &session],
        )
        .await
        .map_err(pg_err("failed to leave the cluster"))?;
    Ok(())
}

pub(crate) async fn claim_metadata(
    client: &tokio_postgres::Client,
    key: &str,
    value: &[u8],
) -> Result<Vec<u8>> {
    client
        .execute(
            "INSERT INTO cluster_metadata (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .await
        .map_err(pg_err("failed to write cluster metadata"))?;
    let row = client
        .query_one("SELECT value FROM cluster_metadata WHERE key = $1", &[&key])
        .await
        .map_err(pg_err("failed to read cluster metadata"))?;
    Ok(row.get(0))
}
