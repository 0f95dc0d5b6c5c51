//! Smoke test of the decoders of untrusted bytes (`kairos_testing::decoders`, the entry point
//! of the fuzz target in `fuzz/`): valid samples of every kind, mutated (bytes flipped, cut,
//! repeated, spliced) and pure noise, through every decoder. Nothing may panic. Seeded: the
//! seed is printed, and `KAIROS_DECODERS_SEED=N` replays it; `fuzz/` runs the same entry point
//! under a coverage-guided fuzzer for as long as one likes.
use std::io::Write;

use kairos_testing::decoders::decode_any;
use prost::Message;

/// Inputs tried per run (split over the decoders).
const ROUNDS: usize = 200_000;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("in memory");
    encoder.finish().expect("in memory")
}

fn frame(compressed: bool, body: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Valid inputs of each decoder, with its selector byte in front.
fn samples() -> Vec<Vec<u8>> {
    let mut samples = Vec::new();
    let with = |which: u8, body: Vec<u8>| {
        let mut v = vec![which];
        v.extend(body);
        v
    };
    samples.push(with(0, frame(false, b"a plain request message")));
    samples.push(with(1, frame(true, &gzip(&[7u8; 5000]))));
    samples.push(with(
        1,
        [frame(true, &gzip(b"one")), frame(false, b"two")].concat(),
    ));
    let token = kairos_history::state::TaskTokenData {
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        run_id: "run".into(),
        scheduled_event_id: 5,
        attempt: 1,
        kind: kairos_history::token::ACTIVITY_TASK,
        ..Default::default()
    };
    samples.push(with(2, token.encode_to_vec()));
    let mut row = Vec::new();
    for event in [&b"first event"[..], &[1u8; 300][..]] {
        row.push(0x0A);
        let mut len = event.len() as u64;
        while len >= 0x80 {
            row.push((len as u8) | 0x80);
            len >>= 7;
        }
        row.push(len as u8);
        row.extend_from_slice(event);
    }
    samples.push(with(3, row));
    for query in [
        "WorkflowType = 'Pizza' AND ExecutionStatus = 'Running'",
        "CustomerId IN ('a', 'b') OR Amount BETWEEN 1 AND 9223372036854775807",
        "StartTime > '2026-12-03T00:00:00Z' AND NOT (When IS NULL)",
        "ExecutionDuration > '2h45m' AND WorkflowId STARTS_WITH 'order-'",
        "GROUP BY ExecutionStatus",
    ] {
        samples.push(with(4, query.as_bytes().to_vec()));
    }
    for text in [
        "2026-12-03T10:00:00.123456789+01:00",
        "1796282141062589301",
        "90s",
        "99:59:59",
        "1d",
    ] {
        samples.push(with(5, text.as_bytes().to_vec()));
    }
    for spec in [
        "*/5 * * * *",
        "0 12 * * MON-FRI",
        "@hourly",
        "@every 90s",
        "59 23 31 12 *",
    ] {
        samples.push(with(6, spec.as_bytes().to_vec()));
    }
    let state = kairos_history::state::MutableState {
        workflow_id: "wf".into(),
        run_timeout: Some(prost_wkt_types::Duration {
            seconds: i64::MAX,
            nanos: i32::MAX,
        }),
        start_time_ms: i64::MAX,
        ..Default::default()
    };
    samples.push(with(7, state.encode_to_vec()));
    samples
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random change to `input` (its selector byte is kept).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    if input.is_empty() {
        input.push(rng.next() as u8);
    }
    let len = input.len();
    match rng.below(6) {
        0 if len > 1 => {
            let at = 1 + rng.below(len - 1);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 1 => input.truncate(1 + rng.below(len - 1)),
        2 => {
            let at = 1 + rng.below(len);
            input.insert(at.min(len), rng.next() as u8);
        }
        3 if len > 2 => {
            let from = 1 + rng.below(len - 1);
            let to = (from + 1 + rng.below(16)).min(len);
            let piece = input[from..to].to_vec();
            input.extend_from_slice(&piece);
        }
        4 if len > 1 => {
            let at = 1 + rng.below(len - 1);
            input[at] = [0x00, 0x7f, 0x80, 0xff, b'\'', b'(', b'0'][rng.below(7)];
        }
        _ => {
            for _ in 0..rng.below(8) {
                input.push(rng.next() as u8);
            }
        }
    }
}

#[test]
fn decoders_refuse_mutated_and_random_input_without_panicking() {
    let seed: u64 = std::env::var("KAIROS_DECODERS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("decoders seed: {seed} (replay with KAIROS_DECODERS_SEED={seed})");
    let samples = samples();
    for sample in &samples {
        decode_any(sample);
    }
    let mut rng = Rng(seed);
    for round in 0..ROUNDS {
        let mut input = if round % 10 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            samples[rng.below(samples.len())].clone()
        };
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input);
        }
        decode_any(&input);
    }
}
