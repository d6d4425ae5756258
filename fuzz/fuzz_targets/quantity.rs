#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keelson_fuzz_targets::target("quantity").expect("a target")(data)
});
