//! A static cost estimate of a CEL rule over its schema, in the spirit of cel-go's
//! `checker.Cost` as apiextensions uses it: every list, map and string is as large as the schema
//! lets it be (`maxItems`, `maxProperties`, `maxLength`), or, without a bound, as large as fits
//! in a 3 MiB request; a comprehension costs its range's size times its body.
//!
//! Simpler than cel-go: one number (the maximum) instead of a range, and per-function costs
//! rounded to cel-go's main factors (0.1 per character traversed, 0.25 per character times
//! pattern character for `matches`, linear `in` on lists). The same walk, fed the sizes seen in
//! an actual value ([`Sizes::observed`]), bounds the work of one evaluation at run time.

use std::sync::LazyLock;

use cel::common::ast::{Expr, IdedExpr};
use serde_json::Value;

use super::cel::literal_size;
use super::path::escape;
use super::schema::Node;

/// kube's `MaxRequestSizeBytes` (3 MiB): what bounds an unbounded list, map or string.
const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

/// Go's message for a cost over a limit (`getCostErrorMessage`).
pub(crate) fn cost_message(name: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_owned()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{name} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// Where sizes come from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sizes {
    /// The schema's bounds (CRD creation).
    Static,
    /// The schema's bounds, capped by the largest list, map and string in the value.
    Observed { list: u64, map: u64, string: u64 },
}

/// The smallest JSON a value of schema `n` can take, as kube estimates it (`MinSerializedSize`):
/// an object counts its required properties that have no default.
fn min_size(n: &Node) -> u64 {
    if n.int_or_string {
        return 1;
    }
    match n.ty.as_str() {
        "string" => 2,
        "boolean" => 4,
        "array" => 2,
        "object" => n
            .properties
            .iter()
            .filter(|(k, p)| n.required.contains(k) && p.default.is_none())
            .fold(2u64, |acc, (k, p)| {
                acc.saturating_add(k.len() as u64 + min_size(p) + 4)
            }),
        _ => 1,
    }
}

impl Sizes {
    /// The largest list, map and string in `v` and `old`; at a resource's root, without its
    /// `metadata` (rules see only its name there).
    pub(crate) fn observed(v: &Value, old: Option<&Value>, resource: bool) -> Sizes {
        let mut s = (0u64, 0u64, 0u64);
        let mut stack: Vec<&Value> = Vec::new();
        for top in std::iter::once(v).chain(old) {
            match top {
                Value::Object(map) if resource => {
                    s.1 = s.1.max(map.len() as u64);
                    stack.extend(map.iter().filter(|(k, _)| *k != "metadata").map(|(_, f)| f));
                    if let Some(meta) = map.get("metadata") {
                        for name in ["name", "generateName"] {
                            stack.extend(meta.get(name));
                        }
                    }
                }
                other => stack.push(other),
            }
        }
        while let Some(x) = stack.pop() {
            match x {
                Value::Array(items) => {
                    s.0 = s.0.max(items.len() as u64);
                    stack.extend(items.iter());
                }
                Value::Object(map) => {
                    s.1 = s.1.max(map.len() as u64);
                    for (k, f) in map {
                        s.2 = s.2.max(k.chars().count() as u64);
                        stack.push(f);
                    }
                }
                Value::String(t) => s.2 = s.2.max(t.chars().count() as u64),
                _ => {}
            }
        }
        Sizes::Observed {
            list: s.0,
            map: s.1,
            string: s.2,
        }
    }

