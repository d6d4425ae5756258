use serde_json::json;

use super::*;

fn deployment(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"replicas": replicas},
    })
}

fn request() -> Value {
    json!({
        "operation": "CREATE",
        "name": "web",
        "namespace": "default",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
    })
}

#[test]
fn expressions_that_do_not_compile_are_refused_with_kubes_detail() {
    for (spec, field, detail_starts) in [
        (
            json!({"validations": [{"expression": "object.spec.replicas <="}]}),
            "spec.validations[0].expression",
            "compilation failed: ERROR: <input>:1:",
        ),
        (
            json!({"validations": [{"expression": "true", "messageExpression": "'a' +"}]}),
            "spec.validations[0].messageExpression",
            "compilation failed: ERROR: <input>:1:",
        ),
        (
            json!({"validations": [{"expression": "params.max > 1"}]}),
            "spec.validations[0].expression",
            "compilation failed: ERROR: <input>:1:1: undeclared reference to 'params' (in container '')",
        ),
        (
            json!({"validations": [{"expression": "objekt.spec.replicas < 5"}]}),
            "spec.validations[0].expression",
            "compilation failed: ERROR: <input>:1:1: undeclared reference to 'objekt' (in container '')",
        ),
        (
            json!({"matchConditions": [{"name": "a", "expression": "("}], "validations": [{"expression": "true"}]}),
            "spec.matchConditions[0].expression",
            "compilation failed: ERROR: <input>:1:",
        ),
        (
            json!({"variables": [{"name": "v", "expression": "1 +"}], "validations": [{"expression": "true"}]}),
            "spec.variables[0].expression",
            "compilation failed: ERROR: <input>:1:",
        ),
        (
            json!({"validations": [{"expression": "cel.bind(x, x, x > 1)"}]}),
            "spec.validations[0].expression",
            "compilation failed: ERROR: <input>:1:",
        ),
        (
            json!({"validations": [{"expression": "object.items.all(i, i > 0) && i > 0"}]}),
            "spec.validations[0].expression",
            "compilation failed: ERROR: <input>:1:31: undeclared reference to 'i' (in container '')",
        ),
        (
            json!({"auditAnnotations": [{"key": "k", "valueExpression": "nope"}]}),
            "spec.auditAnnotations[0].valueExpression",
            "compilation failed: ERROR: <input>:1:1: undeclared reference to 'nope' (in container '')",
        ),
    ] {
        let errs = policy_errors("p", &spec);
        assert_eq!(errs.len(), 1, "{spec}: {errs:?}");
        assert_eq!(errs[0].field, field);
        assert!(
            errs[0].detail.starts_with(detail_starts),
            "{spec}: {}",
            errs[0].detail
        );
    }
}

#[test]
fn valid_policies_compile_cleanly() {
    for spec in [
        json!({"validations": [{"expression": "object.spec.replicas <= 5"}]}),
        json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
               "validations": [{"expression": "object.spec.replicas <= int(params.data.max)"}]}),
        json!({"variables": [{"name": "n", "expression": "object.metadata.name"}],
               "validations": [{"expression": "variables.n.startsWith('w')",
                                "messageExpression": "'name ' + variables.n"}]}),
        json!({"validations": [{"expression": "object.spec.containers.all(c, c.image.contains(':'))"}]}),
        json!({"validations": [{"expression": "request.userInfo.groups.exists(g, g == 'admins') || type(oldObject) == null_type"}]}),
        json!({"validations": [{"expression": "cel.bind(x, object.spec.replicas, x < 3)"}]}),
    ] {
        assert!(
            policy_errors("p", &spec).is_empty(),
            "{spec}: {:?}",
            policy_errors("p", &spec)
        );
    }
    let webhook = json!({"matchConditions": [
        {"name": "ok", "expression": "request.userInfo.username != 'system:admin'"},
        {"name": "bad", "expression": "variables.x"},
    ]});
    let errs = match_condition_errors(&webhook, "webhooks[0]");
    assert_eq!(
        errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
        ["webhooks[0].matchConditions[1].expression"]
    );
}

fn decide(spec: Value, object: &Value, params: Option<&Value>) -> Verdict {
    let policy = Policy::new(&spec);
    let request = request();
    policy.evaluate(&Input {
        object: Some(object),
        request: Some(&request),
        params,
        ..Input::default()
    })
}

