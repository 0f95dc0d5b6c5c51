//! The namespace registry: stored in the `namespaces` table, cached in memory.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kairos_persistence::{NamespaceRow, PutNamespace, Store};
use parking_lot::RwLock;
use prost::Message;
use temporalio_protos::temporal::api::enums::v1::{ArchivalState, NamespaceState};
use temporalio_protos::temporal::api::namespace::v1::{NamespaceConfig, NamespaceInfo};

use crate::error::{Error, Result};
use crate::state::NamespaceData;

/// A namespace as the server uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Info as returned by DescribeNamespace.
    pub info: NamespaceInfo,
    /// Config as returned by DescribeNamespace.
    pub config: NamespaceConfig,
    /// Registered custom search attributes: name to `IndexedValueType`.
    pub custom_search_attributes: Arc<HashMap<String, i32>>,
}

impl Namespace {
    /// How long closed runs are kept.
    pub fn retention(&self) -> Duration {
        kairos_core::time::from_pb_duration(self.config.workflow_execution_retention_ttl.as_ref())
    }
}

/// Why a namespace change did not happen.
#[derive(Debug)]
pub enum ChangeError<E> {
    /// The change itself refused.
    Refused(E),
    /// The namespace is missing, or the store failed.
    Store(Error),
}

/// Cached access to namespaces (cheap clone).
#[derive(Clone)]
pub struct Namespaces {
    store: Arc<dyn Store>,
    by_name: Arc<RwLock<HashMap<String, Arc<Namespace>>>>,
    /// Serializes read-modify-write changes of a namespace (two concurrent ones would each
    /// write back a copy without the other's change).
    changes: Arc<tokio::sync::Mutex<()>>,
}

fn decode(row: &NamespaceRow) -> Result<Namespace> {
    let data = NamespaceData::decode(row.data.as_slice())
        .map_err(|e| Error::Unavailable(format!("failed to decode namespace {}: {e}", row.name)))?;
    Ok(Namespace {
        id: row.id.clone(),
        name: row.name.clone(),
        info: data.info.unwrap_or_default(),
        config: data.config.unwrap_or_default(),
        custom_search_attributes: Arc::new(data.custom_search_attributes),
    })
}

