//! CEL in admission: ValidatingAdmissionPolicies (`validations`, `messageExpression`,
//! `matchConditions`, `variables`, `auditAnnotations`) and the `matchConditions` of admission
//! webhooks, as kube-apiserver 1.33 compiles and evaluates them
//! (`k8s.io/apiserver/pkg/admission/plugin/{cel,policy/validating,webhook/matchconditions}`).
//!
//! Pure: the caller supplies the request's objects, the `request` map, the params object and
//! the namespace as JSON, and turns the [`Decision`]s into an answer.
//!
//! - Expressions compile in the environment of `x-kubernetes-validations` (the `crd` module:
//!   CEL's standard library, the `strings` and `lists` extensions, kube's libraries). The `cel`
//!   crate has no type checker, so what kube's checker refuses is refused here only where it
//!   is a reference to an undeclared name (`undeclared reference to 'x'`); an expression of the
//!   wrong type fails when it runs.
//! - `authorizer` is declared but keelson offers none of its functions: an expression calling
//!   them (like any function keelson lacks) is refused when the policy or webhook
//!   configuration is written, in cel-go's words plus why.
//! - `variables` are evaluated once, in order, before the validations; a variable whose
//!   expression fails is left out, so a use of it fails with `no such key`.
//! - Cost: kube's per-call limit and per-evaluation budget, applied to the crd module's
//!   estimate over the sizes in the input (an upper bound of cel-go's actual cost).

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, Program};
use serde_json::Value;

use crate::crd::cel::{
    ENV, PER_CALL_LIMIT, RUNTIME_COST_BUDGET, compile_source, depth_of, located, runtime_error,
    to_cel, with_stack, with_stack_for,
};
use crate::crd::cost::{Estimator, Sizes};
use crate::crd::schema::Node;

mod checks;
#[cfg(test)]
mod tests;

pub use checks::{match_condition_errors, policy_errors};

/// `MaxEvaluatedMessageExpressionSizeBytes`.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// The names every admission expression may use.
const BASE: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "namespaceObject",
    "authorizer",
];

/// Type names cel-go declares as identifiers (`type(x) == string`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// Which variables an expression is compiled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A webhook's `matchConditions`: `object`, `oldObject`, `request`, `namespaceObject`,
    /// `authorizer`.
    Webhook,
    /// An expression of a ValidatingAdmissionPolicy: the webhook's names, `variables`, and
    /// `params` when the policy has a `paramKind`.
    Policy {
        /// Whether the policy declares `paramKind`.
        params: bool,
        /// The `variables` declared so far (`variables.<name>` may name only these).
        variables: &'a [String],
        /// Whether `authorizer` is declared (not in a `messageExpression`).
        authorizer: bool,
    },
}

impl Scope<'_> {
    fn declares(self, name: &str) -> bool {
        if TYPE_NAMES.contains(&name) {
            return true;
        }
        match self {
            Self::Webhook => BASE.contains(&name),
            Self::Policy {
                params, authorizer, ..
            } => {
                (BASE.contains(&name) && (authorizer || name != "authorizer"))
                    || name == "variables"
                    || (params && name == "params")
            }
        }
    }

    /// Whether `variables.<name>` is declared.
    fn has_variable(self, name: &str) -> bool {
        match self {
            Self::Webhook => false,
            Self::Policy { variables, .. } => variables.iter().any(|v| v == name),
        }
    }
}

/// The schema of values the estimator knows nothing about (admission objects have none).
static ANY: std::sync::LazyLock<Node> = std::sync::LazyLock::new(Node::default);

/// kube's cost limits at run time: each expression's cost, estimated over the largest list,
/// map and string of the input (an upper bound of cel-go's actual cost), is held to the
/// per-call limit and, summed, to the budget of one evaluation.
struct Meter {
    sizes: Sizes,
    remaining: u64,
    /// Whether the budget ran out.
    exhausted: bool,
}

/// The error of an evaluation that ran out of budget (`ErrOutOfBudget`).
const OUT_OF_BUDGET: &str =
    "validation failed due to running out of cost budget, no further validation rules will be run";

impl Meter {
    fn new(input: &Input<'_>) -> Self {
        let (mut list, mut map, mut string) = (0, 0, 0);
        for v in [
            input.object,
            input.old_object,
            input.request,
            input.params,
            input.namespace,
        ]
        .into_iter()
        .flatten()
        {
            if let Sizes::Observed {
                list: l,
                map: m,
                string: s,
            } = Sizes::observed(v, None, false)
            {
                list = list.max(l);
                map = map.max(m);
                string = string.max(s);
            }
        }
        Self {
            sizes: Sizes::Observed { list, map, string },
            remaining: RUNTIME_COST_BUDGET,
            exhausted: false,
        }
    }

