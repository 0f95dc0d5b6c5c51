//! Search attributes: their types, the system and predefined ones, and how a name in a query
//! resolves (brief D): custom attribute, then system or predefined name, then the name with
//! the `Temporal` prefix added or removed; `ScheduleId` is `WorkflowId`.
use std::collections::HashMap;
use std::fmt;

use kairos_core::filter::Column;

/// The type of a search attribute (the `IndexedValueType` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrType {
    Text,
    Keyword,
    Int,
    Double,
    Bool,
    Datetime,
    KeywordList,
}

impl AttrType {
    /// The name the SDKs expect in a payload's `type` metadata.
    pub fn name(self) -> &'static str {
        match self {
            AttrType::Text => "Text",
            AttrType::Keyword => "Keyword",
            AttrType::Int => "Int",
            AttrType::Double => "Double",
            AttrType::Bool => "Bool",
            AttrType::Datetime => "Datetime",
            AttrType::KeywordList => "KeywordList",
        }
    }

    /// From a `type` metadata value or a type name (case-insensitive).
    pub fn from_name(name: &str) -> Option<AttrType> {
        let all = [
            AttrType::Text,
            AttrType::Keyword,
            AttrType::Int,
            AttrType::Double,
            AttrType::Bool,
            AttrType::Datetime,
            AttrType::KeywordList,
        ];
        all.into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The `IndexedValueType` enum value.
    pub fn indexed_value_type(self) -> i32 {
        match self {
            AttrType::Text => 1,
            AttrType::Keyword => 2,
            AttrType::Int => 3,
            AttrType::Double => 4,
            AttrType::Bool => 5,
            AttrType::Datetime => 6,
            AttrType::KeywordList => 7,
        }
    }

    /// From an `IndexedValueType` enum value.
    pub fn from_indexed_value_type(v: i32) -> Option<AttrType> {
        match v {
            1 => Some(AttrType::Text),
            2 => Some(AttrType::Keyword),
            3 => Some(AttrType::Int),
            4 => Some(AttrType::Double),
            5 => Some(AttrType::Bool),
            6 => Some(AttrType::Datetime),
            7 => Some(AttrType::KeywordList),
            _ => None,
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A system attribute: a column of the visibility record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemAttr {
    pub name: &'static str,
    pub column: Column,
    pub ty: AttrType,
}

/// The system attributes, each a column of the visibility row.
pub const SYSTEM: &[SystemAttr] = &[
    SystemAttr {
        name: "WorkflowId",
        column: Column::WorkflowId,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "RunId",
        column: Column::RunId,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "WorkflowType",
        column: Column::WorkflowType,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "TaskQueue",
        column: Column::TaskQueue,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "ExecutionStatus",
        column: Column::Status,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "ParentWorkflowId",
        column: Column::ParentWorkflowId,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "ParentRunId",
        column: Column::ParentRunId,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "RootWorkflowId",
        column: Column::RootWorkflowId,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "RootRunId",
        column: Column::RootRunId,
        ty: AttrType::Keyword,
    },
    SystemAttr {
        name: "StartTime",
        column: Column::StartTime,
        ty: AttrType::Datetime,
    },
    SystemAttr {
        name: "ExecutionTime",
        column: Column::ExecutionTime,
        ty: AttrType::Datetime,
    },
    SystemAttr {
        name: "CloseTime",
        column: Column::CloseTime,
        ty: AttrType::Datetime,
    },
    SystemAttr {
        name: "HistoryLength",
        column: Column::HistoryLength,
        ty: AttrType::Int,
    },
    SystemAttr {
        name: "HistorySizeBytes",
        column: Column::HistorySizeBytes,
        ty: AttrType::Int,
    },
    SystemAttr {
        name: "StateTransitionCount",
        column: Column::StateTransitionCount,
        ty: AttrType::Int,
    },
    SystemAttr {
        name: "ExecutionDuration",
        column: Column::ExecutionDuration,
        ty: AttrType::Int,
    },
];

/// Predefined attributes: stored like custom ones, with these fixed types.
pub const PREDEFINED: &[(&str, AttrType)] = &[
    ("TemporalChangeVersion", AttrType::KeywordList),
    ("BinaryChecksums", AttrType::KeywordList),
    ("BuildIds", AttrType::KeywordList),
    ("TemporalPauseInfo", AttrType::KeywordList),
    ("TemporalReportedProblems", AttrType::KeywordList),
    ("BatcherUser", AttrType::Keyword),
    ("TemporalScheduledById", AttrType::Keyword),
    ("TemporalNamespaceDivision", AttrType::Keyword),
    ("TemporalWorkerDeployment", AttrType::Keyword),
    ("TemporalWorkerDeploymentVersion", AttrType::Keyword),
    ("TemporalWorkflowVersioningBehavior", AttrType::Keyword),
    ("TemporalScheduledStartTime", AttrType::Datetime),
    ("TemporalSchedulePaused", AttrType::Bool),
];

/// What a name in a query stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// A column of the visibility row.
    System(SystemAttr),
    /// A row of the attributes table under this name.
    Stored { name: String, ty: AttrType },
}

impl Resolved {
    pub fn ty(&self) -> AttrType {
        match self {
            Resolved::System(s) => s.ty,
            Resolved::Stored { ty, .. } => *ty,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resolved::System(s) => s.name,
            Resolved::Stored { name, .. } => name,
        }
    }
}

/// The type of a predefined attribute.
pub fn predefined(name: &str) -> Option<AttrType> {
    PREDEFINED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Whether `name` is a system or predefined attribute (a custom one may not take it).
pub fn is_reserved(name: &str) -> bool {
    SYSTEM.iter().any(|s| s.name == name) || predefined(name).is_some()
}

/// Resolves a name written in a query, given the namespace's custom attributes.
pub fn resolve(name: &str, custom: &HashMap<String, AttrType>) -> Result<Resolved, String> {
    let lookup = |n: &str| -> Option<Resolved> {
        if let Some(ty) = custom.get(n) {
            return Some(Resolved::Stored {
                name: n.to_string(),
                ty: *ty,
            });
        }
        if let Some(s) = SYSTEM.iter().find(|s| s.name == n) {
            return Some(Resolved::System(*s));
        }
        predefined(n).map(|ty| Resolved::Stored {
            name: n.to_string(),
            ty,
        })
    };
    if name == "ScheduleId" {
        return Ok(lookup("WorkflowId").expect("a system attribute"));
    }
    if let Some(r) = lookup(name) {
        return Ok(r);
    }
    let other = match name.strip_prefix("Temporal") {
        Some(rest) => rest.to_string(),
        None => format!("Temporal{name}"),
    };
    lookup(&other).ok_or_else(|| format!("invalid search attribute: {name}"))
}