impl Namespaces {
    /// Loads every namespace into the cache.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self> {
        let rows = store.list_namespaces().await?;
        let mut by_name = HashMap::new();
        for row in &rows {
            let ns = decode(row)?;
            by_name.insert(ns.name.clone(), Arc::new(ns));
        }
        Ok(Self {
            store,
            by_name: Arc::new(RwLock::new(by_name)),
            changes: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Reads every namespace again, so that namespaces another node of a cluster registered or
    /// changed are seen here.
    pub async fn reload(&self) -> Result<()> {
        let rows = self.store.list_namespaces().await?;
        let mut by_name = HashMap::new();
        for row in &rows {
            let ns = decode(row)?;
            by_name.insert(ns.name.clone(), Arc::new(ns));
        }
        *self.by_name.write() = by_name;
        Ok(())
    }

    /// Looks a namespace up by name.
    pub fn get(&self, name: &str) -> Result<Arc<Namespace>> {
        self.by_name
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NamespaceNotFound(name.to_string()))
    }

    /// Looks a namespace up by id.
    pub fn get_by_id(&self, id: &str) -> Option<Arc<Namespace>> {
        self.by_name.read().values().find(|n| n.id == id).cloned()
    }

    /// Every namespace, by name.
    pub fn list(&self) -> Vec<Arc<Namespace>> {
        let mut all: Vec<_> = self.by_name.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a namespace; `NamespaceAlreadyExists` if the name is taken.
    pub async fn register(
        &self,
        name: &str,
        description: &str,
        owner_email: &str,
        retention: Duration,
        data: HashMap<String, String>,
    ) -> Result<Arc<Namespace>> {
        self.create(
            name,
            description,
            owner_email,
            retention,
            data,
            PutNamespace::Create,
        )
        .await
    }

    /// Creates `name` with `retention` unless it exists: a namespace the server is configured
    /// with, created as it starts and before it serves (a backend may make such writes durable
    /// with its first write after `Store::start_serving`; SQLite does, a millisecond off a new
    /// database's first start).
    pub async fn create_at_start(&self, name: &str, retention: Duration) -> Result<()> {
        if self.get(name).is_err() {
            self.create(
                name,
                "",
                "",
                retention,
                HashMap::new(),
                PutNamespace::Create,
            )
            .await?;
        }
        Ok(())
    }

    /// Registers the custom search attributes `attributes` (name, `IndexedValueType`) on the
    /// namespace `name`, as the server starts (`--search-attribute NAME=TYPE`): one already
    /// registered with the same type is left as it is; a name that is not valid, reserved by the
    /// system, of an unknown type or registered with another type is refused.
    pub async fn register_at_start(&self, name: &str, attributes: &[(String, i32)]) -> Result<()> {
        let change = |custom: &mut HashMap<String, i32>| -> std::result::Result<(), String> {
            for (attr, ty) in attributes {
                let valid = attr.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && attr
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                    && attr.len() <= 255;
                if !valid {
                    return Err(format!("search attribute name {attr:?} is not valid"));
                }
                if kairos_visibility::attrs::is_reserved(attr) {
                    return Err(format!("search attribute {attr} is reserved by system"));
                }
                let Some(wanted) = kairos_visibility::AttrType::from_indexed_value_type(*ty) else {
                    return Err(format!("unknown search attribute type {ty} for {attr}"));
                };
                match custom.get(attr) {
                    Some(t) if *t == *ty => {}
                    Some(t) => {
                        let existing = kairos_visibility::AttrType::from_indexed_value_type(*t)
                            .map_or_else(|| t.to_string(), |t| t.to_string());
                        return Err(format!(
                            "search attribute {attr} already exists with type {existing}, not {wanted}"
                        ));
                    }
                    None => {
                        custom.insert(attr.clone(), *ty);
                    }
                }
            }
            Ok(())
        };
        match self.change_search_attributes(name, change).await {
            Ok(_) => Ok(()),
            Err(ChangeError::Refused(message)) => Err(Error::Invalid(message)),
            Err(ChangeError::Store(e)) => Err(e),
        }
    }

    async fn create(
        &self,
        name: &str,
        description: &str,
        owner_email: &str,
        retention: Duration,
        data: HashMap<String, String>,
        how: PutNamespace,
    ) -> Result<Arc<Namespace>> {
        if self.by_name.read().contains_key(name) {
            return Err(Error::NamespaceAlreadyExists(name.to_string()));
        }
        let info = NamespaceInfo {
            name: name.to_string(),
            state: NamespaceState::Registered as i32,
            description: description.to_string(),
            owner_email: owner_email.to_string(),
            data,
            id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let config = NamespaceConfig {
            workflow_execution_retention_ttl: kairos_core::time::to_pb_duration(retention),
            history_archival_state: ArchivalState::Disabled as i32,
            visibility_archival_state: ArchivalState::Disabled as i32,
            ..Default::default()
        };
        self.write(info, config, HashMap::new(), how).await
    }

    /// Replaces a namespace's info and config (name and id stay).
    pub async fn update(
        &self,
        info: NamespaceInfo,
        config: NamespaceConfig,
    ) -> Result<Arc<Namespace>> {
        let _one_at_a_time = self.changes.lock().await;
        let custom = self
            .get(&info.name)
            .map(|n| (*n.custom_search_attributes).clone())
            .unwrap_or_default();
        self.write(info, config, custom, PutNamespace::Replace)
            .await
    }

    /// Changes a namespace's registered custom search attributes with `change` (which may
    /// refuse), one change at a time.
    pub async fn change_search_attributes<E>(
        &self,
        name: &str,
        change: impl FnOnce(&mut HashMap<String, i32>) -> std::result::Result<(), E>,
    ) -> std::result::Result<Arc<Namespace>, ChangeError<E>> {
        let _one_at_a_time = self.changes.lock().await;
        let ns = self.get(name).map_err(ChangeError::Store)?;
        let mut custom = (*ns.custom_search_attributes).clone();
        change(&mut custom).map_err(ChangeError::Refused)?;
        self.write(
            ns.info.clone(),
            ns.config.clone(),
            custom,
            PutNamespace::Replace,
        )
        .await
        .map_err(ChangeError::Store)
    }

    async fn write(
        &self,
        info: NamespaceInfo,
        config: NamespaceConfig,
        custom: HashMap<String, i32>,
        how: PutNamespace,
    ) -> Result<Arc<Namespace>> {
        let row = NamespaceRow {
            id: info.id.clone(),
            name: info.name.clone(),
            data: NamespaceData {
                info: Some(info.clone()),
                config: Some(config.clone()),
                custom_search_attributes: custom.clone(),
            }
            .encode_to_vec(),
        };
        match self.store.put_namespace(row, how).await {
            Ok(()) => {}
            Err(kairos_persistence::Error::AlreadyExists(_)) => {
                return Err(Error::NamespaceAlreadyExists(info.name.clone()));
            }
            Err(e) => return Err(e.into()),
        }
        let ns = Arc::new(Namespace {
            id: info.id.clone(),
            name: info.name.clone(),
            info,
            config,
            custom_search_attributes: Arc::new(custom),
        });
        self.by_name.write().insert(ns.name.clone(), ns.clone());
        Ok(ns)
    }
}
