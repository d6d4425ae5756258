//! Field paths as `field.Path` prints them, the `fieldPath` of a rule (`ValidFieldPath`), and
//! the escaping of property names in CEL (`k8s.io/apiserver/pkg/cel/escaping.go`).

use super::schema::Node;

/// `path.Child(name)`.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `path.Key(k)`.
pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

/// `path.Index(i)`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Checks a rule's `fieldPath` (`.a.b`, `.a['b.c']`) against the schema the rule sits on and
/// returns it as a path relative to the rule (`a.b`, `a[b.c]`).
pub(crate) fn rule_field_path(schema: &Node, path: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut s = schema;
    let mut rest = path;
    let step = |s: &mut &Node, name: &str, out: &mut String| -> Result<(), String> {
        if !s.properties.is_empty() {
            let next = s
                .properties
                .get(name)
                .ok_or_else(|| "does not refer to a valid field".to_owned())?;
            *out = child(out, name);
            *s = next;
        } else if let Some(ap) = s.additional_schema() {
            *out = key(out, name);
            *s = ap;
        } else {
            return Err("does not refer to a valid field".to_owned());
        }
        Ok(())
    };
    let mut steps = 0usize;
    while !rest.is_empty() {
        steps += 1;
        if steps > 1000 {
            return Err("path too long".to_owned());
        }
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() {
                return Err("unexpected end of JSON path".to_owned());
            }
            step(&mut s, name, &mut out)?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r
                .find("']")
                .ok_or_else(|| "unexpected end of JSON path".to_owned())?;
            let name = r[..end].replace("\\'", "'").replace("\\\\", "\\");
            step(&mut s, &name, &mut out)?;
            rest = &r[end + 2..];
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        }
    }
    Ok(out)
}

/// CEL's reserved words, which no identifier may be.
pub(crate) const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The name a property has in CEL, or `None` when CEL cannot name it.
pub(crate) fn escape(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "_.-/".contains(c));
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
    {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("__") {
            out.push_str("__underscores__");
            rest = r;
            continue;
        }
        match c {
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}