    /// The most elements (list), entries (map) or characters (string) `n` can hold.
    pub(crate) fn size_of(self, n: &Node) -> u64 {
        let unbounded = MAX_REQUEST_SIZE_BYTES - 2;
        let (bound, seen) = if n.ty == "array" {
            let each = n.items.as_deref().map_or(1, min_size);
            let b = n.max_items.unwrap_or(unbounded / (each + 1));
            (b, self.list())
        } else if n.ty == "string" || n.int_or_string {
            // maxLength counts characters; kube reasons in bytes, up to 4 per character.
            let longest_enum = n.enumeration.as_ref().map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.len() as u64)
                    .max()
                    .unwrap_or(0)
            });
            let timeish = matches!(n.format.as_deref(), Some("duration" | "date" | "date-time"));
            let b = match (n.max_length, longest_enum) {
                // kube bounds these by their longest JSON form; keelson's CEL sees integers.
                _ if timeish => 64,
                (Some(max), _) => max.saturating_mul(4),
                (None, Some(longest)) if !n.int_or_string => longest,
                _ => unbounded,
            };
            (b, self.string())
        } else if n.ty == "object" || n.preserve_unknown {
            match n.additional_schema() {
                Some(ap) => (
                    n.max_properties.unwrap_or(unbounded / (min_size(ap) + 6)),
                    self.map(),
                ),
                None if n.preserve_unknown => {
                    (n.max_properties.unwrap_or(unbounded / 6), self.map())
                }
                None => (n.properties.len() as u64, u64::MAX),
            }
        } else {
            (0, u64::MAX)
        };
        bound.min(seen)
    }

    fn list(self) -> u64 {
        match self {
            Sizes::Static => u64::MAX,
            Sizes::Observed { list, .. } => list,
        }
    }

    fn map(self) -> u64 {
        match self {
            Sizes::Static => u64::MAX,
            Sizes::Observed { map, .. } => map,
        }
    }

    fn string(self) -> u64 {
        match self {
            Sizes::Static => u64::MAX,
            Sizes::Observed { string, .. } => string,
        }
    }

    fn unknown(self) -> u64 {
        match self {
            Sizes::Static => MAX_REQUEST_SIZE_BYTES,
            Sizes::Observed { list, map, string } => list.max(map).max(string),
        }
    }
}

/// What rules see of a resource's `metadata` (only `name` and `generateName`) and of its
/// `apiVersion` and `kind`.
static RESOURCE_META: LazyLock<(Node, Node)> = LazyLock::new(|| {
    let string = Node {
        ty: "string".to_owned(),
        ..Node::default()
    };
    let mut meta = Node {
        ty: "object".to_owned(),
        ..Node::default()
    };
    meta.properties.insert("name".to_owned(), string.clone());
    meta.properties
        .insert("generateName".to_owned(), string.clone());
    (meta, string)
});

/// What the estimator knows of a value: its schema, if any, and its largest size.
#[derive(Clone, Copy)]
struct Ty<'a> {
    node: Option<&'a Node>,
    size: u64,
}

/// The result of an estimate.
pub(crate) struct Estimate {
    pub cost: u64,
    /// (expression id, message) of each selection of a field the schema does not have and
    /// each call of a function keelson does not offer.
    pub undefined: Vec<(u64, String)>,
}

/// Estimates rules that sit on one schema node.
pub(crate) struct Estimator<'a> {
    root: &'a Node,
    resource: bool,
    sizes: Sizes,
}

fn ceil_tenth(x: u64) -> u64 {
    x.div_ceil(10)
}

impl<'a> Estimator<'a> {
    pub(crate) fn new(root: &'a Node, resource: bool, sizes: Sizes) -> Self {
        Estimator {
            root,
            resource,
            sizes,
        }
    }

    /// The estimated cost of `e` with `self`/`oldSelf` bound to the root node.
    pub(crate) fn estimate(&self, e: &IdedExpr) -> Estimate {
        let mut undefined = Vec::new();
        let this = self.ty_of(self.root);
        let mut scope = vec![("self".to_owned(), this), ("oldSelf".to_owned(), this)];
        let (cost, _) = self.walk(e, &mut scope, &mut undefined, 0);
        Estimate { cost, undefined }
    }

    fn ty_of(&self, n: &'a Node) -> Ty<'a> {
        Ty {
            node: Some(n),
            size: self.sizes.size_of(n),
        }
    }

    fn unknown(&self) -> Ty<'a> {
        Ty {
            node: None,
            size: self.sizes.unknown(),
        }
    }

