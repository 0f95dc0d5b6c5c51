//! `Store` for `SqliteStore`: writes go to the writer thread, reads to the reader pool, start-up
//! reads to the writer connection.
use super::*;

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .queue()?
            .send(WriteRequest::Batch(Box::new(batch), tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn acquire_shards(&self, shard_ids: &[i32]) -> Result<Vec<ShardLease>> {
        // The lease commit is not synced on its own (0.6 ms of a 3 ms start): it answers no
        // client, and the write-ahead log is synced in order, so the first durable commit made
        // under these leases makes them durable too. A crash before that loses only the bump,
        // and nothing stored was numbered from it; the next start bumps again.
        let shard_ids = shard_ids.to_vec();
        self.write_job(move |conn| unsynced(conn, |conn| take_leases(conn, &shard_ids)))
            .await
    }

    async fn renew_shard(&self, lease: ShardLease) -> Result<()> {
        let range_id = self
            .read(move |conn| {
                conn.prepare_cached("SELECT range_id FROM shards WHERE shard_id = ?1")
                    .and_then(|mut s| {
                        s.query_row([lease.shard_id], |r| r.get::<_, i64>(0))
                            .optional()
                    })
                    .map_err(sql_err("failed to read a shard lease"))
            })
            .await?;
        if range_id == Some(lease.range_id) {
            Ok(())
        } else {
            Err(Error::ShardOwnershipLost {
                shard_id: lease.shard_id,
            })
        }
    }

    async fn get_execution(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Option<ExecutionRow>> {
        let key = (
            namespace_id.to_string(),
            workflow_id.to_string(),
            run_id.to_string(),
        );
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT shard_id, db_version, state FROM executions
                 WHERE namespace_id = ?1 AND workflow_id = ?2 AND run_id = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![key.0, key.1, key.2], |r| {
                    Ok(ExecutionRow {
                        shard_id: r.get(0)?,
                        db_version: r.get(1)?,
                        state: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(sql_err("failed to read an execution"))
        })
        .await
    }

    async fn get_current(
        &self,
        namespace_id: &str,
        workflow_id: &str,
    ) -> Result<Option<CurrentRow>> {
        let key = (namespace_id.to_string(), workflow_id.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT run_id, data FROM current_executions WHERE namespace_id = ?1 AND workflow_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![key.0, key.1], |r| {
                    Ok(CurrentRow { run_id: r.get(0)?, data: r.get(1)? })
                })
                .optional()
            })
            .map_err(sql_err("failed to read the current run"))
        })
        .await
    }

    async fn read_events(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        first: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let key = (
            namespace_id.to_string(),
            workflow_id.to_string(),
            run_id.to_string(),
        );
        self.read(move |conn| read_history(conn, &key.0, &key.1, &key.2, first, limit))
            .await
    }

    async fn list_visibility(
        &self,
        namespace_id: &str,
        filter: &Filter,
        after: Option<VisibilityCursor>,
        limit: usize,
    ) -> Result<Vec<VisibilityRow>> {
        let namespace_id = namespace_id.to_string();
        let filter = filter.clone();
        self.read(move |conn| {
            let (cond, mut values) = visibility_where(&namespace_id, &filter, after.as_ref());
            values.push(rusqlite::types::Value::Integer(limit as i64));
            let sql = format!(
                "SELECT {VISIBILITY_COLUMNS} FROM visibility v WHERE {cond}
                 ORDER BY v.sort_close DESC, v.start_time DESC, v.run_id DESC LIMIT ?"
            );
            let mut stmt = conn
                .prepare(&sql)
                .map_err(sql_err("failed to prepare a visibility list"))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), visibility_row)
                .map_err(sql_err("failed to list workflows"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to list workflows"))
        })
        .await
    }

    async fn count_visibility(
        &self,
        namespace_id: &str,
        filter: &Filter,
        by_status: bool,
    ) -> Result<Vec<(Option<i32>, i64)>> {
        let namespace_id = namespace_id.to_string();
        let filter = filter.clone();
        self.read(move |conn| {
            let (cond, values) = visibility_where(&namespace_id, &filter, None);
            let sql = if by_status {
                format!(
                    "SELECT v.status, COUNT(*) FROM visibility v WHERE {cond}
                     GROUP BY v.status ORDER BY v.status"
                )
            } else {
                format!("SELECT NULL, COUNT(*) FROM visibility v WHERE {cond}")
            };
            let mut stmt = conn
                .prepare(&sql)
                .map_err(sql_err("failed to prepare a visibility count"))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), |r| {
                    Ok((r.get::<_, Option<i32>>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(sql_err("failed to count workflows"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to count workflows"))
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn counters(&self) -> kairos_persistence::StoreCounters {
        kairos_persistence::StoreCounters {
            commits: self.writer.counters.commits.load(Ordering::Relaxed),
            syncs: self.writer.counters.syncs.load(Ordering::Relaxed),
        }
    }

    fn start_serving(&self) -> Result<()> {
        self.start_writer()
    }

    async fn close(&self) -> Result<()> {
        self.write_job(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(sql_err("failed to checkpoint the write-ahead log"))
        })
        .await
    }

    async fn scan_timers(
        &self,
        shard_ids: &[i32],
        mut each: Box<dyn FnMut(TimerTask) + Send>,
    ) -> Result<()> {
        let shards = shard_list(shard_ids);
        // On the writer connection: a start-up read (see the trait), so no reader has to open.
        self.write_job(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT task_id, shard_id, fire_at_ms, namespace_id, workflow_id, run_id, data
                     FROM timers WHERE shard_id IN (SELECT value FROM json_each(?1))
                     ORDER BY fire_at_ms, shard_id, task_id",
                )
                .map_err(sql_err("failed to prepare a timer scan"))?;
            let rows = stmt
                .query_map([shards], |r| {
                    Ok(TimerTask {
                        task_id: r.get(0)?,
                        shard_id: r.get(1)?,
                        fire_at_ms: r.get(2)?,
                        namespace_id: r.get(3)?,
                        workflow_id: r.get(4)?,
                        run_id: r.get(5)?,
                        data: r.get(6)?,
                    })
                })
                .map_err(sql_err("failed to scan timers"))?;
            for row in rows {
                each(row.map_err(sql_err("failed to scan timers"))?);
            }
            Ok(())
        })
        .await
    }

    async fn load_transfers(&self, shard_ids: &[i32]) -> Result<Vec<TransferTask>> {
        let shards = shard_list(shard_ids);
        // On the writer connection: a start-up read (see the trait), so no reader has to open.
        self.write_job(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT task_id, shard_id, namespace_id, workflow_id, run_id, data
                     FROM transfers WHERE shard_id IN (SELECT value FROM json_each(?1))
                     ORDER BY shard_id, task_id",
                )
                .map_err(sql_err("failed to prepare a transfer scan"))?;
            let rows = stmt
                .query_map([shards], |r| {
                    Ok(TransferTask {
                        task_id: r.get(0)?,
                        shard_id: r.get(1)?,
                        namespace_id: r.get(2)?,
                        workflow_id: r.get(3)?,
                        run_id: r.get(4)?,
                        data: r.get(5)?,
                    })
                })
                .map_err(sql_err("failed to scan transfer tasks"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to scan transfer tasks"))
        })
        .await
    }

    async fn put_namespace(&self, row: NamespaceRow, how: PutNamespace) -> Result<()> {
        let starting = !self.writer.started();
        self.write_job(move |conn| {
            let put = |conn: &mut Connection| {
                let sql = if how == PutNamespace::Replace {
                    "INSERT INTO namespaces (id, name, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET data = ?3"
                } else {
                    "INSERT OR IGNORE INTO namespaces (id, name, data) VALUES (?1, ?2, ?3)"
                };
                let changed = exec(conn, sql, params![row.id, row.name, row.data])
                    .map_err(sql_err("failed to write a namespace"))?;
                if changed == 0 {
                    return Err(Error::AlreadyExists(format!("namespace {}", row.name)));
                }
                Ok(())
            };
            if starting {
                // Before serving: see `Store::start_serving`.
                unsynced(conn, put)
            } else {
                put(conn)
            }
        })
        .await
    }

    async fn list_namespaces(&self) -> Result<Vec<NamespaceRow>> {
        // On the writer connection: a start-up read (see the trait), so no reader has to open.
        self.write_job(|conn| {
            let mut stmt = conn
                .prepare("SELECT id, name, data FROM namespaces ORDER BY name")
                .map_err(sql_err("failed to prepare a namespace scan"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(NamespaceRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        data: r.get(2)?,
                    })
                })
                .map_err(sql_err("failed to list namespaces"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to list namespaces"))
        })
        .await
    }

    async fn get_metadata(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_string();
        self.read(move |conn| {
            query_one(
                conn,
                "SELECT value FROM cluster_metadata WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err("failed to read cluster metadata"))
        })
        .await
    }

    async fn put_metadata(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let key = key.to_string();
        self.write_job(move |conn| {
            exec(
                conn,
                "INSERT INTO cluster_metadata (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![key, value],
            )
            .map(|_| ())
            .map_err(sql_err("failed to write cluster metadata"))
        })
        .await
    }
}

/// Shard ids as a JSON array, bound as one parameter and read back with `json_each`.
fn shard_list(shard_ids: &[i32]) -> String {
    let ids: Vec<String> = shard_ids.iter().map(i32::to_string).collect();
    format!("[{}]", ids.join(","))
}
