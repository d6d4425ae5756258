//! A strict checker of the Prometheus text exposition format, for tests that scrape a
//! `/metrics` endpoint (the node agent's, the API server's).
//!
//! [`check`] accepts both dialects Prometheus scrapes:
//! - OpenMetrics text (what `prometheus-client` writes): the last line is `# EOF`; a counter
//!   family `x` has samples `x_total` (and optionally `x_created`);
//! - the classic text format 0.0.4: no `# EOF`; a counter family's own name ends in `_total`.
//!
//! Both fail on what a lenient parser lets through and a scraper then silently mangles:
//! a family's samples split by another family's, `HELP`/`TYPE`/`UNIT` after the family's first
//! sample or given twice, a sample without a `TYPE`, a sample name that does not belong to its
//! family's type (a counter sample without `_total`, a histogram `_bucket` without `le` or
//! without a `+Inf` bucket), duplicate series, invalid metric or label names, unparsable values,
//! and names against the naming conventions: a non-counter ending in `_total`, or a unit that
//! is not a base unit (`_milliseconds`, `_ms`, `_percent`, ...: use `_seconds`, `_bytes`,
//! `_ratio`).

use std::collections::{BTreeMap, BTreeSet};

/// Why a text is not a valid exposition: the first problem found, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpositionError {
    /// The line the problem is on (1-based; the line after the last for a missing `# EOF`).
    pub line: usize,
    /// What is wrong, naming the family or sample.
    pub message: String,
}

impl std::fmt::Display for ExpositionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ExpositionError {}

/// Unit suffixes that are not Prometheus base units.
const NON_BASE_UNITS: &[&str] = &[
    "_ms",
    "_milliseconds",
    "_microseconds",
    "_us",
    "_nanoseconds",
    "_ns",
    "_minutes",
    "_hours",
    "_days",
    "_kilobytes",
    "_megabytes",
    "_gigabytes",
    "_kb",
    "_mb",
    "_percent",
    "_percentage",
];

const TYPES: &[&str] = &[
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "unknown",
    "untyped",
];

#[derive(Debug, Default)]
struct Family {
    kind: Option<String>,
    help: bool,
    unit: bool,
    /// A sample of this family was seen.
    sampled: bool,
    /// Another family's line came after this family's samples: it may not continue.
    closed: bool,
}

/// One parsed sample line.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
}

/// Checks `text` strictly; `Ok` holds the number of metric families.
pub fn check(text: &str) -> Result<usize, ExpositionError> {
    let openmetrics = text.lines().any(|l| l == "# EOF");
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    // The family whose lines are being read now.
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    // Histogram label sets (without `le`) that have buckets, and those with a `+Inf` one.
    let mut buckets: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    let mut eof_at = None;
    let mut last = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        last = number;
        let fail = |message: String| ExpositionError {
            line: number,
            message,
        };
        if let Some(at) = eof_at {
            return Err(fail(format!("content after `# EOF` (line {at})")));
        }
        if line == "# EOF" {
            eof_at = Some(number);
            continue;
        }
        if line.is_empty() {
            if openmetrics {
                return Err(fail("empty line".into()));
            }
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
                if openmetrics {
                    return Err(fail(format!("comment `{line}`")));
                }
                continue;
            }
            let name = words.next().unwrap_or_default();
            let rest = words.next().unwrap_or_default();
            if !valid_metric_name(name) {
                return Err(fail(format!("invalid metric name `{name}` in {keyword}")));
            }
            switch_to(&mut families, &mut current, name).map_err(fail)?;
            let family = families.entry(name.to_owned()).or_default();
            if family.sampled {
                return Err(fail(format!(
                    "{keyword} of `{name}` after its first sample"
                )));
            }
            match keyword {
                "HELP" if family.help => {
                    return Err(fail(format!("second HELP of `{name}`")));
                }
                "HELP" => family.help = true,
                "UNIT" if family.unit => {
                    return Err(fail(format!("second UNIT of `{name}`")));
                }
                "UNIT" => {
                    family.unit = true;
                    if !name.ends_with(&format!("_{rest}")) {
                        return Err(fail(format!("`{name}` does not end in its unit `{rest}`")));
                    }
                }
                _ if family.kind.is_some() => {
                    return Err(fail(format!("second TYPE of `{name}`")));
                }
                _ => {
                    if !TYPES.contains(&rest) {
                        return Err(fail(format!("unknown TYPE `{rest}` of `{name}`")));
                    }
                    check_family_name(name, rest, openmetrics).map_err(fail)?;
                    family.kind = Some(rest.to_owned());
                }
            }
            continue;
        }
        let sample = parse_sample(line).map_err(fail)?;
        let family = family_of(&families, sample.name)
            .ok_or_else(|| fail(format!("sample `{}` has no TYPE", sample.name)))?;
        switch_to(&mut families, &mut current, &family).map_err(fail)?;
        let entry = families.entry(family.clone()).or_default();
        entry.sampled = true;
        let kind = entry.kind.clone().unwrap_or_default();
        let suffix = &sample.name[family.len()..];
        let allowed: &[&str] = match (kind.as_str(), openmetrics) {
            ("counter", true) => &["_total", "_created"],
            ("histogram", _) => &["_bucket", "_count", "_sum", "_created"],
            ("gaugehistogram", _) => &["_bucket", "_gcount", "_gsum"],
            ("summary", _) => &["", "_count", "_sum", "_created"],
            ("info", true) => &["_info"],
            _ => &[""],
        };
        if !allowed.contains(&suffix) {
            return Err(fail(format!(
                "sample `{}` does not belong to {kind} `{family}`",
                sample.name
            )));
        }
        let mut names = BTreeSet::new();
        for (label, _) in &sample.labels {
            if !names.insert(label.as_str()) {
                return Err(fail(format!("label `{label}` twice")));
            }
        }
        let key = format!("{}{:?}", sample.name, sorted(&sample.labels));
        if !series.insert(key) {
            return Err(fail(format!("duplicate series `{line}`")));
        }
        if suffix == "_bucket" {
            let le = sample.labels.iter().find(|(l, _)| l == "le");
            let Some((_, le)) = le else {
                return Err(fail(format!("bucket `{line}` has no `le`")));
            };
            let rest: Vec<(String, String)> = sample
                .labels
                .iter()
                .filter(|(l, _)| l != "le")
                .cloned()
                .collect();
            let seen = buckets
                .entry(format!("{family}{:?}", sorted(&rest)))
                .or_insert((number, false));
            seen.1 |= le == "+Inf";
        }
    }
    if openmetrics && eof_at.is_none() {
        return Err(ExpositionError {
            line: last + 1,
            message: "no `# EOF`".into(),
        });
    }
    if let Some((set, (line, _))) = buckets.iter().find(|(_, (_, inf))| !inf) {
        return Err(ExpositionError {
            line: *line,
            message: format!("histogram series {set} has no `+Inf` bucket"),
        });
    }
    Ok(families.len())
}