    /// Charges one evaluation of `e`, or says why it may not run.
    fn charge(&mut self, e: &Expression) -> Result<(), String> {
        if self.exhausted {
            return Err(OUT_OF_BUDGET.to_owned());
        }
        let cost = Estimator::new(&ANY, false, self.sizes)
            .estimate(e.program.expression())
            .cost;
        if cost > PER_CALL_LIMIT {
            return Err(format!(
                "expression '{}' resulted in error: operation cancelled: actual cost limit exceeded",
                e.source
            ));
        }
        if cost > self.remaining {
            self.exhausted = true;
            return Err(OUT_OF_BUDGET.to_owned());
        }
        self.remaining -= cost;
        Ok(())
    }
}

/// One compiled expression.
#[derive(Debug, Clone)]
pub struct Expression {
    /// The expression as written.
    pub source: String,
    program: Arc<Program>,
    depth: usize,
}

/// What the type checker would not find.
enum Undeclared {
    /// An identifier: `undeclared reference to 'x'`.
    Reference(String),
    /// A `variables.<name>` that is not declared: `undefined field 'x'`.
    Field(String),
}

/// The first identifier of `e` that is neither declared by `scope` nor bound by an
/// enclosing comprehension (or `variables.<name>` of an undeclared variable), with its
/// expression id.
fn undeclared(e: &IdedExpr, scope: Scope<'_>) -> Option<(u64, Undeclared)> {
    let mut stack: Vec<(&IdedExpr, Vec<&str>)> = vec![(e, Vec::new())];
    while let Some((e, bound)) = stack.pop() {
        match &e.expr {
            Expr::Ident(name) => {
                if !name.starts_with('@')
                    && !name.starts_with('#')
                    && !bound.contains(&name.as_str())
                    && !scope.declares(name)
                {
                    return Some((e.id, Undeclared::Reference(name.clone())));
                }
            }
            Expr::Call(c) => {
                stack.extend(c.target.iter().map(|t| (&**t, bound.clone())));
                stack.extend(c.args.iter().map(|a| (a, bound.clone())));
            }
            Expr::Select(s) => {
                if let Expr::Ident(operand) = &s.operand.expr
                    && operand == "variables"
                    && !bound.contains(&"variables")
                    && scope.declares("variables")
                    && !scope.has_variable(&s.field)
                {
                    return Some((e.id, Undeclared::Field(s.field.clone())));
                }
                stack.push((&s.operand, bound));
            }
            Expr::List(l) => stack.extend(l.elements.iter().map(|x| (x, bound.clone()))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        stack.push((&me.key, bound.clone()));
                        stack.push((&me.value, bound.clone()));
                    }
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        stack.push((&f.value, bound.clone()));
                    }
                }
            }
            Expr::Comprehension(c) => {
                stack.push((&c.iter_range, bound.clone()));
                // The initial value is outside the loop: only the loop sees its variables.
                stack.push((&c.accu_init, bound.clone()));
                let mut inner = bound.clone();
                inner.push(c.accu_var.as_str());
                inner.push(c.iter_var.as_str());
                if let Some(v) = &c.iter_var2 {
                    inner.push(v.as_str());
                }
                for x in [&c.loop_cond, &c.loop_step, &c.result] {
                    stack.push((x, inner.clone()));
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    None
}

/// Compiles `source` for `scope`; on failure kube's detail,
/// `compilation failed: ERROR: <input>:1:5: ...`.
pub fn compile(source: &str, scope: Scope<'_>) -> Result<Expression, String> {
    let program =
        with_stack(|| compile_source(source)).map_err(|e| format!("compilation failed: {e}"))?;
    if let Some((id, what)) = undeclared(program.expression(), scope) {
        let offset = program
            .source_info()
            .offset_for(id)
            .map_or(0, |(start, _)| usize::try_from(start).unwrap_or(0));
        let message = match what {
            Undeclared::Reference(name) => {
                format!("undeclared reference to '{name}' (in container '')")
            }
            Undeclared::Field(name) => format!("undefined field '{name}'"),
        };
        return Err(format!(
            "compilation failed: {}",
            located(source, offset, &message)
        ));
    }
    // Functions keelson does not offer, in cel-go's words (the crd module's list).
    let estimate = Estimator::new(&ANY, false, Sizes::Static).estimate(program.expression());
    if let Some((id, message)) = estimate.undefined.first() {
        let offset = program
            .source_info()
            .offset_for(*id)
            .map_or(0, |(start, _)| usize::try_from(start).unwrap_or(0));
        return Err(format!(
            "compilation failed: {}",
            located(source, offset, message)
        ));
    }
    let depth = depth_of(program.expression());
    Ok(Expression {
        source: source.to_owned(),
        program: Arc::new(program),
        depth,
    })
}

/// The request an expression sees. Objects are JSON as served (`None` is CEL `null`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    /// The new object (absent on DELETE).
    pub object: Option<&'a Value>,
    /// The stored object (UPDATE and DELETE).
    pub old_object: Option<&'a Value>,
    /// `request`: the `AdmissionRequest` of the admission review, as a map.
    pub request: Option<&'a Value>,
    /// `params`: the params object of the binding (policies with a `paramKind`).
    pub params: Option<&'a Value>,
    /// `namespaceObject`: the request's namespace (namespaced requests).
    pub namespace: Option<&'a Value>,
}

