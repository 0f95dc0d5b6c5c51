//! `kairos operator ...`: namespaces, search attributes, cluster information.
use super::*;

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Namespaces.
    Namespace {
        #[command(subcommand)]
        command: NamespaceCommand,
    },
    /// Custom search attributes.
    SearchAttribute {
        #[command(subcommand)]
        command: SearchAttributeCommand,
    },
    /// The cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
pub enum NamespaceCommand {
    /// Register a namespace (`-n NAME` or the argument).
    Create {
        name: Option<String>,
        /// Retention of closed workflows, e.g. 72h.
        #[arg(long)]
        retention: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show a namespace.
    Describe { name: Option<String> },
    /// List namespaces.
    List,
    /// Change a namespace's retention or description.
    Update {
        name: Option<String>,
        #[arg(long)]
        retention: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SearchAttributeCommand {
    /// Register custom search attributes.
    Create {
        #[arg(long)]
        name: Vec<String>,
        /// Keyword, Text, Int, Double, Bool, Datetime or KeywordList (one per --name).
        #[arg(long = "type")]
        types: Vec<String>,
    },
    /// List search attributes.
    List,
    /// Remove custom search attributes.
    Remove {
        #[arg(long)]
        name: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Whether the frontend serves.
    Health,
    /// Server version and capabilities.
    System,
    /// The cluster: its shard count and store, its nodes, their roles and the shards each
    /// holds.
    Describe,
}

impl Client {
    pub async fn operator(&mut self, command: OperatorCommand) -> anyhow::Result<()> {
        match command {
            OperatorCommand::Namespace { command } => self.namespace_command(command).await,
            OperatorCommand::SearchAttribute { command } => self.search_attribute(command).await,
            OperatorCommand::Cluster {
                command: ClusterCommand::Health,
            } => {
                let mut health =
                    kairos_proto::health::health_client::HealthClient::new(self.channel());
                let resp = health
                    .check(temporalio_protos::grpc::health::v1::HealthCheckRequest {
                        service: "temporal.api.workflowservice.v1.WorkflowService".into(),
                    })
                    .await
                    .map_err(rpc("failed checking health"))?
                    .into_inner();
                if resp.status == 1 {
                    println!("SERVING");
                    Ok(())
                } else {
                    bail!("not serving (status {})", resp.status)
                }
            }
            OperatorCommand::Cluster {
                command: ClusterCommand::Describe,
            } => self.describe_cluster().await,
            OperatorCommand::Cluster {
                command: ClusterCommand::System,
            } => {
                let resp = self
                    .wf
                    .get_system_info(ws::GetSystemInfoRequest {})
                    .await
                    .map_err(rpc("failed getting system info"))?
                    .into_inner();
                let caps = resp.capabilities.unwrap_or_default();
                if self.output == Output::Json {
                    print_json(&json!({"serverVersion": resp.server_version,
                        "capabilities": {"upsertMemo": caps.upsert_memo,
                            "sdkMetadata": caps.sdk_metadata}}));
                } else {
                    print_table(
                        &[
                            "ServerVersion",
                            "SupportsSchedules",
                            "UpsertMemo",
                            "EagerWorkflowStart",
                        ],
                        &[vec![
                            resp.server_version,
                            "false".into(),
                            caps.upsert_memo.to_string(),
                            caps.eager_workflow_start.to_string(),
                        ]],
                    );
                }
                Ok(())
            }
        }
    }

    async fn describe_cluster(&mut self) -> anyhow::Result<()> {
        let mut members = kairos_proto::cluster::cluster_service_client::ClusterServiceClient::new(
            self.channel(),
        );
        let resp = members
            .describe_cluster(kairos_proto::cluster::DescribeClusterRequest {})
            .await
            .map_err(rpc("failed describing the cluster"))?
            .into_inner();
        if self.output == Output::Json {
            let nodes: Vec<Value> = resp
                .members
                .iter()
                .map(|m| {
                    json!({"name": m.name, "rpcAddress": m.rpc_address,
                        "internalAddress": m.internal_address, "services": m.services,
                        "shards": m.shards, "reachable": m.reachable, "answering": m.answering})
                })
                .collect();
            print_json(&json!({"clusterName": resp.cluster_name,
                "serverVersion": resp.server_version,
                "persistenceStore": resp.persistence_store,
                "historyShardCount": resp.history_shard_count, "nodes": nodes}));
            return Ok(());
        }
        print_record(
            None,
            &[
                ("ClusterName", resp.cluster_name.clone()),
                ("ServerVersion", resp.server_version.clone()),
                ("PersistenceStore", resp.persistence_store.clone()),
                ("HistoryShardCount", resp.history_shard_count.to_string()),
            ],
        );
        println!();
        let rows: Vec<Vec<String>> = resp
            .members
            .iter()
            .map(|m| {
                let shards = if m.reachable {
                    format!("{} ({})", m.shards.len(), shard_ranges(&m.shards))
                } else {
                    "unreachable".into()
                };
                vec![
                    if m.answering {
                        format!("{} *", m.name)
                    } else {
                        m.name.clone()
                    },
                    m.rpc_address.clone(),
                    m.internal_address.clone(),
                    m.services.join(","),
                    shards,
                ]
            })
            .collect();
        print_table(
            &["Node", "Address", "InternalAddress", "Services", "Shards"],
            &rows,
        );
        Ok(())
    }

    fn channel(&self) -> Channel {
        self.channel.clone()
    }

    async fn namespace_command(&mut self, command: NamespaceCommand) -> anyhow::Result<()> {
        let pick =
            |name: Option<String>, default: &str| name.unwrap_or_else(|| default.to_string());
        match command {
            NamespaceCommand::Create {
                name,
                retention,
                description,
            } => {
                let name = pick(name, &self.namespace);
                self.wf
                    .register_namespace(ws::RegisterNamespaceRequest {
                        namespace: name.clone(),
                        description,
                        workflow_execution_retention_period: retention
                            .as_deref()
                            .map(parse_go_duration)
                            .transpose()?,
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("unable to create namespace"))?;
                println!("Namespace {name} successfully registered.");
                Ok(())
            }
            NamespaceCommand::Describe { name } => {
                let name = pick(name, &self.namespace);
                let resp = self
                    .wf
                    .describe_namespace(ws::DescribeNamespaceRequest {
                        namespace: name,
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc("unable to describe namespace"))?
                    .into_inner();
                self.print_namespaces(&[resp]);
                Ok(())
            }
            NamespaceCommand::List => {
                let resp = self
                    .wf
                    .list_namespaces(ws::ListNamespacesRequest::default())
                    .await
                    .map_err(rpc("unable to list namespaces"))?
                    .into_inner();
                self.print_namespaces(&resp.namespaces);
                Ok(())
            }
            NamespaceCommand::Update {
                name,
                retention,
                description,
            } => {
                let name = pick(name, &self.namespace);
                let mut req = ws::UpdateNamespaceRequest {
                    namespace: name.clone(),
                    ..Default::default()
                };
                if let Some(d) = description {
                    req.update_info = Some(
                        temporalio_protos::temporal::api::namespace::v1::UpdateNamespaceInfo {
                            description: d,
                            ..Default::default()
                        },
                    );
                }
                if let Some(r) = retention {
                    req.config = Some(
                        temporalio_protos::temporal::api::namespace::v1::NamespaceConfig {
                            workflow_execution_retention_ttl: Some(parse_go_duration(&r)?),
                            ..Default::default()
                        },
                    );
                }
                self.wf
                    .update_namespace(req)
                    .await
                    .map_err(rpc("unable to update namespace"))?;
                println!("Namespace {name} update succeeded.");
                Ok(())
            }
        }
    }

    fn print_namespaces(&self, all: &[ws::DescribeNamespaceResponse]) {
        if self.output == Output::Json {
            let list: Vec<Value> = all
                .iter()
                .map(|n| {
                    let info = n.namespace_info.clone().unwrap_or_default();
                    let retention = n
                        .config
                        .as_ref()
                        .and_then(|c| c.workflow_execution_retention_ttl)
                        .map(|d| format!("{}s", d.seconds));
                    json!({"namespaceInfo": {"name": info.name, "id": info.id,
                            "description": info.description},
                        "config": {"workflowExecutionRetentionTtl": retention}})
                })
                .collect();
            print_json(&if list.len() == 1 && all.len() == 1 {
                list[0].clone()
            } else {
                Value::Array(list)
            });
            return;
        }
        for n in all {
            let info = n.namespace_info.clone().unwrap_or_default();
            let retention = n
                .config
                .as_ref()
                .and_then(|c| c.workflow_execution_retention_ttl)
                .map(|d| format!("{}h0m0s", d.seconds / 3600))
                .unwrap_or_default();
            print_record(
                None,
                &[
                    ("NamespaceInfo.Name", info.name),
                    ("NamespaceInfo.Id", info.id),
                    ("NamespaceInfo.Description", info.description),
                    ("Config.WorkflowExecutionRetentionTtl", retention),
                ],
            );
            println!();
        }
    }

    async fn search_attribute(&mut self, command: SearchAttributeCommand) -> anyhow::Result<()> {
        match command {
            SearchAttributeCommand::Create { name, types } => {
                if name.len() != types.len() || name.is_empty() {
                    bail!("give one --type per --name");
                }
                let mut attrs = HashMap::new();
                for (n, t) in name.iter().zip(&types) {
                    let ty = indexed_value_type(t)?;
                    attrs.insert(n.clone(), ty as i32);
                }
                self.op
                    .add_search_attributes(op::AddSearchAttributesRequest {
                        search_attributes: attrs,
                        namespace: self.namespace.clone(),
                    })
                    .await
                    .map_err(rpc("failed adding search attributes"))?;
                println!("Search attributes have been added");
                Ok(())
            }
            SearchAttributeCommand::List => {
                let resp = self
                    .op
                    .list_search_attributes(op::ListSearchAttributesRequest {
                        namespace: self.namespace.clone(),
                    })
                    .await
                    .map_err(rpc("unable to list search attributes"))?
                    .into_inner();
                let mut rows: Vec<(String, i32)> = resp
                    .system_attributes
                    .into_iter()
                    .chain(resp.custom_attributes)
                    .collect();
                rows.sort();
                let type_name = |t: i32| {
                    IndexedValueType::try_from(t)
                        .map(|t| {
                            t.as_str_name()
                                .trim_start_matches("INDEXED_VALUE_TYPE_")
                                .to_string()
                        })
                        .unwrap_or_default()
                };
                let pretty = |t: i32| match type_name(t).as_str() {
                    "KEYWORD_LIST" => "KeywordList".to_string(),
                    other => {
                        let mut c = other.to_lowercase();
                        if let Some(f) = c.get_mut(0..1) {
                            f.make_ascii_uppercase();
                        }
                        c
                    }
                };
                if self.output == Output::Json {
                    let list: Vec<Value> = rows
                        .iter()
                        .map(|(n, t)| json!({"name": n, "type": pretty(*t)}))
                        .collect();
                    print_json(&Value::Array(list));
                } else {
                    let rows: Vec<Vec<String>> = rows
                        .iter()
                        .map(|(n, t)| vec![n.clone(), pretty(*t)])
                        .collect();
                    print_table(&["Name", "Type"], &rows);
                }
                Ok(())
            }
            SearchAttributeCommand::Remove { name, yes } => {
                if !yes {
                    bail!("removing search attributes needs --yes");
                }
                self.op
                    .remove_search_attributes(op::RemoveSearchAttributesRequest {
                        search_attributes: name,
                        namespace: self.namespace.clone(),
                    })
                    .await
                    .map_err(rpc("failed removing search attributes"))?;
                println!("Search attributes have been removed");
                Ok(())
            }
        }
    }
}

pub(crate) fn indexed_value_type(name: &str) -> anyhow::Result<IndexedValueType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "text" => IndexedValueType::Text,
        "keyword" => IndexedValueType::Keyword,
        "int" => IndexedValueType::Int,
        "double" => IndexedValueType::Double,
        "bool" => IndexedValueType::Bool,
        "datetime" => IndexedValueType::Datetime,
        "keywordlist" => IndexedValueType::KeywordList,
        other => bail!(
            "unknown search attribute type {other:?}: use Text, Keyword, Int, Double, Bool, Datetime or KeywordList"
        ),
    })
}

/// Shard ids as ranges: `0-3,7,9-10` (`-` for none).
fn shard_ranges(shards: &[i32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let mut j = i;
        while j + 1 < shards.len() && shards[j + 1] == shards[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            shards[i].to_string()
        } else {
            format!("{}-{}", shards[i], shards[j])
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_print_as_ranges() {
        assert_eq!(super::shard_ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(super::shard_ranges(&[]), "-");
    }
}