#[test]
fn validations_decide_with_kubes_messages() {
    let params = json!({"data": {"max": "3"}});
    for (spec, replicas, expected) in [
        (
            json!({"validations": [{"expression": "object.spec.replicas <= 5"}]}),
            6,
            Some((
                false,
                "failed expression: object.spec.replicas <= 5",
                Some("Invalid"),
            )),
        ),
        (
            json!({"validations": [{"expression": "object.spec.replicas <= 5"}]}),
            5,
            None,
        ),
        (
            json!({"validations": [{"expression": "object.spec.replicas <= 5", "message": " too many ", "reason": "Forbidden"}]}),
            6,
            Some((false, "too many", Some("Forbidden"))),
        ),
        (
            json!({"validations": [{"expression": "object.spec.replicas <= 5", "message": "m",
                                     "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > 5'"}]}),
            6,
            Some((false, "replicas 6 > 5", Some("Invalid"))),
        ),
        // A messageExpression giving no usable string falls back to the message.
        (
            json!({"validations": [{"expression": "false", "message": "m", "messageExpression": "'a\\nb'"}]}),
            1,
            Some((false, "m", Some("Invalid"))),
        ),
        (
            json!({"validations": [{"expression": "object.spec.missing > 1"}]}),
            1,
            Some((
                true,
                "expression 'object.spec.missing > 1' resulted in error: no such key: missing",
                None,
            )),
        ),
        (
            json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                   "validations": [{"expression": "object.spec.replicas <= int(params.data.max)"}]}),
            4,
            Some((
                false,
                "failed expression: object.spec.replicas <= int(params.data.max)",
                Some("Invalid"),
            )),
        ),
        (
            json!({"variables": [{"name": "big", "expression": "object.spec.replicas > 2"}],
                   "validations": [{"expression": "!variables.big", "messageExpression": "'big: ' + string(variables.big)"}]}),
            3,
            Some((false, "big: true", Some("Invalid"))),
        ),
    ] {
        let verdict = decide(spec.clone(), &deployment(replicas), Some(&params));
        assert_eq!(verdict.decisions.len(), 1, "{spec}");
        let d = &verdict.decisions[0];
        match expected {
            None => assert!(!d.deny, "{spec}: {d:?}"),
            Some((error, message, reason)) => {
                assert!(d.deny, "{spec}");
                assert_eq!(
                    (d.error, d.message.as_str(), d.reason.as_deref()),
                    (error, message, reason),
                    "{spec}"
                );
            }
        }
    }
}

#[test]
fn failure_policy_decides_errors() {
    let failing = |policy: &str| json!({"failurePolicy": policy, "validations": [{"expression": "object.nope == 1"}]});
    let fail = decide(failing("Fail"), &deployment(1), None);
    assert!(fail.decisions[0].deny && fail.decisions[0].error);
    let ignore = decide(failing("Ignore"), &deployment(1), None);
    assert!(!ignore.decisions[0].deny && ignore.decisions[0].error);
}

#[test]
fn match_conditions_exclude_requests_and_errors_follow_the_failure_policy() {
    let spec = |cond: &str, policy: &str| {
        json!({"failurePolicy": policy,
               "matchConditions": [{"name": "first", "expression": "true"}, {"name": "only-web", "expression": cond}],
               "validations": [{"expression": "false"}]})
    };
    assert!(
        decide(
            spec("object.metadata.name != 'web'", "Fail"),
            &deployment(1),
            None
        )
        .decisions
        .is_empty()
    );
    assert_eq!(
        decide(
            spec("object.metadata.name == 'web'", "Fail"),
            &deployment(1),
            None
        )
        .decisions
        .len(),
        1
    );
    let error = decide(spec("object.nope", "Fail"), &deployment(1), None);
    assert_eq!(
        error.decisions,
        [Decision {
            deny: true,
            error: true,
            message: "expression 'object.nope' resulted in error: no such key: nope".to_owned(),
            reason: None,
        }]
    );
    assert!(!decide(spec("object.nope", "Ignore"), &deployment(1), None).decisions[0].deny);
}

