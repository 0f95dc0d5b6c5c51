//! Every decoder of untrusted bytes, behind one entry point: the fuzz target in `fuzz/` feeds
//! it coverage-guided input, and the `decoders` smoke test feeds it seeded random and mutated
//! input in CI. A decoder may refuse its input; it must never panic, hang or allocate without
//! bound.
use std::collections::HashMap;

/// Largest request the request decoder is allowed to inflate here.
const MAX_REQUEST: usize = 1024 * 1024;

/// Decodes `data` with the decoder its first byte picks: gRPC request bodies (plain or gzip),
/// task tokens of each kind, stored history rows, visibility queries (parsed and compiled),
/// visibility datetimes and durations, and cron schedules (parsed, then their next fire time).
pub fn decode_any(data: &[u8]) {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(input);
    match which % 8 {
        0 => {
            let _ =
                std::hint::black_box(kairos_frontend::inflate_request(input, false, MAX_REQUEST));
        }
        1 => {
            let _ =
                std::hint::black_box(kairos_frontend::inflate_request(input, true, MAX_REQUEST));
        }
        2 => {
            for kind in [
                kairos_history::token::WORKFLOW_TASK,
                kairos_history::token::ACTIVITY_TASK,
                kairos_history::token::QUERY_TASK,
            ] {
                let _ = std::hint::black_box(kairos_history::token::decode(input, kind));
            }
        }
        3 => {
            let _ = std::hint::black_box(kairos_persistence_sqlite::split_history_row(input));
        }
        4 => {
            let mut custom = HashMap::new();
            custom.insert(
                "CustomerId".to_string(),
                kairos_visibility::AttrType::Keyword,
            );
            custom.insert("Amount".to_string(), kairos_visibility::AttrType::Int);
            custom.insert("When".to_string(), kairos_visibility::AttrType::Datetime);
            let _ = std::hint::black_box(kairos_visibility::compile_text(&text, &custom));
        }
        5 => {
            let _ = std::hint::black_box(kairos_visibility::compile::parse_datetime_ns(&text));
            let _ = std::hint::black_box(kairos_visibility::compile::parse_duration_ns(&text));
        }
        6 => {
            if let Ok(schedule) = kairos_history::cron::CronSchedule::parse(&text) {
                let _ = std::hint::black_box(schedule.next(std::time::SystemTime::UNIX_EPOCH));
                let _ = std::hint::black_box(schedule.next(std::time::SystemTime::now()));
            }
        }
        _ => {
            // A stored run: decoded, then its times read the way the engine reads them.
            if let Ok(ms) = <kairos_history::state::MutableState as prost::Message>::decode(input) {
                for d in [&ms.run_timeout, &ms.execution_timeout, &ms.wft_timeout] {
                    let d = kairos_core::time::from_pb_duration(d.as_ref());
                    let _ = std::hint::black_box(kairos_core::time::add(
                        std::time::SystemTime::now(),
                        d,
                    ));
                }
                let _ = std::hint::black_box(kairos_core::time::from_millis(ms.start_time_ms));
            }
        }
    }
}
