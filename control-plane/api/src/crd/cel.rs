//! `x-kubernetes-validations`: CEL rules compiled with the `cel` crate, their estimated cost,
//! and their evaluation against custom resources (apiextensions `pkg/apiserver/schema/cel`).
//!
//! The environment is CEL's standard library with the `strings` and `lists` extensions; the
//! Kubernetes libraries keelson offers are in `library` (with durations and timestamps as
//! nanoseconds); ratcheting is not there.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::ast::LiteralValue;
use cel::objects::OptionalValue;
use cel::{Context, Env, Program};
use serde_json::Value;

use super::cost::{Estimator, Sizes, cost_message};
use super::path::{child, escape, index, key, rule_field_path};
use super::schema::{Node, RuleSpec};
use crate::validation::{ErrorType, FieldError, go_quote};

/// `StaticEstimatedCostLimit`: the most one rule may cost, times how often it can run.
pub(crate) const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// `StaticEstimatedCRDCostLimit`: the most all rules of one schema may cost together.
pub(crate) const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;
/// `PerCallLimit`: the most one evaluation of one rule may cost.
pub(crate) const PER_CALL_LIMIT: u64 = 1_000_000;
/// `RuntimeCELCostBudget`: the most all rules may cost on one object.
pub(crate) const RUNTIME_COST_BUDGET: u64 = 10_000_000;
/// `MaxEvaluatedMessageExpressionSizeBytes`.
const MAX_MESSAGE_EXPRESSION_BYTES: usize = 5 * 1024;

/// CEL's standard library, the `strings` and `lists` extensions and the `cel.bind` macro.
pub(crate) fn environment() -> Result<Env, cel::DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)?;
    env.add_extension(cel::extensions::lists)?;
    env.add_macro(cel::parser::Macro::receiver("bind", 3, bind_macro))?;
    Ok(env)
}

/// The environment every rule compiles and runs in (a test checks that
/// [`environment`] builds, so the fallback is never taken).
pub(crate) static ENV: LazyLock<Arc<Env>> =
    LazyLock::new(|| Arc::new(environment().unwrap_or_else(|_| Env::stdlib())));

/// `cel.bind(name, init, expr)`: `expr` with `name` bound to `init`, expanded as cel-go does,
/// into a comprehension over an empty list whose accumulator is `name`.
fn bind_macro(
    helper: &mut cel::parser::MacroExprHelper<'_>,
    target: &mut Option<cel::common::ast::IdedExpr>,
    args: &mut Vec<cel::common::ast::IdedExpr>,
) -> Result<Option<cel::common::ast::IdedExpr>, cel::ParseError> {
    use cel::common::ast::{ComprehensionExpr, Expr, ListExpr};
    if !matches!(target.as_ref().map(|t| &t.expr), Some(Expr::Ident(n)) if n == "cel") {
        return Ok(None);
    }
    let [name, init, body]: [cel::common::ast::IdedExpr; 3] = std::mem::take(args)
        .try_into()
        .map_err(|_| helper.new_error(0, "cel.bind() takes three arguments"))?;
    let Expr::Ident(var) = &name.expr else {
        return Err(helper.new_error(
            name.id,
            "cel.bind() variable names must be simple identifiers",
        ));
    };
    let var = var.clone();
    let bind = ComprehensionExpr {
        iter_range: helper.next_expr(Expr::List(ListExpr::new(Vec::new()))),
        iter_var: "#unused".to_owned(),
        iter_var2: None,
        accu_var: var.clone(),
        accu_init: init,
        loop_cond: helper.next_expr(Expr::Literal(LiteralValue::Boolean(false.into()))),
        loop_step: helper.next_expr(Expr::Ident(var)),
        result: body,
    };
    Ok(Some(helper.next_expr(Expr::Comprehension(Box::new(bind)))))
}

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub spec: RuleSpec,
    pub program: Program,
    pub message_expression: Option<Program>,
    /// The depth of the deeper of the rule and its message expression.
    pub depth: usize,
    pub uses_old_self: bool,
    /// The rule's `fieldPath`, relative to where it sits (`a.b`).
    pub field_path: Option<String>,
}

/// Where a node sits, for compiling its rules.
#[derive(Clone)]
pub(crate) struct Place {
    /// How many times a rule here can run for one object.
    pub cardinality: u64,
    /// The highest ancestor whose old and new values cannot be correlated, if any.
    pub uncorrelatable: Option<String>,
    pub resource: bool,
}