#[test]
fn webhook_match_conditions_false_wins_over_errors() {
    let conditions = |list: Value| MatchConditions::new(Some(&list), Scope::Webhook);
    let object = deployment(1);
    let request = request();
    let input = Input {
        object: Some(&object),
        request: Some(&request),
        ..Input::default()
    };
    for (list, expected) in [
        (json!([]), Match::Matches),
        (json!([{"name": "a", "expression": "request.userInfo.username == 'alice'"}]), Match::Matches),
        (
            json!([{"name": "err", "expression": "object.x"}, {"name": "no", "expression": "false"}]),
            Match::NoMatch("no".to_owned()),
        ),
        (
            json!([{"name": "err", "expression": "object.x"}]),
            Match::Error("expression 'object.x' resulted in error: no such key: x".to_owned()),
        ),
        (
            json!([{"name": "e1", "expression": "object.x"}, {"name": "e2", "expression": "object.y"}]),
            Match::Error("[expression 'object.x' resulted in error: no such key: x, expression 'object.y' resulted in error: no such key: y]".to_owned()),
        ),
    ] {
        assert_eq!(conditions(list.clone()).evaluate(&input), expected, "{list}");
    }
}

#[test]
fn namespace_object_and_audit_annotations() {
    let namespace = json!({"metadata": {"name": "prod", "labels": {"env": "prod"}, "managedFields": []}, "spec": {}});
    let object = deployment(1);
    let policy = Policy::new(&json!({
        "validations": [{"expression": "namespaceObject.metadata.labels.env == 'dev'", "messageExpression": "'env is ' + namespaceObject.metadata.labels.env"}],
        "auditAnnotations": [
            {"key": "replicas", "valueExpression": "string(object.spec.replicas)"},
            {"key": "none", "valueExpression": "null"},
            {"key": "bad", "valueExpression": "1"},
        ],
    }));
    let verdict = policy.evaluate(&Input {
        object: Some(&object),
        namespace: Some(&namespace),
        ..Input::default()
    });
    assert_eq!(verdict.decisions[0].message, "env is prod");
    assert_eq!(
        verdict.audit_annotations,
        [("replicas".to_owned(), "1".to_owned())]
    );
    assert_eq!(
        verdict.decisions[1].message,
        "valueExpression '1' resulted in unsupported return type: int. Return type must be either string or null."
    );
}

