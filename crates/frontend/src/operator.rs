//! OperatorService: search-attribute administration (per namespace, stored with it). Other
//! RPCs answer UNIMPLEMENTED naming themselves (generated default stubs).
use std::collections::HashMap;

use kairos_proto::operatorservice::operator_service_server;
use kairos_visibility::AttrType;
use temporalio_protos::temporal::api::operatorservice::v1::{
    AddSearchAttributesRequest, AddSearchAttributesResponse, ListSearchAttributesRequest,
    ListSearchAttributesResponse, RemoveSearchAttributesRequest, RemoveSearchAttributesResponse,
};
use tonic::{Request, Response, Status};

use crate::error::{invalid, to_status};
use crate::workflow::{Frontend, system_search_attributes};

/// The operator service.
#[derive(Clone)]
pub struct Operator {
    frontend: Frontend,
}

impl Operator {
    pub(crate) fn new(frontend: Frontend) -> Self {
        Self { frontend }
    }

    async fn change(
        &self,
        namespace: &str,
        change: impl FnOnce(&mut HashMap<String, i32>) -> Result<(), Status>,
    ) -> Result<(), Status> {
        match self
            .frontend
            .engine
            .namespaces()
            .change_search_attributes(namespace, change)
            .await
        {
            Ok(_) => Ok(()),
            Err(kairos_history::namespace::ChangeError::Refused(status)) => Err(status),
            Err(kairos_history::namespace::ChangeError::Store(e)) => Err(to_status(e)),
        }
    }

    fn namespace_name(name: &str) -> &str {
        if name.is_empty() { "default" } else { name }
    }
}

/// A custom attribute name: letters, digits, `_`, `-` and `.`, starting with a letter.
fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.len() <= 255
}

#[tonic::async_trait]
impl operator_service_server::OperatorService for Operator {
    async fn add_search_attributes(
        &self,
        request: Request<AddSearchAttributesRequest>,
    ) -> Result<Response<AddSearchAttributesResponse>, Status> {
        let req = request.into_inner();
        let ns = self
            .frontend
            .namespace(Self::namespace_name(&req.namespace))?;
        if req.search_attributes.is_empty() {
            return Err(invalid("Search attributes are not set on request."));
        }
        let requested = req.search_attributes.clone();
        let change = |custom: &mut HashMap<String, i32>| -> Result<(), Status> {
            for (name, ty) in &requested {
                if !valid_name(name) {
                    return Err(invalid(format!(
                        "Search attribute name {name:?} is not valid."
                    )));
                }
                if kairos_visibility::attrs::is_reserved(name) {
                    return Err(invalid(format!(
                        "Search attribute {name} is reserved by system."
                    )));
                }
                let Some(t) = AttrType::from_indexed_value_type(*ty) else {
                    return Err(invalid(format!(
                        "Unknown search attribute type {ty} for {name}."
                    )));
                };
                match custom
                    .get(name)
                    .and_then(|t| AttrType::from_indexed_value_type(*t))
                {
                    Some(existing) if existing == t => {}
                    Some(existing) => {
                        return Err(Status::already_exists(format!(
                            "search attribute {name} already exists and has different type {existing}"
                        )));
                    }
                    None => {
                        custom.insert(name.clone(), *ty);
                    }
                }
            }
            Ok(())
        };
        self.change(&ns.name, change).await?;
        Ok(Response::new(AddSearchAttributesResponse {}))
    }

    async fn remove_search_attributes(
        &self,
        request: Request<RemoveSearchAttributesRequest>,
    ) -> Result<Response<RemoveSearchAttributesResponse>, Status> {
        let req = request.into_inner();
        let ns = self
            .frontend
            .namespace(Self::namespace_name(&req.namespace))?;
        let names = req.search_attributes.clone();
        let change = |custom: &mut HashMap<String, i32>| -> Result<(), Status> {
            for name in &names {
                if kairos_visibility::attrs::is_reserved(name) {
                    return Err(invalid(format!(
                        "Unable to remove non-custom search attribute {name}."
                    )));
                }
                // Removing an unknown name is not an error (as in the reference).
                custom.remove(name);
            }
            Ok(())
        };
        self.change(&ns.name, change).await?;
        Ok(Response::new(RemoveSearchAttributesResponse {}))
    }

    async fn list_search_attributes(
        &self,
        request: Request<ListSearchAttributesRequest>,
    ) -> Result<Response<ListSearchAttributesResponse>, Status> {
        let req = request.into_inner();
        let ns = self
            .frontend
            .namespace(Self::namespace_name(&req.namespace))?;
        Ok(Response::new(ListSearchAttributesResponse {
            custom_attributes: (*ns.custom_search_attributes).clone(),
            system_attributes: system_search_attributes(),
            storage_schema: HashMap::new(),
        }))
    }
}
