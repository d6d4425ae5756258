//! What kube-apiserver checks when a ValidatingAdmissionPolicy or a webhook's
//! `matchConditions` is written: names, reasons, audit-annotation keys, `paramRef`, and every
//! expression compiled in the scope it will run in.

use serde_json::Value;

use super::{Scope, compile, items, text, variable_names};
use crate::validation::FieldError;

/// `isCELIdentifier`.
fn is_cel_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !crate::crd::path::RESERVED.contains(&name)
}

/// `field.Invalid` with the expression as value when `source` does not compile.
fn check_expression(path: &str, source: &str, scope: Scope<'_>, errs: &mut Vec<FieldError>) {
    if let Err(detail) = compile(source, scope) {
        errs.push(FieldError::invalid(path, source, detail));
    }
}

/// `validateMatchConditions`: at most 64, names qualified and unique, expressions that
/// compile (trimmed).
fn match_conditions(
    conditions: Option<&Value>,
    path: &str,
    scope: Scope<'_>,
    errs: &mut Vec<FieldError>,
) {
    let list = conditions
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if list.len() > 64 {
        errs.push(FieldError::too_many(path, list.len(), 64));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let expression = text(c, "expression").unwrap_or_default().trim();
        if expression.is_empty() {
            errs.push(FieldError::required(&format!("{at}.expression"), ""));
        } else {
            check_expression(&format!("{at}.expression"), expression, scope, errs);
        }
        let name = text(c, "name").unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(&format!("{at}.name"), ""));
        } else {
            for m in crate::validation::formats::qualified_name(name) {
                errs.push(FieldError::invalid(&format!("{at}.name"), name, m));
            }
            if names.contains(&name) {
                errs.push(FieldError::duplicate(&format!("{at}.name"), name));
            } else {
                names.push(name);
            }
        }
    }
}

/// The checks of kube's `validateValidatingAdmissionPolicySpec` on the CEL parts of `spec`:
/// `matchConditions`, `variables`, `validations` and `auditAnnotations` (expressions
/// compiled, names, messages, reasons). `name` is the policy's `metadata.name`.
pub fn policy_errors(name: &str, spec: &Value) -> Vec<FieldError> {
    let params = spec.get("paramKind").is_some_and(|p| !p.is_null());
    let names = variable_names(spec);
    let scope = Scope::Policy {
        params,
        variables: &names,
        authorizer: true,
    };
    let mut errs = Vec::new();
    match_conditions(
        spec.get("matchConditions"),
        "spec.matchConditions",
        scope,
        &mut errs,
    );
    for (i, v) in items(spec, "variables").enumerate() {
        let at = format!("spec.variables[{i}]");
        let var = text(v, "name").unwrap_or_default();
        if var.trim().is_empty() {
            errs.push(FieldError::required(
                &format!("{at}.name"),
                "name is not specified",
            ));
        } else if !is_cel_identifier(var) {
            errs.push(FieldError::invalid(
                &format!("{at}.name"),
                var,
                "name is not a valid CEL identifier",
            ));
        }
        let expression = text(v, "expression").unwrap_or_default();
        if expression.trim().is_empty() {
            errs.push(FieldError::required(
                &format!("{at}.expression"),
                "expression is not specified",
            ));
        } else {
            let earlier = Scope::Policy {
                params,
                variables: &names[..i],
                authorizer: true,
            };
            check_expression(&format!("{at}.expression"), expression, earlier, &mut errs);
        }
    }
    let validations: Vec<&Value> = items(spec, "validations").collect();
    let audit: Vec<&Value> = items(spec, "auditAnnotations").collect();
    if validations.is_empty() && audit.is_empty() {
        for field in ["spec.validations", "spec.auditAnnotations"] {
            errs.push(FieldError::required(
                field,
                "validations or auditAnnotations must contain at least one item",
            ));
        }
        return errs;
    }
    for (i, v) in validations.iter().enumerate() {
        validation(
            v,
            &format!("spec.validations[{i}]"),
            params,
            &names,
            &mut errs,
        );
    }
    if audit.len() > 20 {
        errs.push(FieldError::invalid(
            "spec.auditAnnotations",
            spec["auditAnnotations"].clone(),
            "must not have more than 20 auditAnnotations",
        ));
    }
    let mut keys: Vec<&str> = Vec::new();
    for (i, a) in audit.iter().enumerate() {
        let at = format!("spec.auditAnnotations[{i}]");
        let key = text(a, "key").unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::invalid(
                &format!("{at}.key"),
                key,
                "requires metadata.name be non-empty",
            ));
        } else {
            let qualified = format!("{name}/{key}");
            for m in crate::validation::formats::qualified_name(&qualified) {
                errs.push(FieldError::invalid(
                    &format!("{at}.key"),
                    qualified.as_str(),
                    m,
                ));
            }
        }
        let expression = text(a, "valueExpression").unwrap_or_default().trim();
        let vat = format!("{at}.valueExpression");
        if expression.is_empty() {
            errs.push(FieldError::required(
                &vat,
                "valueExpression is not specified",
            ));
        } else if expression.len() > 5 * 1024 {
            errs.push(FieldError::required(
                &vat,
                "must not exceed 5120 bytes in length",
            ));
        } else {
            check_expression(&vat, expression, scope, &mut errs);
        }
        if keys.contains(&key) {
            errs.push(FieldError::duplicate(&format!("{at}.key"), key));
        }
        keys.push(key);
    }
    errs
}

/// `validateValidation`.
fn validation(v: &Value, at: &str, params: bool, names: &[String], errs: &mut Vec<FieldError>) {
    let expression = text(v, "expression").unwrap_or_default();
    if expression.trim().is_empty() {
        errs.push(FieldError::required(
            &format!("{at}.expression"),
            "expression is not specified",
        ));
    } else {
        let scope = Scope::Policy {
            params,
            variables: names,
            authorizer: true,
        };
        check_expression(&format!("{at}.expression"), expression, scope, errs);
    }
    let message_expression = text(v, "messageExpression").unwrap_or_default();
    if !message_expression.is_empty() && message_expression.trim().is_empty() {
        errs.push(FieldError::invalid(
            &format!("{at}.messageExpression"),
            message_expression,
            "must be non-empty if specified",
        ));
    } else if !message_expression.is_empty() {
        let scope = Scope::Policy {
            params,
            variables: names,
            authorizer: false,
        };
        check_expression(
            &format!("{at}.messageExpression"),
            message_expression,
            scope,
            errs,
        );
    }
    let message = text(v, "message").unwrap_or_default();
    if !message.is_empty() && message.trim().is_empty() {
        errs.push(FieldError::invalid(
            &format!("{at}.message"),
            message,
            "message must be non-empty if specified",
        ));
    } else if message.trim().contains(['\n', '\r']) {
        errs.push(FieldError::invalid(
            &format!("{at}.message"),
            message,
            "message must not contain line breaks",
        ));
    }
    if let Some(reason) = text(v, "reason") {
        const REASONS: &[&str] = &[
            "Forbidden",
            "Invalid",
            "RequestEntityTooLarge",
            "Unauthorized",
        ];
        if !REASONS.contains(&reason) {
            errs.push(FieldError::not_supported(
                &format!("{at}.reason"),
                reason,
                REASONS,
            ));
        }
    }
}

/// The checks of one webhook's `matchConditions` (`path` is the webhook's, e.g.
/// `webhooks[0]`).
pub fn match_condition_errors(webhook: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match_conditions(
        webhook.get("matchConditions"),
        &format!("{path}.matchConditions"),
        Scope::Webhook,
        &mut errs,
    );
    errs
}