/// Makes `name` the current family, closing the previous one; fails if `name` was closed.
fn switch_to(
    families: &mut BTreeMap<String, Family>,
    current: &mut Option<String>,
    name: &str,
) -> Result<(), String> {
    if current.as_deref() == Some(name) {
        return Ok(());
    }
    if let Some(previous) = current.take()
        && let Some(family) = families.get_mut(&previous)
    {
        family.closed = true;
    }
    if families.get(name).is_some_and(|f| f.closed) {
        return Err(format!(
            "family `{name}` continues after another family's lines"
        ));
    }
    *current = Some(name.to_owned());
    Ok(())
}

/// The declared family a sample name belongs to: the longest declared name it starts with.
fn family_of(families: &BTreeMap<String, Family>, sample: &str) -> Option<String> {
    families
        .iter()
        .filter(|(name, f)| f.kind.is_some() && sample.starts_with(name.as_str()))
        .map(|(name, _)| name)
        .max_by_key(|name| name.len())
        .cloned()
}

fn check_family_name(name: &str, kind: &str, openmetrics: bool) -> Result<(), String> {
    if let Some(unit) = NON_BASE_UNITS.iter().find(|u| name.ends_with(*u)) {
        return Err(format!(
            "`{name}` uses `{unit}`: use a base unit (`_seconds`, `_bytes`, `_ratio`)"
        ));
    }
    let total = name.ends_with("_total");
    match kind {
        "counter" if openmetrics && total => Err(format!(
            "OpenMetrics counter family `{name}` ends in `_total` (its samples add it)"
        )),
        "counter" if !openmetrics && !total => {
            Err(format!("counter `{name}` does not end in `_total`"))
        }
        "counter" => Ok(()),
        _ if total => Err(format!(
            "{kind} `{name}` ends in `_total`, kept for counters"
        )),
        _ => Ok(()),
    }
}

fn sorted(labels: &[(String, String)]) -> Vec<(String, String)> {
    let mut labels = labels.to_vec();
    labels.sort();
    labels
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample<'_>, String> {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name in `{line}`"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut closed_at = None;
        'labels: while let Some(&(start, c)) = chars.peek() {
            if c == '}' {
                closed_at = Some(start);
                break;
            }
            let eq = inner[start..]
                .find('=')
                .ok_or_else(|| format!("label without `=` in `{line}`"))?;
            let label = &inner[start..start + eq];
            if !valid_label_name(label) {
                return Err(format!("invalid label name `{label}` in `{line}`"));
            }
            // Skip to after `="`.
            while chars.next_if(|(i, _)| *i < start + eq + 1).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("unquoted value of `{label}` in `{line}`"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err(format!("bad escape in `{line}`")),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated label value in `{line}`")),
                }
            }
            labels.push((label.to_owned(), value));
            match chars.next() {
                Some((_, ',')) => {}
                Some((at, '}')) => {
                    closed_at = Some(at);
                    break 'labels;
                }
                _ => return Err(format!("expected `,` or `}}` in `{line}`")),
            }
        }
        let at = closed_at.ok_or_else(|| format!("unclosed labels in `{line}`"))?;
        rest = &inner[at + 1..];
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in `{line}`"))?
        .split(' ');
    let value = fields.next().unwrap_or_default();
    if !valid_value(value) {
        return Err(format!("invalid value `{value}` in `{line}`"));
    }
    if let Some(timestamp) = fields.next()
        && timestamp.parse::<f64>().is_err()
    {
        return Err(format!("invalid timestamp in `{line}`"));
    }
    if fields.next().is_some() {
        return Err(format!("trailing text in `{line}`"));
    }
    Ok(Sample { name, labels })
}

