#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keelson_fuzz_targets::target("cel").expect("a target")(data)
});
