#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keelson_fuzz_targets::target("crd_schema").expect("a target")(data)
});
