#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keelson_fuzz_targets::target("yaml_body").expect("a target")(data)
});
