//! The part of Kubernetes' CEL libraries (`k8s.io/apiserver/pkg/cel/library`) keelson offers
//! to `x-kubernetes-validations` rules, on top of CEL's standard library and its `strings` and
//! `lists` extensions: the lists library (`isSorted`, `sum`, `min`, `max`), the regex library
//! (`find`, `findAll`), `isIP`/`isCIDR`, `isURL`, and quantities (`isQuantity`, `quantity` with
//! `compareTo`, `isLessThan`, `isGreaterThan`, `add`, `sub`, `asInteger`,
//! `asApproximateFloat`, `sign`, `isInteger`).
//!
//! A quantity is a CEL map with one private key holding its value in nano-units, so that two
//! equal quantities compare equal with `==`, as in kube. Durations and timestamps (CEL's
//! `duration()`/`timestamp()`, and fields of format `duration`, `date` and `date-time`) are
//! integers of nanoseconds: they compare, add and subtract as in kube, but have no methods.
//!
//! Not offered: `url()` and its getters, `ip()`/`cidr()` objects, the `format` and
//! `authorizer` libraries; a rule naming another function is refused when the CRD is written
//! ([`unsupported`]). `cel.bind` is a macro of the environment (in `cel`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use cel::extractors::{Arguments, This};
use cel::{Context, ExecutionError, Value};

use crate::quantity::Quantity;

/// The map key that marks a quantity.
const QUANTITY_KEY: &str = "@keelson.quantity.nanos";

/// The functions and member functions a rule may call: CEL's standard library, the two
/// extensions keelson loads, the optional-value functions, and [`install`]'s.
const KNOWN: &[&str] = &[
    // standard library
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    // strings extension
    "charAt",
    "indexOf",
    "lastIndexOf",
    "join",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "format",
    "strings.quote",
    "reverse",
    // lists extension
    "slice",
    "flatten",
    "distinct",
    "sort",
    "sortBy",
    "lists.range",
    "@sortByAssociatedKeys",
    // optional values
    "orValue",
    "hasValue",
    "value",
    "or",
    "optional.of",
    "optional.none",
    "optional.ofNonZeroValue",
    // keelson's share of the Kubernetes libraries
    "isSorted",
    "sum",
    "min",
    "max",
    "find",
    "findAll",
    "isIP",
    "isCIDR",
    "isURL",
    "isQuantity",
    "quantity",
    "compareTo",
    "isLessThan",
    "isGreaterThan",
    "add",
    "sub",
    "asInteger",
    "asApproximateFloat",
    "sign",
    "isInteger",
    "duration",
    "timestamp",
];

/// The Kubernetes library functions keelson does not offer, named so that the refusal says so.
const KUBE_ONLY: &[&str] = &[
    "url",
    "getScheme",
    "getHost",
    "getHostname",
    "getPort",
    "getEscapedPath",
    "getQuery",
    "ip",
    "cidr",
    "family",
    "isUnspecified",
    "isLoopback",
    "isLinkLocalMulticast",
    "isLinkLocalUnicast",
    "isGlobalUnicast",
    "ip.isCanonical",
    "containsIP",
    "containsCIDR",
    "masked",
    "prefixLength",
    "authorizer",
    "path",
    "group",
    "resource",
    "namespace",
    "name",
    "check",
    "allowed",
    "reason",
    "errored",
    "error",
    "serviceAccount",
    "subresource",
    "format.named",
    "validate",
    "getMilliseconds",
    "getSeconds",
    "getMinutes",
    "getHours",
    "getDayOfWeek",
    "getDayOfMonth",
    "getDayOfYear",
    "getMonth",
    "getFullYear",
    "getDate",
];

/// Why a function name cannot be used, in cel-go's words, or `None` when it can.
pub(crate) fn unsupported(name: &str) -> Option<String> {
    if name.starts_with('_')
        || name.starts_with('@')
        || name.starts_with('!')
        || name.starts_with('-')
    {
        return None;
    }
    if KNOWN.contains(&name) {
        return None;
    }
    if KUBE_ONLY.contains(&name) {
        return Some(format!(
            "undeclared reference to '{name}' (in container ''): keelson does not implement this Kubernetes CEL library function"
        ));
    }
    Some(format!(
        "undeclared reference to '{name}' (in container '')"
    ))
}

fn err(function: &str, msg: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, msg)
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::UInt(x), Value::UInt(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn list_of<'a>(v: &'a Value, function: &str) -> Result<&'a [Value], ExecutionError> {
    match v {
        Value::List(items) => Ok(items.as_slice()),
        other => Err(err(
            function,
            format!("no such overload for {:?}", other.type_of()),
        )),
    }
}

fn is_sorted(This(this): This<Value>) -> Result<Value, ExecutionError> {
    let items = list_of(&this, "isSorted")?;
    for pair in items.windows(2) {
        match compare(&pair[0], &pair[1]) {
            Some(std::cmp::Ordering::Greater) => return Ok(Value::Bool(false)),
            Some(_) => {}
            None => return Err(err("isSorted", "list elements are not comparable")),
        }
    }
    Ok(Value::Bool(true))
}

