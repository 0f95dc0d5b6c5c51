//! Every decoder of untrusted bytes (`kairos_testing::decoders::decode_any`: request bodies,
//! task tokens, history rows, visibility queries and times, cron schedules, stored run state)
//! under libFuzzer. The first input byte picks the decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kairos_testing::decoders::decode_any(data);
});