/// The running total of estimated cost over one schema.
#[derive(Default)]
pub(crate) struct Total {
    pub cost: u64,
    /// (cost, rule path) of every rule, to name the most expensive ones.
    pub rules: Vec<(u64, String)>,
}

/// Go's `%#v` of an `apiextensions.ValidationRule`, as kube prints the value of a rule error.
fn render_rule(r: &RuleSpec) -> String {
    let reason = if r.reason.is_some() {
        "(*apiextensions.FieldValueErrorReason)(0xc000000000)"
    } else {
        "(*apiextensions.FieldValueErrorReason)(nil)"
    };
    let old = match r.optional_old_self {
        Some(_) => "(*bool)(0xc000000000)",
        None => "(*bool)(nil)",
    };
    format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{reason}, FieldPath:{}, OptionalOldSelf:{old}}}",
        go_quote(&r.rule),
        go_quote(r.message.as_deref().unwrap_or("")),
        go_quote(r.message_expression.as_deref().unwrap_or("")),
        go_quote(r.field_path.as_deref().unwrap_or("")),
    )
}

/// cel-go's way of pointing at a position: `ERROR: <input>:1:5: msg` then the source line and
/// a caret under the column.
pub(crate) fn located(source: &str, offset: usize, msg: &str) -> String {
    let before: String = source.chars().take(offset).collect();
    let line_no = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
    let line = source.lines().nth(line_no - 1).unwrap_or("");
    format!(
        "ERROR: <input>:{line_no}:{}: {msg}\n | {line}\n | {}^",
        col + 1,
        ".".repeat(col)
    )
}

/// The deepest expression tree a rule may have. cel-go allows 250 levels of parser recursion;
/// keelson allows fewer so that its recursive parser and interpreter stay within
/// [`STACK_FOR_CEL`].
pub(crate) const MAX_EXPRESSION_DEPTH: usize = 100;

/// The stack CEL parsing and evaluation run on ([`with_stack`]): in a debug build the parser
/// takes about 300 KiB and the interpreter about 32 KiB per level of nesting.
const STACK_FOR_CEL: usize = 128 << 20;

/// Runs `f` (parsing) with at least 32 MiB of stack, on a fresh [`STACK_FOR_CEL`] segment when
/// the current thread has less left (a Tokio worker has 2 MiB).
pub(crate) fn with_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(32 << 20, STACK_FOR_CEL, f)
}

/// Runs `f` (evaluation of expressions at most `depth` deep) on the current stack when it has
/// room for them -- 96 KiB a level (a debug build takes up to about 60 KiB), plus 512 KiB --
/// else on a fresh segment. Shallow rules, the usual case, then cost no allocation.
pub(crate) fn with_stack_for<R>(depth: usize, f: impl FnOnce() -> R) -> R {
    let needed = (512 << 10) + depth.saturating_mul(96 << 10);
    stacker::maybe_grow(needed, (2 * needed).max(8 << 20), f)
}

/// How deep an expression tree is, counted without recursion.
pub(crate) fn depth_of(e: &cel::common::ast::IdedExpr) -> usize {
    use cel::common::ast::{EntryExpr, Expr};
    let mut deepest = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        match &e.expr {
            Expr::Call(c) => {
                stack.extend(c.target.iter().map(|t| (&**t, d + 1)));
                stack.extend(c.args.iter().map(|a| (a, d + 1)));
            }
            Expr::Select(s) => stack.push((&s.operand, d + 1)),
            Expr::List(l) => stack.extend(l.elements.iter().map(|x| (x, d + 1))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        stack.push((&me.key, d + 1));
                        stack.push((&me.value, d + 1));
                    }
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        stack.push((&f.value, d + 1));
                    }
                }
            }
            Expr::Comprehension(c) => {
                for x in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    stack.push((x, d + 1));
                }
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    deepest
}

/// Parses one expression: cel-go's error text on failure.
pub(crate) fn compile_source(source: &str) -> Result<Program, String> {
    // The parser recurses once per bracket; refuse deep nesting before it can run out of stack.
    let mut open = 0usize;
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => open += 1,
            ')' | ']' | '}' => open = open.saturating_sub(1),
            _ => {}
        }
        if open > MAX_EXPRESSION_DEPTH / 2 {
            return Err(located(
                source,
                0,
                &format!("expression recursion limit exceeded: {MAX_EXPRESSION_DEPTH}"),
            ));
        }
    }
    let program = ENV
        .compile(source)
        .map_err(|e| e.to_string().replace("\n| ", "\n | "))?;
    if depth_of(program.expression()) > MAX_EXPRESSION_DEPTH {
        return Err(located(
            source,
            0,
            &format!("expression recursion limit exceeded: {MAX_EXPRESSION_DEPTH}"),
        ));
    }
    Ok(program)
}