fn sum(This(this): This<Value>) -> Result<Value, ExecutionError> {
    let items = list_of(&this, "sum")?;
    let mut int: i64 = 0;
    let mut float: f64 = 0.0;
    let mut floats = false;
    for x in items {
        match x {
            Value::Int(i) => {
                int = int
                    .checked_add(*i)
                    .ok_or_else(|| err("sum", "integer overflow"))?;
            }
            Value::Float(f) => {
                floats = true;
                float += f;
            }
            _ => return Err(err("sum", "list elements are not numbers")),
        }
    }
    Ok(if floats {
        Value::Float(float + int as f64)
    } else {
        Value::Int(int)
    })
}

fn extreme(
    items: &[Value],
    function: &str,
    want: std::cmp::Ordering,
) -> Result<Value, ExecutionError> {
    let mut best: Option<&Value> = None;
    for x in items {
        best = match best {
            None => Some(x),
            Some(b) => match compare(x, b) {
                Some(o) if o == want => Some(x),
                Some(_) => Some(b),
                None => return Err(err(function, "list elements are not comparable")),
            },
        };
    }
    best.cloned()
        .ok_or_else(|| err(function, format!("{function} called on empty list")))
}

fn min(This(this): This<Value>) -> Result<Value, ExecutionError> {
    extreme(list_of(&this, "min")?, "min", std::cmp::Ordering::Less)
}

fn max(This(this): This<Value>) -> Result<Value, ExecutionError> {
    extreme(list_of(&this, "max")?, "max", std::cmp::Ordering::Greater)
}

fn text<'a>(v: &'a Value, function: &str) -> Result<&'a str, ExecutionError> {
    match v {
        Value::String(s) => Ok(s.as_str()),
        _ => Err(err(function, "expected a string")),
    }
}

fn regex_of(re: &str, function: &str) -> Result<regex::Regex, ExecutionError> {
    regex::Regex::new(re).map_err(|e| err(function, e))
}

fn find(This(this): This<Value>, re: Value) -> Result<Value, ExecutionError> {
    let s = text(&this, "find")?;
    let re = regex_of(text(&re, "find")?, "find")?;
    Ok(Value::from(
        re.find(s).map_or("", |m| m.as_str()).to_owned(),
    ))
}

fn find_all(This(this): This<Value>, Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    let s = text(&this, "findAll")?;
    let re = regex_of(
        text(args.first().unwrap_or(&Value::Null), "findAll")?,
        "findAll",
    )?;
    let limit = match args.get(1) {
        Some(Value::Int(n)) if *n >= 0 => usize::try_from(*n).unwrap_or(usize::MAX),
        Some(Value::Int(_)) | None => usize::MAX,
        Some(_) => return Err(err("findAll", "expected an int limit")),
    };
    let found: Vec<Value> = re
        .find_iter(s)
        .take(limit)
        .map(|m| Value::from(m.as_str().to_owned()))
        .collect();
    Ok(Value::List(Arc::new(found)))
}

/// kube's `isIP`: an IPv4 or IPv6 address without a zone, IPv4-mapped IPv6 refused.
fn is_ip(s: Value) -> Result<Value, ExecutionError> {
    let s = text(&s, "isIP")?;
    let ok = match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => !s.contains(':'),
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_none(),
        Err(_) => false,
    };
    Ok(Value::Bool(ok))
}

fn is_cidr(s: Value) -> Result<Value, ExecutionError> {
    let s = text(&s, "isCIDR")?;
    let ok = s.split_once('/').is_some_and(|(ip, bits)| {
        let Ok(bits) = bits.parse::<u8>() else {
            return false;
        };
        (ip.parse::<Ipv4Addr>().is_ok() && bits <= 32)
            || (ip.parse::<Ipv6Addr>().is_ok() && bits <= 128)
    });
    Ok(Value::Bool(ok))
}

/// kube's `isURL` (Go's `url.ParseRequestURI`): an absolute URL or an absolute path.
fn is_url(s: Value) -> Result<Value, ExecutionError> {
    let s = text(&s, "isURL")?;
    let ok = if s.starts_with('/') {
        !s.contains(char::is_whitespace)
    } else {
        s.split_once(':').is_some_and(|(scheme, rest)| {
            scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !rest.is_empty()
                && !rest.contains(char::is_whitespace)
        })
    };
    Ok(Value::Bool(ok))
}

fn is_quantity(s: Value) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(
        Quantity::parse(text(&s, "isQuantity")?).is_ok(),
    ))
}

fn quantity_value(nanos: i128) -> Value {
    let mut m: HashMap<String, Value> = HashMap::new();
    m.insert(QUANTITY_KEY.to_owned(), Value::from(nanos.to_string()));
    Value::from(m)
}