#[test]
fn policy_specs_are_checked_as_kube_checks_them() {
    let t = |extra: Value| {
        let mut spec = json!({"validations": [{"expression": "true"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        policy_errors("p", &spec)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message()))
            .collect::<Vec<_>>()
    };
    let deep = format!("{}1{}", "(".repeat(60), ")".repeat(60));
    for (extra, expected) in [
        (
            json!({"variables": [{"name": "4ever", "expression": "true"}]}),
            vec!["spec.variables[0].name: Invalid value: \"4ever\": name is not a valid CEL identifier".to_owned()],
        ),
        (
            json!({"variables": [{"name": " ", "expression": " "}]}),
            vec![
                "spec.variables[0].name: Required value: name is not specified".to_owned(),
                "spec.variables[0].expression: Required value: expression is not specified".to_owned(),
            ],
        ),
        // A variable sees only those declared before it.
        (
            json!({"variables": [{"name": "a", "expression": "variables.b"}, {"name": "b", "expression": "1"}]}),
            vec!["spec.variables[0].expression: Invalid value: \"variables.b\": compilation failed: ERROR: <input>:1:10: undefined field 'b'\n | variables.b\n | .........^".to_owned()],
        ),
        (
            json!({"validations": [{"expression": "variables.nope"}]}),
            vec!["spec.validations[0].expression: Invalid value: \"variables.nope\": compilation failed: ERROR: <input>:1:10: undefined field 'nope'\n | variables.nope\n | .........^".to_owned()],
        ),
        (
            json!({"validations": [{"expression": "true", "messageExpression": "string(authorizer)"}]}),
            vec!["spec.validations[0].messageExpression: Invalid value: \"string(authorizer)\": compilation failed: ERROR: <input>:1:8: undeclared reference to 'authorizer' (in container '')\n | string(authorizer)\n | .......^".to_owned()],
        ),
        (
            json!({"validations": [{"expression": "true", "message": "a\nb", "reason": "NotFound"}]}),
            vec![
                "spec.validations[0].message: Invalid value: \"a\\nb\": message must not contain line breaks".to_owned(),
                "spec.validations[0].reason: Unsupported value: \"NotFound\": supported values: \"Forbidden\", \"Invalid\", \"RequestEntityTooLarge\", \"Unauthorized\"".to_owned(),
            ],
        ),
        (
            json!({"validations": [{"expression": "true", "messageExpression": "  "}]}),
            vec!["spec.validations[0].messageExpression: Invalid value: \"  \": must be non-empty if specified".to_owned()],
        ),
        (
            json!({"validations": [{"expression": deep}]}),
            vec![format!("spec.validations[0].expression: Invalid value: \"{deep}\": compilation failed: ERROR: <input>:1:1: expression recursion limit exceeded: 100\n | {deep}\n | ^")],
        ),
        (
            json!({"matchConditions": [{"name": "a", "expression": "true"}, {"name": "a", "expression": " "}, {"name": "-bad-", "expression": "true"}]}),
            vec![
                "spec.matchConditions[1].expression: Required value".to_owned(),
                "spec.matchConditions[1].name: Duplicate value: \"a\"".to_owned(),
                "spec.matchConditions[2].name: Invalid value: \"-bad-\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_owned(),
            ],
        ),
        (
            json!({"validations": [], "auditAnnotations": [{"key": "a", "valueExpression": "'x'"}, {"key": "a", "valueExpression": "'y'"}]}),
            vec!["spec.auditAnnotations[1].key: Duplicate value: \"a\"".to_owned()],
        ),
    ] {
        assert_eq!(t(extra.clone()), expected, "{extra}");
    }
    assert_eq!(
        policy_errors("p", &json!({}))
            .iter()
            .map(|e| e.field.as_str())
            .collect::<Vec<_>>(),
        ["spec.validations", "spec.auditAnnotations"]
    );
}

#[test]
fn functions_keelson_lacks_are_refused_when_written() {
    for (source, message) in [
        (
            "object.metadata.name.frobnicate() == ''",
            "compilation failed: ERROR: <input>:1:32: undeclared reference to 'frobnicate' (in container '')\n | object.metadata.name.frobnicate() == ''\n | ...............................^",
        ),
        (
            "authorizer.group('apps').resource('deployments').check('create').allowed()",
            "compilation failed: ERROR: <input>:1:",
        ),
    ] {
        let detail = match compile(source, Scope::Webhook) {
            Ok(_) => String::new(),
            Err(detail) => detail,
        };
        assert!(detail.starts_with(message), "{source}: {detail}");
    }
}

#[test]
fn costs_are_held_to_kubes_limits() {
    let items: Vec<i64> = (0..1500).collect();
    // The estimate takes every list to be as long as the longest: `small` costs as `items`.
    let object = json!({"spec": {"items": items, "small": [1, 2, 3]}});
    let expensive = "object.spec.items.all(x, object.spec.items.exists(y, y == x))";
    let policy = |validations: Value| Policy::new(&json!({"validations": validations}));
    let run = |p: &Policy| {
        p.evaluate(&Input {
            object: Some(&object),
            ..Input::default()
        })
    };
    let verdict = run(&policy(json!([{"expression": expensive}])));
    assert_eq!(
        verdict.decisions[0].message,
        format!(
            "expression '{expensive}' resulted in error: operation cancelled: actual cost limit exceeded"
        )
    );
    // Under the per-call limit one by one, over the budget together.
    let moderate = "object.spec.small.all(x, x < 100000 && x >= 0 && x != -7)";
    let cost = |s: &str| {
        let e = compile(s, Scope::Webhook).expect("compiles");
        Estimator::new(
            &ANY,
            false,
            Meter::new(&Input {
                object: Some(&object),
                ..Input::default()
            })
            .sizes,
        )
        .estimate(e.program.expression())
        .cost
    };
    let each = cost(moderate);
    assert!(each < PER_CALL_LIMIT, "{each}");
    let many = usize::try_from(RUNTIME_COST_BUDGET / each + 1).expect("small");
    let verdict = run(&policy(Value::Array(vec![
        json!({"expression": moderate});
        many
    ])));
    assert_eq!(verdict.decisions.len(), 1);
    assert_eq!(verdict.decisions[0].message, OUT_OF_BUDGET);
    assert!(verdict.decisions[0].deny);
    // Within budget: every validation decides.
    let verdict = run(&policy(Value::Array(vec![
        json!({"expression": moderate});
        2
    ])));
    assert_eq!(verdict.decisions.len(), 2);
    assert!(verdict.decisions.iter().all(|d| !d.deny));
}
