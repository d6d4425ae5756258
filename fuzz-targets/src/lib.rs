//! The bodies of keelson's fuzz targets. Each is a plain `fn(&[u8])` that runs the product's
//! own parser, decoder or patcher on arbitrary input and panics only where the product would
//! (a panic is the finding). `fuzz/` wraps each in libFuzzer's `fuzz_target!`; the replay test
//! (`tests/replay.rs`) runs every committed input in `fuzz/corpus/<target>/` on the stable
//! toolchain, so an input that once crashed stays checked.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent_config;
mod api_body;
mod crd;
mod dns_zone;
mod patch;
mod quantity;
mod selectors;

/// A fuzz target: its name (the libFuzzer binary and the corpus folder) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target, by name.
pub const TARGETS: &[Target] = &[
    ("json_body", api_body::json),
    ("yaml_body", api_body::yaml),
    ("protobuf_body", api_body::protobuf),
    ("merge_patch", patch::merge),
    ("strategic_merge_patch", patch::strategic),
    ("json_patch", patch::json),
    ("server_side_apply", patch::apply),
    ("label_selector", selectors::labels),
    ("field_selector", selectors::fields),
    ("quantity", quantity::parse),
    ("crd_schema", crd::schema),
    ("cel", crd::cel),
    ("dns_zone", dns_zone::lookups),
    ("agent_config", agent_config::parse),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// `data` as text, or `None` when it is not UTF-8 (the parsers that take `&str` never see
/// such input from their callers).
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