    fn sized(size: u64) -> Ty<'a> {
        Ty { node: None, size }
    }

    /// The type of one element of a list (or key of a map) of type `t`.
    fn element(&self, t: Ty<'a>) -> Ty<'a> {
        match t.node {
            Some(n) if n.ty == "array" => n
                .items
                .as_deref()
                .map_or_else(|| self.unknown(), |i| self.ty_of(i)),
            Some(n) if n.ty == "object" => Self::sized(self.sizes.size_of(&Node {
                ty: "string".to_owned(),
                ..Node::default()
            })),
            _ => self.unknown(),
        }
    }

    fn select(
        &self,
        t: Ty<'a>,
        field: &str,
        id: u64,
        undefined: &mut Vec<(u64, String)>,
    ) -> Ty<'a> {
        let Some(n) = t.node else {
            return self.unknown();
        };
        if let Some((_, p)) = n
            .properties
            .iter()
            .find(|(k, _)| escape(k).as_deref() == Some(field))
        {
            return self.ty_of(p);
        }
        if let Some(ap) = n.additional_schema() {
            return self.ty_of(ap);
        }
        let resource = (std::ptr::eq(n, self.root) && self.resource) || n.embedded;
        if resource {
            match field {
                "apiVersion" | "kind" => return self.ty_of(&RESOURCE_META.1),
                "metadata" => return self.ty_of(&RESOURCE_META.0),
                _ => {}
            }
        }
        // Unknown fields kept by x-kubernetes-preserve-unknown-fields are not visible to CEL.
        if n.ty != "object" {
            return self.unknown();
        }
        undefined.push((id, format!("undefined field '{field}'")));
        self.unknown()
    }

    fn walk(
        &self,
        e: &IdedExpr,
        scope: &mut Vec<(String, Ty<'a>)>,
        undefined: &mut Vec<(u64, String)>,
        depth: usize,
    ) -> (u64, Ty<'a>) {
        if depth > 200 {
            return (u64::MAX, self.unknown());
        }
        let d = depth + 1;
        match &e.expr {
            Expr::Unspecified => (0, self.unknown()),
            Expr::Literal(l) => (0, Self::sized(literal_size(l))),
            Expr::Ident(name) => {
                let t = scope
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map_or_else(|| self.unknown(), |(_, t)| *t);
                (1, t)
            }
            Expr::Select(sel) => {
                let (c, t) = self.walk(&sel.operand, scope, undefined, d);
                let out = self.select(t, &sel.field, e.id, undefined);
                (c.saturating_add(1), out)
            }
            Expr::List(l) => {
                let mut cost = 10u64;
                for x in &l.elements {
                    cost = cost.saturating_add(self.walk(x, scope, undefined, d).0);
                }
                (cost, Self::sized(l.elements.len() as u64))
            }
            Expr::Map(m) => {
                let mut cost = 30u64;
                for entry in &m.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                        cost = cost.saturating_add(self.walk(&me.key, scope, undefined, d).0);
                        cost = cost.saturating_add(self.walk(&me.value, scope, undefined, d).0);
                    }
                }
                (cost, Self::sized(m.entries.len() as u64))
            }
            Expr::Struct(st) => {
                let mut cost = 40u64;
                for entry in &st.entries {
                    if let cel::common::ast::EntryExpr::StructField(f) = &entry.expr {
                        cost = cost.saturating_add(self.walk(&f.value, scope, undefined, d).0);
                    }
                }
                (cost, self.unknown())
            }
            Expr::Comprehension(c) => {
                let (rc, range) = self.walk(&c.iter_range, scope, undefined, d);
                let (ic, _) = self.walk(&c.accu_init, scope, undefined, d);
                let elem = self.element(range);
                let pushed = 2 + usize::from(c.iter_var2.is_some());
                scope.push((c.iter_var.clone(), elem));
                if let Some(v2) = &c.iter_var2 {
                    scope.push((v2.clone(), self.unknown()));
                }
                scope.push((c.accu_var.clone(), Self::sized(range.size)));
                let (cc, _) = self.walk(&c.loop_cond, scope, undefined, d);
                let (sc, _) = self.walk(&c.loop_step, scope, undefined, d);
                let (resc, _) = self.walk(&c.result, scope, undefined, d);
                scope.truncate(scope.len() - pushed);
                let per = cc.saturating_add(sc);
                let cost = rc
                    .saturating_add(ic)
                    .saturating_add(range.size.saturating_mul(per))
                    .saturating_add(resc);
                (cost, Self::sized(range.size))
            }
            Expr::Call(call) => {
                // Arguments first, as cel-go's checker reports them.
                let out = self.call(call, scope, undefined, d);
                if let Some(why) = super::library::unsupported(&call.func_name) {
                    undefined.push((e.id, why));
                }
                out
            }
        }
    }

    fn call(
        &self,
        call: &cel::common::ast::CallExpr,
        scope: &mut Vec<(String, Ty<'a>)>,
        undefined: &mut Vec<(u64, String)>,
        d: usize,
    ) -> (u64, Ty<'a>) {
        let mut base = 0u64;
        let mut args: Vec<Ty<'a>> = Vec::with_capacity(call.args.len() + 1);
        if let Some(t) = &call.target {
            let (c, ty) = self.walk(t, scope, undefined, d);
            base = base.saturating_add(c);
            args.push(ty);
        }
        let mut arg_costs = Vec::with_capacity(call.args.len());
        for a in &call.args {
            let (c, ty) = self.walk(a, scope, undefined, d);
            arg_costs.push(c);
            args.push(ty);
        }
        let sum: u64 = arg_costs.iter().fold(base, |a, c| a.saturating_add(*c));
        let size = |i: usize| args.get(i).map_or(0, |t| t.size);
        let name = call.func_name.as_str();
        match name {
            "_&&_" | "_||_" | "@not_strictly_false" => (sum, Self::sized(0)),
            "_?_:_" => {
                let cond = arg_costs.first().copied().unwrap_or(0);
                let a = arg_costs.get(1).copied().unwrap_or(0);
                let b = arg_costs.get(2).copied().unwrap_or(0);
                let t = if size(1) >= size(2) {
                    args.get(1)
                } else {
                    args.get(2)
                };
                (
                    cond.saturating_add(a.max(b)),
                    t.copied().unwrap_or_else(|| self.unknown()),
                )
            }
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" => (
                sum.saturating_add(1)
                    .saturating_add(ceil_tenth(size(0).min(size(1)))),
                Self::sized(0),
            ),
            "_+_" => {
                let grown = size(0).saturating_add(size(1));
                (
                    sum.saturating_add(1).saturating_add(ceil_tenth(grown)),
                    Self::sized(grown),
                )
            }
            "_[_]" | "_[?_]" => {
                let t = args.first().copied().unwrap_or_else(|| self.unknown());
                let out = match t.node {
                    Some(n) if n.ty == "array" || n.additional_schema().is_some() => {
                        self.element_or_value(n)
                    }
                    _ => self.unknown(),
                };
                (sum.saturating_add(1), out)
            }
            "@in" => (
                sum.saturating_add(1).saturating_add(size(1)),
                Self::sized(0),
            ),
            "size" => (sum.saturating_add(1), Self::sized(0)),
            // cel-go: a tenth of the characters of both strings.
            "contains" => (
                sum.saturating_add(1)
                    .saturating_add(ceil_tenth(size(0).saturating_add(size(1)))),
                Self::sized(0),
            ),
            "startsWith" | "endsWith" => (
                sum.saturating_add(1).saturating_add(ceil_tenth(size(1))),
                Self::sized(0),
            ),
            "matches" => {
                // `s.matches(re)` and `matches(s, re)` both put the string first.
                let cost = size(0).saturating_mul(size(1).max(1)).div_ceil(4);
                (sum.saturating_add(1).saturating_add(cost), Self::sized(0))
            }
            "replace" => {
                let grown = size(0).saturating_mul(size(2).max(1));
                (
                    sum.saturating_add(1).saturating_add(ceil_tenth(grown)),
                    Self::sized(grown),
                )
            }
            "lowerAscii" | "upperAscii" | "trim" | "split" | "join" | "substring" | "indexOf"
            | "lastIndexOf" | "charAt" | "reverse" | "strings.quote" | "format" => (
                sum.saturating_add(1).saturating_add(ceil_tenth(size(0))),
                Self::sized(size(0)),
            ),
            "sort" | "distinct" | "flatten" | "slice" | "@sortByAssociatedKeys" => {
                let n = size(0);
                (
                    sum.saturating_add(1)
                        .saturating_add(n.saturating_mul(n.max(1).ilog2().max(1) as u64)),
                    Self::sized(n),
                )
            }
            "lists.range" => (sum.saturating_add(1), Self::sized(self.sizes.unknown())),
            "string" | "bytes" | "dyn" => (
                sum.saturating_add(1).saturating_add(ceil_tenth(size(0))),
                args.first()
                    .map_or_else(|| self.unknown(), |t| Self::sized(t.size)),
            ),
            _ => (sum.saturating_add(1), self.unknown()),
        }
    }

    fn element_or_value(&self, n: &'a Node) -> Ty<'a> {
        if n.ty == "array" {
            n.items
                .as_deref()
                .map_or_else(|| self.unknown(), |i| self.ty_of(i))
        } else {
            n.additional_schema()
                .map_or_else(|| self.unknown(), |a| self.ty_of(a))
        }
    }
}