fn valid_value(value: &str) -> bool {
    matches!(value, "NaN" | "+Inf" | "-Inf")
        || (!value.is_empty()
            && !value.eq_ignore_ascii_case("inf")
            && !value.eq_ignore_ascii_case("nan")
            && value.parse::<f64>().is_ok_and(f64::is_finite))
}

#[cfg(test)]
mod tests {
    use super::check;

    const GOOD_OPENMETRICS: &str = "\
# HELP requests Requests.
# TYPE requests counter
requests_total{code=\"200\"} 3
requests_total{code=\"500\"} 1
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
latency_seconds_sum 0.5
latency_seconds_count 2
latency_seconds_bucket{le=\"0.1\"} 1
latency_seconds_bucket{le=\"+Inf\"} 2
# TYPE fill_ratio gauge
fill_ratio{map=\"a \\\"b\\\"\"} 0.25
# EOF
";

    const GOOD_CLASSIC: &str = "\
# HELP requests_total Requests.
# TYPE requests_total counter
requests_total{code=\"200\"} 3
# TYPE up gauge
up 1 1700000000000
";

    #[test]
    fn accepts_well_formed_output() {
        assert_eq!(check(GOOD_OPENMETRICS), Ok(3));
        assert_eq!(check(GOOD_CLASSIC), Ok(2));
    }

    /// Each broken text with the line and the start of the message the check gives.
    #[test]
    fn rejects_what_a_scraper_would_mangle() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "samples of a family split by another family's",
                "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n# EOF\n",
                5,
                "family `a` continues after another family's lines",
            ),
            (
                "TYPE of two families before their samples",
                "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\n# EOF\n",
                3,
                "family `a` continues after another family's lines",
            ),
            (
                "TYPE after the samples",
                "# HELP a A.\na 1\n# TYPE a gauge\n# EOF\n",
                2,
                "sample `a` has no TYPE",
            ),
            (
                "TYPE after a sample of its own family",
                "# TYPE a gauge\na 1\n# TYPE a gauge\n# EOF\n",
                3,
                "TYPE of `a` after its first sample",
            ),
            (
                "duplicate HELP",
                "# HELP a A.\n# HELP a A.\n# TYPE a gauge\na 1\n# EOF\n",
                2,
                "second HELP of `a`",
            ),
            (
                "duplicate TYPE",
                "# TYPE a gauge\n# TYPE a counter\na 1\n# EOF\n",
                2,
                "second TYPE of `a`",
            ),
            (
                "an OpenMetrics counter sample without _total",
                "# TYPE hits counter\nhits 1\n# EOF\n",
                2,
                "sample `hits` does not belong to counter `hits`",
            ),
            (
                "a classic counter without _total",
                "# TYPE hits counter\nhits 1\n",
                1,
                "counter `hits` does not end in `_total`",
            ),
            (
                "a gauge named like a counter",
                "# TYPE hits_total gauge\nhits_total 1\n",
                1,
                "gauge `hits_total` ends in `_total`, kept for counters",
            ),
            (
                "a bad metric name",
                "# TYPE 1abc gauge\n",
                1,
                "invalid metric name `1abc` in TYPE",
            ),
            (
                "a bad label name",
                "# TYPE a gauge\na{1x=\"1\"} 1\n",
                2,
                "invalid label name `1x`",
            ),
            (
                "milliseconds",
                "# TYPE sync_ms histogram\n",
                1,
                "`sync_ms` uses `_ms`",
            ),
            (
                "a duplicate series",
                "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",
                3,
                "duplicate series",
            ),
            (
                "a histogram without +Inf",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 1\n# EOF\n",
                2,
                "histogram series h[] has no `+Inf` bucket",
            ),
            (
                "a value that is not a number",
                "# TYPE a gauge\na one\n",
                2,
                "invalid value `one`",
            ),
            (
                "content after # EOF",
                "# TYPE a gauge\na 1\n# EOF\na 2\n",
                4,
                "content after `# EOF`",
            ),
        ];
        for (what, text, line, message) in cases {
            let error = check(text).expect_err(what);
            assert_eq!(error.line, *line, "{what}: {error}");
            assert!(error.message.starts_with(message), "{what}: {error}");
        }
    }
}