/// Compiles the rules of `node` and every node below it, checking costs, recording errors
/// under `path` (the schema path).
pub(crate) fn compile_tree(
    node: &mut Node,
    path: &str,
    place: &Place,
    total: &mut Total,
    errs: &mut Vec<FieldError>,
) {
    compile_here(node, path, place, total, errs);
    let est_size = |n: &Node| Sizes::Static.size_of(n);
    let map_atomic = node.map_type.as_deref() == Some("atomic");
    let list_is_map = node.list_type.as_deref() == Some("map");
    let list_size = est_size(node);
    let forbid = |p: &Place| {
        let mut p = p.clone();
        if p.uncorrelatable.is_none() {
            p.uncorrelatable = Some(path.to_owned());
        }
        p
    };
    for (k, sub) in &mut node.properties {
        let mut p = if map_atomic {
            forbid(place)
        } else {
            place.clone()
        };
        p.resource = sub.embedded;
        compile_tree(sub, &key(&child(path, "properties"), k), &p, total, errs);
    }
    if let Some(super::schema::Additional::Schema(ap)) = &mut node.additional {
        let mut p = if map_atomic {
            forbid(place)
        } else {
            place.clone()
        };
        p.cardinality = p.cardinality.saturating_mul(list_size.max(1));
        p.resource = ap.embedded;
        compile_tree(ap, &child(path, "additionalProperties"), &p, total, errs);
    }
    if let Some(items) = &mut node.items {
        let mut p = if list_is_map {
            place.clone()
        } else {
            forbid(place)
        };
        p.cardinality = p.cardinality.saturating_mul(list_size.max(1));
        p.resource = items.embedded;
        compile_tree(items, &child(path, "items"), &p, total, errs);
    }
}

fn compile_here(
    node: &mut Node,
    path: &str,
    place: &Place,
    total: &mut Total,
    errs: &mut Vec<FieldError>,
) {
    let specs = node.rule_specs.clone();
    let mut compiled = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = index(&child(path, "x-kubernetes-validations"), i);
        let rule_at = child(&at, "rule");
        let rule = spec.rule.trim();
        if rule.is_empty() {
            continue;
        }
        let program = match compile_source(rule) {
            Ok(p) => p,
            Err(e) => {
                errs.push(FieldError::invalid_rendered(
                    &rule_at,
                    render_rule(spec),
                    format!("compilation failed: {e}"),
                ));
                continue;
            }
        };
        let estimator = Estimator::new(node, place.resource, Sizes::Static);
        let estimate = estimator.estimate(program.expression());
        if let Some((id, msg)) = estimate.undefined.first() {
            let offset = program
                .source_info()
                .offset_for(*id)
                .map_or(0, |(start, _)| start as usize);
            errs.push(FieldError::invalid_rendered(
                &rule_at,
                render_rule(spec),
                format!("compilation failed: {}", located(rule, offset, msg)),
            ));
            continue;
        }
        let cost = estimate.cost.saturating_mul(place.cardinality);
        if cost > STATIC_ESTIMATED_COST_LIMIT {
            errs.push(FieldError::forbidden(
                &rule_at,
                cost_message("estimated rule cost", cost, STATIC_ESTIMATED_COST_LIMIT),
            ));
        }
        total.cost = total.cost.saturating_add(cost);
        total.rules.push((cost, rule_at.clone()));
        let message_expression = match spec.message_expression.as_deref().map(str::trim) {
            Some(src) if !src.is_empty() => match compile_source(src) {
                Ok(p) => {
                    let c = Estimator::new(node, place.resource, Sizes::Static)
                        .estimate(p.expression())
                        .cost
                        .saturating_mul(place.cardinality);
                    let me_at = child(&at, "messageExpression");
                    if c > STATIC_ESTIMATED_COST_LIMIT {
                        errs.push(FieldError::forbidden(
                            &me_at,
                            cost_message(
                                "estimated messageExpression cost",
                                c,
                                STATIC_ESTIMATED_COST_LIMIT,
                            ),
                        ));
                    }
                    total.cost = total.cost.saturating_add(c);
                    total.rules.push((c, me_at));
                    Some(p)
                }
                Err(e) => {
                    errs.push(FieldError::invalid_rendered(
                        &child(&at, "messageExpression"),
                        render_rule(spec),
                        format!("messageExpression compilation failed: {e}"),
                    ));
                    None
                }
            },
            _ => None,
        };
        let uses_old_self = program.references().has_variable("oldSelf");
        if uses_old_self {
            if let Some(up) = &place.uncorrelatable {
                errs.push(FieldError::invalid(
                    &rule_at,
                    spec.rule.as_str(),
                    format!("oldSelf cannot be used on the uncorrelatable portion of the schema within {up}"),
                ));
            }
        } else if let Some(b) = spec.optional_old_self {
            errs.push(FieldError::invalid(
                &child(&at, "optionalOldSelf"),
                b,
                "may not be set if oldSelf is not used in rule",
            ));
        }
        let field_path = spec
            .field_path
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .and_then(|p| rule_field_path(node, p.trim()).ok());
        let depth = depth_of(program.expression()).max(
            message_expression
                .as_ref()
                .map_or(0, |m| depth_of(m.expression())),
        );
        compiled.push(Arc::new(CompiledRule {
            spec: spec.clone(),
            program,
            message_expression,
            depth,
            uses_old_self,
            field_path,
        }));
    }
    node.rules = compiled;
}