/// kube's `CreateNamespaceObject`: the namespace as expressions see it (name, labels,
/// annotations, uid, creationTimestamp, spec and status).
fn namespace_view(ns: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for key in [
        "name",
        "generateName",
        "namespace",
        "uid",
        "labels",
        "annotations",
        "creationTimestamp",
        "resourceVersion",
    ] {
        if let Some(v) = ns.pointer(&format!("/metadata/{key}")) {
            meta.insert(key.to_owned(), v.clone());
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("metadata".to_owned(), Value::Object(meta));
    for key in ["spec", "status"] {
        if let Some(v) = ns.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn cel_of(v: Option<&Value>) -> cel::Value {
    v.map_or(cel::Value::Null, |v| to_cel(v, None, false))
}

/// The evaluation context of one request.
struct Activation {
    bindings: Vec<(&'static str, cel::Value)>,
}

impl Activation {
    fn new(input: &Input<'_>) -> Self {
        let namespace = input.namespace.map(namespace_view);
        Self {
            bindings: vec![
                ("object", cel_of(input.object)),
                ("oldObject", cel_of(input.old_object)),
                ("request", cel_of(input.request)),
                ("params", cel_of(input.params)),
                ("namespaceObject", cel_of(namespace.as_ref())),
            ],
        }
    }

    fn context(
        &self,
        variables: Option<&HashMap<String, cel::Value>>,
    ) -> Context<'static, 'static> {
        let mut ctx = Context::with_env(ENV.clone());
        // The names are free in the environment (the crd module's tests check it).
        let _ = crate::crd::library::install(&mut ctx);
        for (name, value) in &self.bindings {
            ctx.add_variable_from_value(*name, value.clone());
        }
        if let Some(vars) = variables {
            ctx.add_variable_from_value("variables", cel::Value::from(vars.clone()));
        }
        ctx
    }
}

impl Expression {
    fn run(&self, ctx: &Context<'_, '_>, meter: &mut Meter) -> Result<cel::Value, String> {
        meter.charge(self)?;
        with_stack_for(self.depth, || self.program.execute(ctx)).map_err(|e| {
            format!(
                "expression '{}' resulted in error: {}",
                self.source,
                runtime_error(&e)
            )
        })
    }
}

/// An expression as written, compiled or with why it does not compile.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The expression as written.
    pub source: String,
    /// The expression, or kube's compilation error detail.
    pub compiled: Result<Expression, String>,
}

impl Compiled {
    fn new(source: &str, scope: Scope<'_>) -> Self {
        Self {
            source: source.to_owned(),
            compiled: compile(source, scope),
        }
    }

    fn run(&self, ctx: &Context<'_, '_>, meter: &mut Meter) -> Result<cel::Value, String> {
        match &self.compiled {
            Ok(e) => e.run(ctx, meter),
            Err(detail) => Err(detail.clone()),
        }
    }
}

/// `failurePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// An error refuses the request (the default).
    #[default]
    Fail,
    /// An error lets the request through.
    Ignore,
}

impl FailurePolicy {
    /// `Ignore` or (anything else) `Fail`.
    pub fn parse(value: Option<&str>) -> Self {
        if value == Some("Ignore") {
            Self::Ignore
        } else {
            Self::Fail
        }
    }
}

/// What a list of `matchConditions` says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Every condition held (or there are none).
    Matches,
    /// The named condition is false.
    NoMatch(String),
    /// No condition is false, some failed: kube's aggregated error message.
    Error(String),
}

/// Compiled `matchConditions` (`name`, `expression`).
#[derive(Debug, Clone, Default)]
pub struct MatchConditions(Vec<(String, Compiled)>);

impl MatchConditions {
    /// Compiles the `matchConditions` array `conditions` (absent: none).
    pub fn new(conditions: Option<&Value>, scope: Scope<'_>) -> Self {
        Self(
            conditions
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                    let source = c
                        .get("expression")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    (name.to_owned(), Compiled::new(source.trim(), scope))
                })
                .collect(),
        )
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// kube's `matcher.Match`: a false condition wins over errors; errors otherwise make
    /// an [`Match::Error`], one message or `[a, b]` for several.
    pub fn evaluate(&self, input: &Input<'_>) -> Match {
        if self.0.is_empty() {
            return Match::Matches;
        }
        let ctx = Activation::new(input).context(None);
        self.evaluate_in(&ctx, &mut Meter::new(input))
    }

    fn evaluate_in(&self, ctx: &Context<'_, '_>, meter: &mut Meter) -> Match {
        let mut errors: Vec<String> = Vec::new();
        for (name, condition) in &self.0 {
            match condition.run(ctx, meter) {
                Ok(cel::Value::Bool(false)) => return Match::NoMatch(name.clone()),
                Ok(cel::Value::Bool(true)) => {}
                Ok(other) => errors.push(format!(
                    "expression '{}' resulted in error: no such overload: result is {}, not bool",
                    condition.source.trim(),
                    other.type_of()
                )),
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            }
        }
        match errors.len() {
            0 => Match::Matches,
            1 => Match::Error(errors.swap_remove(0)),
            _ => Match::Error(format!("[{}]", errors.join(", "))),
        }
    }
}

/// One of `spec.validations`.
#[derive(Debug, Clone)]
struct Validation {
    expression: Compiled,
    message: Option<String>,
    message_expression: Option<Compiled>,
    reason: Option<String>,
}

/// What one validation (or an error) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is refused by it (before the binding's `validationActions`).
    pub deny: bool,
    /// Whether it comes from an error rather than a false validation.
    pub error: bool,
    /// The message: the validation's, or the error's.
    pub message: String,
    /// The `reason` of a false validation (`Invalid` unless the validation says otherwise).
    pub reason: Option<String>,
}

