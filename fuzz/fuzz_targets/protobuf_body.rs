#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keelson_fuzz_targets::target("protobuf_body").expect("a target")(data)
});