/// The errors for a schema whose rules together cost too much.
pub(crate) fn total_errors(total: &Total, path: &str, errs: &mut Vec<FieldError>) {
    if total.cost <= STATIC_ESTIMATED_CRD_COST_LIMIT {
        return;
    }
    // kube names the most expensive rules that together pass the limit.
    let mut rules = total.rules.clone();
    rules.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut sum = 0u64;
    for (cost, at) in rules {
        errs.push(FieldError::forbidden(
            &at,
            "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
        ));
        sum = sum.saturating_add(cost);
        if sum > STATIC_ESTIMATED_CRD_COST_LIMIT {
            break;
        }
    }
    errs.push(FieldError::forbidden(
        path,
        cost_message(
            "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
            total.cost,
            STATIC_ESTIMATED_CRD_COST_LIMIT,
        ),
    ));
}

/// A JSON value as CEL sees it under schema `s`: numbers of a `number` schema are doubles,
/// durations and timestamps are nanoseconds (see `library`), property names are escaped, the
/// metadata of a resource shows only `name` and `generateName`.
pub(crate) fn to_cel(v: &Value, s: Option<&Node>, resource: bool) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let double = s.is_some_and(|s| s.ty == "number");
            match n.as_i64() {
                Some(i) if !double => cel::Value::Int(i),
                _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            }
        }
        Value::String(t) => {
            let nanos = match s.and_then(|s| s.format.as_deref()) {
                Some("duration") => super::formats::go_duration_nanos(t),
                Some("date" | "date-time" | "datetime") => super::formats::timestamp_nanos(t),
                _ => None,
            };
            match nanos.and_then(|n| i64::try_from(n).ok()) {
                Some(n) => cel::Value::Int(n),
                None => cel::Value::from(t.clone()),
            }
        }
        Value::Array(items) => {
            let item = s.and_then(|s| s.items.as_deref());
            let embedded = item.is_some_and(|i| i.embedded);
            cel::Value::List(Arc::new(
                items.iter().map(|x| to_cel(x, item, embedded)).collect(),
            ))
        }
        Value::Object(map) => {
            let mut out: HashMap<String, cel::Value> = HashMap::with_capacity(map.len());
            for (k, field) in map {
                if resource && k == "metadata" {
                    let mut meta: HashMap<String, cel::Value> = HashMap::new();
                    for name in ["name", "generateName"] {
                        if let Some(Value::String(x)) = field.get(name) {
                            meta.insert(name.to_owned(), cel::Value::from(x.clone()));
                        }
                    }
                    out.insert(k.clone(), cel::Value::from(meta));
                    continue;
                }
                match s {
                    Some(s) if s.properties.contains_key(k) => {
                        let sub = s.properties.get(k);
                        if let Some(name) = escape(k) {
                            let embedded = sub.is_some_and(|x| x.embedded);
                            out.insert(name, to_cel(field, sub, embedded));
                        }
                    }
                    Some(s) => {
                        let sub = s.additional_schema();
                        let embedded = sub.is_some_and(|x| x.embedded);
                        out.insert(k.clone(), to_cel(field, sub, embedded));
                    }
                    None => {
                        out.insert(k.clone(), to_cel(field, None, false));
                    }
                }
            }
            cel::Value::from(out)
        }
    }
}