/// All a policy said about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// One per validation (none when the policy's `matchConditions` exclude the request),
    /// plus denials from failed audit annotations.
    pub decisions: Vec<Decision>,
    /// The audit annotations published (`key`, `value`).
    pub audit_annotations: Vec<(String, String)>,
}

/// A compiled ValidatingAdmissionPolicy spec.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `failurePolicy` (default `Fail`).
    pub failure_policy: FailurePolicy,
    /// Whether the policy declares `paramKind`.
    pub has_params: bool,
    match_conditions: MatchConditions,
    variables: Vec<(String, Compiled)>,
    validations: Vec<Validation>,
    audit_annotations: Vec<(String, Compiled)>,
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

impl Policy {
    /// Compiles the policy's `spec` (expressions that do not compile fail when evaluated).
    pub fn new(spec: &Value) -> Self {
        let has_params = spec.get("paramKind").is_some_and(|p| !p.is_null());
        let names = variable_names(spec);
        let scope = Scope::Policy {
            params: has_params,
            variables: &names,
            authorizer: true,
        };
        let message_scope = Scope::Policy {
            params: has_params,
            variables: &names,
            authorizer: false,
        };
        Self {
            failure_policy: FailurePolicy::parse(text(spec, "failurePolicy")),
            has_params,
            match_conditions: MatchConditions::new(spec.get("matchConditions"), scope),
            variables: items(spec, "variables")
                .enumerate()
                .map(|(i, v)| {
                    let earlier = Scope::Policy {
                        params: has_params,
                        variables: &names[..i.min(names.len())],
                        authorizer: true,
                    };
                    (
                        text(v, "name").unwrap_or_default().to_owned(),
                        Compiled::new(text(v, "expression").unwrap_or_default(), earlier),
                    )
                })
                .collect(),
            validations: items(spec, "validations")
                .map(|v| Validation {
                    expression: Compiled::new(text(v, "expression").unwrap_or_default(), scope),
                    message: text(v, "message").map(str::to_owned),
                    message_expression: text(v, "messageExpression")
                        .filter(|m| !m.trim().is_empty())
                        .map(|m| Compiled::new(m, message_scope)),
                    reason: text(v, "reason").map(str::to_owned),
                })
                .collect(),
            audit_annotations: items(spec, "auditAnnotations")
                .map(|a| {
                    (
                        text(a, "key").unwrap_or_default().to_owned(),
                        Compiled::new(text(a, "valueExpression").unwrap_or_default().trim(), scope),
                    )
                })
                .collect(),
        }
    }

