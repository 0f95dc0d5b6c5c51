//! Enum value names as the reference server writes them in messages and query values:
//! `WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES` -> `BadScheduleActivityAttributes`.

/// The protobuf name of an enum value without its `prefix`, in PascalCase.
pub fn pascal_case(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pascal_case;

    #[test]
    fn names_lose_their_prefix_and_shout() {
        assert_eq!(
            pascal_case(
                "WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES",
                "WORKFLOW_TASK_FAILED_CAUSE_"
            ),
            "BadScheduleActivityAttributes"
        );
        assert_eq!(
            pascal_case("WORKER_STATUS_SHUTTING_DOWN", "WORKER_STATUS_"),
            "ShuttingDown"
        );
        assert_eq!(pascal_case("", "X_"), "");
    }
}