/// One validation run over an object: the cost budget left and the errors found.
pub(crate) struct Run {
    pub remaining: u64,
    pub exhausted: bool,
    pub errs: Vec<FieldError>,
}

impl Run {
    /// A run with kube's whole per-object budget.
    pub(crate) fn new() -> Run {
        Run {
            remaining: RUNTIME_COST_BUDGET,
            exhausted: false,
            errs: Vec::new(),
        }
    }
}

/// `ruleErrorString`: the message if there is one, else the rule.
fn rule_error_string(r: &RuleSpec) -> String {
    match r.message.as_deref() {
        Some(m) if !m.is_empty() => m.trim().to_owned(),
        _ => r.rule.trim().to_owned(),
    }
}

/// `ruleMessageOrDefault`.
fn rule_message_or_default(r: &RuleSpec) -> String {
    match r.message.as_deref() {
        Some(m) if !m.is_empty() => m.trim().to_owned(),
        _ => format!("failed rule: {}", rule_error_string(r)),
    }
}

/// The schema type kube 1.33 prints as the value of a failed rule (`Invalid value: "object"`).
fn type_value(s: &Node) -> Value {
    Value::from(s.ty.clone())
}

/// cel-go's wording for the runtime errors users meet.
pub(crate) fn runtime_error(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::NoSuchKey(k) => format!("no such key: {k}"),
        E::DivisionByZero(_) => "division by zero".to_owned(),
        E::RemainderByZero(_) => "modulus by zero".to_owned(),
        E::IndexOutOfBounds(i) => format!("index out of bounds: {}", cel_scalar(i)),
        E::Overflow(..) => "integer overflow".to_owned(),
        other => other.to_string(),
    }
}