    fn for_error(&self, message: String) -> Decision {
        Decision {
            deny: self.failure_policy == FailurePolicy::Fail,
            error: true,
            message,
            reason: None,
        }
    }

    /// kube's `validator.Validate` for one params object.
    pub fn evaluate(&self, input: &Input<'_>) -> Verdict {
        let activation = Activation::new(input);
        let mut meter = Meter::new(input);
        let mut variables: HashMap<String, cel::Value> = HashMap::new();
        if !self.match_conditions.is_empty() {
            let ctx = activation.context(Some(&variables));
            match self.match_conditions.evaluate_in(&ctx, &mut meter) {
                Match::Matches => {}
                Match::NoMatch(_) => return Verdict::default(),
                Match::Error(e) => {
                    return Verdict {
                        decisions: vec![self.for_error(e)],
                        audit_annotations: Vec::new(),
                    };
                }
            }
        }
        for (name, expression) in &self.variables {
            let ctx = activation.context(Some(&variables));
            if let Ok(value) = expression.run(&ctx, &mut meter) {
                variables.insert(name.clone(), value);
            }
        }
        let ctx = activation.context(Some(&variables));
        let mut verdict = Verdict::default();
        for v in &self.validations {
            let decision = match v.expression.run(&ctx, &mut meter) {
                Err(e) => self.for_error(e),
                Ok(cel::Value::Bool(true)) => Decision {
                    deny: false,
                    error: false,
                    message: String::new(),
                    reason: None,
                },
                Ok(_) => Decision {
                    deny: true,
                    error: false,
                    message: self.message_of(v, &ctx, &mut meter),
                    reason: Some(v.reason.clone().unwrap_or_else(|| "Invalid".to_owned())),
                },
            };
            if meter.exhausted {
                // kube's filter gives up on the whole policy: one decision, the budget's.
                return Verdict {
                    decisions: vec![self.for_error(OUT_OF_BUDGET.to_owned())],
                    audit_annotations: Vec::new(),
                };
            }
            verdict.decisions.push(decision);
        }
        for (key, expression) in &self.audit_annotations {
            let failure = match expression.run(&ctx, &mut meter) {
                Ok(cel::Value::String(s)) => {
                    let value = s.trim();
                    if !value.is_empty() {
                        verdict
                            .audit_annotations
                            .push((key.clone(), value.to_owned()));
                    }
                    continue;
                }
                Ok(cel::Value::Null) => continue,
                Ok(other) => format!(
                    "valueExpression '{}' resulted in unsupported return type: {}. Return type must be either string or null.",
                    expression.source,
                    other.type_of()
                ),
                Err(e) => e,
            };
            if self.failure_policy == FailurePolicy::Fail {
                verdict.decisions.push(self.for_error(failure));
            }
        }
        verdict
    }

    /// The message of a false validation: its `messageExpression` when that gives a short
    /// one-line string, else its `message`, else `failed expression: <expression>`.
    fn message_of(&self, v: &Validation, ctx: &Context<'_, '_>, meter: &mut Meter) -> String {
        let evaluated = v
            .message_expression
            .as_ref()
            .and_then(|m| m.run(ctx, meter).ok())
            .and_then(|value| match value {
                cel::Value::String(s) => {
                    let t = s.trim();
                    (!t.is_empty() && !t.contains('\n') && t.len() <= MAX_MESSAGE_BYTES)
                        .then(|| t.to_owned())
                }
                _ => None,
            });
        evaluated
            .or_else(|| {
                v.message
                    .as_deref()
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("failed expression: {}", v.expression.source.trim()))
    }
}

/// The names of `spec.variables`, in order.
fn variable_names(spec: &Value) -> Vec<String> {
    items(spec, "variables")
        .map(|v| text(v, "name").unwrap_or_default().to_owned())
        .collect()
}