fn quantity(s: Value) -> Result<Value, ExecutionError> {
    let q = Quantity::parse(text(&s, "quantity")?).map_err(|e| err("quantity", e))?;
    Ok(quantity_value(q.nanos()))
}

fn nanos_of(v: &Value, function: &str) -> Result<i128, ExecutionError> {
    if let Value::Map(m) = v
        && let Some(Value::String(n)) = m.map.get(&cel::objects::Key::from(QUANTITY_KEY))
    {
        return n.parse().map_err(|_| err(function, "not a quantity"));
    }
    if let Value::Int(i) = v {
        return Ok(i128::from(*i) * 1_000_000_000);
    }
    Err(err(function, "not a quantity"))
}

const NANO: i128 = 1_000_000_000;

fn compare_to(This(this): This<Value>, other: Value) -> Result<Value, ExecutionError> {
    let o = nanos_of(&this, "compareTo")?.cmp(&nanos_of(&other, "compareTo")?);
    Ok(Value::Int(o as i64))
}

fn is_less_than(This(this): This<Value>, other: Value) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(
        nanos_of(&this, "isLessThan")? < nanos_of(&other, "isLessThan")?,
    ))
}

fn is_greater_than(This(this): This<Value>, other: Value) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(
        nanos_of(&this, "isGreaterThan")? > nanos_of(&other, "isGreaterThan")?,
    ))
}

fn add(This(this): This<Value>, other: Value) -> Result<Value, ExecutionError> {
    let n = nanos_of(&this, "add")?
        .checked_add(nanos_of(&other, "add")?)
        .ok_or_else(|| err("add", "quantity overflow"))?;
    Ok(quantity_value(n))
}

fn sub(This(this): This<Value>, other: Value) -> Result<Value, ExecutionError> {
    let n = nanos_of(&this, "sub")?
        .checked_sub(nanos_of(&other, "sub")?)
        .ok_or_else(|| err("sub", "quantity overflow"))?;
    Ok(quantity_value(n))
}

fn as_integer(This(this): This<Value>) -> Result<Value, ExecutionError> {
    let n = nanos_of(&this, "asInteger")?;
    if n % NANO != 0 {
        return Err(err("asInteger", "cannot convert value to integer"));
    }
    i64::try_from(n / NANO)
        .map(Value::Int)
        .map_err(|_| err("asInteger", "cannot convert value to integer"))
}

fn as_approximate_float(This(this): This<Value>) -> Result<Value, ExecutionError> {
    Ok(Value::Float(
        nanos_of(&this, "asApproximateFloat")? as f64 / NANO as f64,
    ))
}

fn sign(This(this): This<Value>) -> Result<Value, ExecutionError> {
    Ok(Value::Int(nanos_of(&this, "sign")?.signum() as i64))
}

fn is_integer(This(this): This<Value>) -> Result<Value, ExecutionError> {
    let n = nanos_of(&this, "isInteger")?;
    Ok(Value::Bool(
        n % NANO == 0 && i64::try_from(n / NANO).is_ok(),
    ))
}

fn duration(s: Value) -> Result<Value, ExecutionError> {
    let t = text(&s, "duration")?;
    super::formats::go_duration_nanos(t)
        .and_then(|n| i64::try_from(n).ok())
        .map(Value::Int)
        .ok_or_else(|| err("duration", format!("time: invalid duration \"{t}\"")))
}

fn timestamp(s: Value) -> Result<Value, ExecutionError> {
    let t = text(&s, "timestamp")?;
    super::formats::timestamp_nanos(t)
        .and_then(|n| i64::try_from(n).ok())
        .map(Value::Int)
        .ok_or_else(|| err("timestamp", format!("cannot parse \"{t}\" as a timestamp")))
}

/// Adds keelson's share of the Kubernetes libraries to an evaluation context.
pub(crate) fn install(ctx: &mut Context<'_, '_>) -> Result<(), cel::DeclarationError> {
    ctx.add_function("isSorted", is_sorted)?;
    ctx.add_function("sum", sum)?;
    ctx.add_function("min", min)?;
    ctx.add_function("max", max)?;
    ctx.add_function("find", find)?;
    ctx.add_function("findAll", find_all)?;
    ctx.add_function("isIP", is_ip)?;
    ctx.add_function("isCIDR", is_cidr)?;
    ctx.add_function("isURL", is_url)?;
    ctx.add_function("isQuantity", is_quantity)?;
    ctx.add_function("quantity", quantity)?;
    ctx.add_function("compareTo", compare_to)?;
    ctx.add_function("isLessThan", is_less_than)?;
    ctx.add_function("isGreaterThan", is_greater_than)?;
    ctx.add_function("add", add)?;
    ctx.add_function("sub", sub)?;
    ctx.add_function("asInteger", as_integer)?;
    ctx.add_function("asApproximateFloat", as_approximate_float)?;
    ctx.add_function("sign", sign)?;
    ctx.add_function("isInteger", is_integer)?;
    ctx.add_function("duration", duration)?;
    ctx.add_function("timestamp", timestamp)?;
    Ok(())
}