fn cel_scalar(v: &cel::Value) -> String {
    match v {
        cel::Value::Int(i) => i.to_string(),
        cel::Value::UInt(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

/// Evaluates the rules of `s` on `v` (`old` being the correlated old value).
pub(crate) fn eval_rules(
    v: &Value,
    old: Option<&Value>,
    s: &Node,
    path: &str,
    resource: bool,
    run: &mut Run,
) {
    if s.rules.is_empty() || v.is_null() {
        return;
    }
    // A nil `field.Path` prints as `<nil>`: what kube shows for rules at the root.
    let path = if path.is_empty() { "<nil>" } else { path };
    let this = to_cel(v, Some(s), resource);
    let before = old.map(|o| to_cel(o, Some(s), resource));
    let sizes = Sizes::observed(v, old, resource);
    let context = |old_self: Option<cel::Value>| {
        let mut ctx = Context::with_env(ENV.clone());
        // The names are free in the environment (a test checks it): nothing to report.
        let _ = super::library::install(&mut ctx);
        ctx.add_variable_from_value("self", this.clone());
        if let Some(b) = old_self {
            ctx.add_variable_from_value("oldSelf", b);
        }
        ctx
    };
    let ctx = context(before.clone());
    // `optionalOldSelf: true` rules see `oldSelf` as an optional value, and run on create too.
    let mut optional_ctx: Option<Context> = None;
    for rule in &s.rules {
        if run.exhausted {
            return;
        }
        let optional = rule.spec.optional_old_self == Some(true);
        if rule.uses_old_self && old.is_none() && !optional {
            continue;
        }
        // Ratcheting: a value unchanged since the old object is not held to rules that do not
        // look at the old value (kube turns their errors into warnings).
        if !rule.uses_old_self && old == Some(v) {
            continue;
        }
        let rule_ctx = if optional {
            optional_ctx.get_or_insert_with(|| {
                let opt = match &before {
                    Some(b) => OptionalValue::of(b.clone()),
                    None => OptionalValue::none(),
                };
                context(Some(cel::Value::Opaque(Arc::new(opt))))
            })
        } else {
            &ctx
        };
        let cost = Estimator::new(s, resource, sizes)
            .estimate(rule.program.expression())
            .cost;
        if cost > PER_CALL_LIMIT {
            run.errs.push(FieldError::invalid(
                path,
                type_value(s),
                format!(
                    "'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {}",
                    rule_error_string(&rule.spec)
                ),
            ));
            run.exhausted = true;
            return;
        }
        if cost > run.remaining {
            run.errs.push(FieldError::invalid(
                path,
                type_value(s),
                "validation failed due to running out of cost budget, no further validation rules will be run",
            ));
            run.exhausted = true;
            return;
        }
        run.remaining -= cost;
        match rule.program.execute(rule_ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let at = match &rule.field_path {
                    Some(fp) if fp.starts_with('[') => format!("{path}{fp}"),
                    Some(fp) => child(path, fp),
                    None => path.to_owned(),
                };
                let detail = rule
                    .message_expression
                    .as_ref()
                    .and_then(|m| message_of(m, &ctx))
                    .unwrap_or_else(|| rule_message_or_default(&rule.spec));
                run.errs.push(for_reason(&at, type_value(s), detail, rule.spec.reason.as_deref()));
            }
            Ok(other) => run.errs.push(FieldError::invalid(
                path,
                type_value(s),
                format!(
                    "no such overload: rule returned {} evaluating rule: {}",
                    other.type_of(),
                    rule_error_string(&rule.spec)
                ),
            )),
            Err(cel::ExecutionError::NoSuchOverload(_)) => run.errs.push(FieldError::invalid(
                path,
                type_value(s),
                format!(
                    "'no such overload': call arguments did not match a supported operator, function or macro signature for rule: {}",
                    rule_error_string(&rule.spec)
                ),
            )),
            Err(e) => run.errs.push(FieldError::invalid(
                path,
                type_value(s),
                format!("{} evaluating rule: {}", runtime_error(&e), rule_error_string(&rule.spec)),
            )),
        }
    }
}

/// The evaluated `messageExpression`, or `None` when kube falls back to the rule's message.
fn message_of(m: &Program, ctx: &Context) -> Option<String> {
    match m.execute(ctx) {
        Ok(cel::Value::String(s)) => {
            let t = s.trim();
            (!t.is_empty() && !t.contains(['\n', '\r']) && t.len() <= MAX_MESSAGE_EXPRESSION_BYTES)
                .then(|| t.to_owned())
        }
        _ => None,
    }
}

/// `fieldErrorForReason`.
fn for_reason(path: &str, value: Value, detail: String, reason: Option<&str>) -> FieldError {
    match reason {
        Some("FieldValueForbidden") => FieldError::forbidden(path, detail),
        Some("FieldValueRequired") => FieldError::required(path, detail),
        Some("FieldValueDuplicate") => {
            let mut e = FieldError::duplicate(path, value);
            e.kind = ErrorType::Duplicate;
            e
        }
        _ => FieldError::invalid(path, value, detail),
    }
}

/// Walks `v` (and the correlated `old`) evaluating every node's rules.
pub(crate) fn eval_tree(
    v: &Value,
    old: Option<&Value>,
    s: &Node,
    path: &str,
    resource: bool,
    run: &mut Run,
    depth: usize,
) {
    if v.is_null() || run.exhausted || depth > 1000 {
        return;
    }
    eval_rules(v, old, s, path, resource, run);
    match v {
        Value::Object(map) => {
            let correlatable = s.map_type.as_deref() != Some("atomic");
            for (k, field) in map {
                if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let (sub, at) = match s.properties.get(k) {
                    Some(p) => (Some(p), child(path, k)),
                    None => (s.additional_schema(), key(path, k)),
                };
                let Some(sub) = sub else {
                    continue;
                };
                let old_field = if correlatable {
                    old.and_then(|o| o.get(k))
                } else {
                    None
                };
                eval_tree(field, old_field, sub, &at, sub.embedded, run, depth + 1);
            }
        }
        Value::Array(items) => {
            let Some(item) = &s.items else {
                return;
            };
            let by_key = s.list_type.as_deref() == Some("map");
            for (i, x) in items.iter().enumerate() {
                let old_item = if by_key {
                    old.and_then(Value::as_array).and_then(|olds| {
                        olds.iter()
                            .find(|o| s.list_map_keys.iter().all(|k| o.get(k) == x.get(k)))
                    })
                } else {
                    None
                };
                eval_tree(
                    x,
                    old_item,
                    item,
                    &index(path, i),
                    item.embedded,
                    run,
                    depth + 1,
                );
            }
        }
        _ => {}
    }
}

/// Whether a literal is a string, and its length (for cost estimates).
pub(crate) fn literal_size(l: &LiteralValue) -> u64 {
    match l {
        LiteralValue::String(s) => s.inner().chars().count() as u64,
        LiteralValue::Bytes(b) => b.inner().len() as u64,
        _ => 0,
    }
}
