//! Table tests of `x-kubernetes-validations` rules at run time: kube's messages, transition
//! rules, the cost budget, the Kubernetes CEL libraries and public bundles' rules.

use serde_json::{Value, json};

use super::Structural;
use super::tests::{P, compiled, refused, rule_schema, strings, validate, with_spec};

fn cel_schema() -> Structural {
    compiled(json!({
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.metadata.name.startsWith('w')", "message": "name must start with w"}],
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "min": {"type": "integer"},
                    "max": {"type": "integer"},
                    "replicas": {"type": "integer", "x-kubernetes-validations": [
                        {"rule": "self >= oldSelf", "message": "replicas may not decrease"},
                    ]},
                    "mode": {"type": "string", "maxLength": 10, "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "message": "mode is immutable", "reason": "FieldValueForbidden"},
                    ]},
                    "tags": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 20},
                        "x-kubernetes-validations": [{"rule": "self.all(t, t.matches('^[a-z]+$'))", "messageExpression": "'bad tags: ' + self.join(',')"}]},
                    "dash-name": {"type": "string", "maxLength": 5},
                },
                "x-kubernetes-validations": [
                    {"rule": "!has(self.min) || !has(self.max) || self.min <= self.max"},
                    {"rule": "!has(self.max) || self.max < 100", "fieldPath": ".max", "message": "max too large"},
                    {"rule": "!has(self.dash__dash__name) || size(self.dash__dash__name) > 1", "reason": "FieldValueRequired", "message": "dash-name too short"},
                ],
            },
        },
    }))
}

#[test]
fn rules_report_kubes_messages() {
    let s = cel_schema();
    let meta = json!({"name": "web"});
    let cases: Vec<(Value, Option<Value>, Vec<&str>)> = vec![
        (
            json!({"metadata": meta, "spec": {"min": 1, "max": 2}}),
            None,
            vec![],
        ),
        (
            json!({"metadata": meta, "spec": {"min": 3, "max": 2}}),
            None,
            vec![
                "spec: Invalid value: \"object\": failed rule: !has(self.min) || !has(self.max) || self.min <= self.max",
            ],
        ),
        (
            json!({"metadata": meta, "spec": {"max": 200}}),
            None,
            vec!["spec.max: Invalid value: \"object\": max too large"],
        ),
        (
            json!({"metadata": meta, "spec": {"dash-name": "a"}}),
            None,
            vec!["spec: Required value: dash-name too short"],
        ),
        (
            json!({"metadata": {"name": "app"}, "spec": {}}),
            None,
            vec!["<nil>: Invalid value: \"object\": name must start with w"],
        ),
        (
            json!({"metadata": meta, "spec": {"tags": ["ok", "Bad"]}}),
            None,
            vec!["spec.tags: Invalid value: \"array\": bad tags: ok,Bad"],
        ),
    ];
    for (obj, old, want) in cases {
        assert_eq!(validate(&s, obj.clone(), old), want, "for {obj}");
    }
}

#[test]
fn transition_rules_run_only_on_update_with_an_old_value() {
    let s = cel_schema();
    let obj = |replicas: i64, mode: &str| json!({"metadata": {"name": "w"}, "spec": {"replicas": replicas, "mode": mode}});
    // Create: no oldSelf, the transition rules are skipped.
    assert_eq!(validate(&s, obj(1, "a"), None), Vec::<String>::new());
    // Update that keeps or raises: fine.
    assert_eq!(
        validate(&s, obj(3, "a"), Some(obj(2, "a"))),
        Vec::<String>::new()
    );
    // Update that lowers replicas and changes the mode.
    assert_eq!(
        validate(&s, obj(1, "b"), Some(obj(2, "a"))),
        [
            "spec.mode: Forbidden: mode is immutable",
            "spec.replicas: Invalid value: \"integer\": replicas may not decrease",
        ]
    );
    // The field did not exist before: its transition rule is skipped.
    let old = json!({"metadata": {"name": "w"}, "spec": {}});
    assert_eq!(validate(&s, obj(1, "b"), Some(old)), Vec::<String>::new());
}

#[test]
fn rules_are_skipped_when_the_object_has_the_wrong_shape() {
    let s = cel_schema();
    assert_eq!(
        validate(
            &s,
            json!({"metadata": {"name": "app"}, "spec": {"min": "3", "max": 2}}),
            None
        ),
        [
            "spec.min: Invalid value: \"string\": spec.min in body must be of type integer: \"string\"",
            "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
}

#[test]
fn runtime_errors_name_the_rule() {
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}},
        "x-kubernetes-validations": [{"rule": "self.a.b > 0"}],
    })));
    assert_eq!(
        validate(&s, json!({"spec": {"a": {}}}), None),
        ["spec: Invalid value: \"object\": no such key: b evaluating rule: self.a.b > 0"]
    );
}

#[test]
fn evaluation_stops_when_the_cost_budget_runs_out() {
    // Each item's rule is cheap enough to be accepted, but all of them together on a full list
    // of long strings exceed the per-object budget at run time.
    let rules: Vec<Value> = (0..12)
        .map(|i| json!({"rule": format!("self.matches('^{}[a-z]*$')", "a".repeat(200 + i))}))
        .collect();
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {"names": {
            "type": "array", "maxItems": 100,
            "items": {"type": "string", "maxLength": 250, "x-kubernetes-validations": rules},
        }},
    })));
    let long = "a".repeat(250);
    let names: Vec<Value> = (0..100).map(|_| Value::from(long.clone())).collect();
    let errs = validate(&s, json!({"spec": {"names": names}}), None);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("spec.names["), "{errs:#?}");
    assert!(
        errs[0].ends_with("]: Invalid value: \"string\": validation failed due to running out of cost budget, no further validation rules will be run"),
        "{errs:#?}"
    );
}

fn lib_schema(rule: &str) -> Structural {
    compiled(with_spec(json!({
        "type": "object",
        "properties": {
            "nums": {"type": "array", "maxItems": 10, "items": {"type": "integer"}},
            "text": {"type": "string", "maxLength": 64},
            "mem": {"type": "string", "maxLength": 64},
            "limit": {"type": "string", "maxLength": 64},
        },
        "x-kubernetes-validations": [{"rule": rule}],
    })))
}

#[test]
fn kubernetes_library_functions() {
    let obj =
        json!({"spec": {"nums": [1, 2, 5], "text": "ab12cd345", "mem": "1536Mi", "limit": "2Gi"}});
    let holds = [
        "self.nums.isSorted()",
        "self.nums.sum() == 8",
        "self.nums.min() == 1 && self.nums.max() == 5",
        "self.text.find('[0-9]+') == '12'",
        "self.text.findAll('[0-9]+') == ['12', '345']",
        "self.text.findAll('[0-9]+', 1) == ['12']",
        "isIP('10.0.0.1') && isIP('fd00::1') && !isIP('10.0.0.256')",
        "isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0/33')",
        "isURL('https://example.com/x') && !isURL('example.com')",
        "isQuantity(self.mem) && !isQuantity('1.5.3')",
        "quantity(self.mem).isLessThan(quantity(self.limit))",
        "quantity(self.limit).compareTo(quantity('2048Mi')) == 0",
        "quantity(self.limit) == quantity('2048Mi')",
        "quantity('1').add(quantity('500m')).asApproximateFloat() == 1.5",
        "quantity('3').sub(1).asInteger() == 2",
        "quantity('-1').sign() == -1 && !quantity('1.5').isInteger()",
        "type(self.nums[0]) == int",
        "self.text.lowerAscii().startsWith('ab')",
        "self.nums.distinct().size() == 3",
        "cel.bind(total, self.nums.sum(), total > 7 && total < 9)",
    ];
    for rule in holds {
        let s = lib_schema(rule);
        assert_eq!(
            validate(&s, obj.clone(), None),
            Vec::<String>::new(),
            "{rule}"
        );
    }
    let s = lib_schema("self.nums.sum() < 5");
    assert_eq!(
        validate(&s, obj, None),
        ["spec: Invalid value: \"object\": failed rule: self.nums.sum() < 5"]
    );
}

#[test]
fn functions_keelson_does_not_offer_are_refused_when_the_crd_is_written() {
    let errs = refused(rule_schema(json!([{"rule": "self.name.frobnicate()"}])));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].ends_with("compilation failed: ERROR: <input>:1:21: undeclared reference to 'frobnicate' (in container '')\n | self.name.frobnicate()\n | ....................^"),
        "{}",
        errs[0]
    );
    let errs = refused(rule_schema(
        json!([{"rule": "url(self.name).getScheme() == 'https'"}]),
    ));
    assert!(
        errs[0].contains("undeclared reference to 'url' (in container ''): keelson does not implement this Kubernetes CEL library function"),
        "{errs:#?}"
    );
}

#[test]
fn deeply_nested_rules_are_refused_without_exhausting_the_stack() {
    // Run where a Tokio worker would: on a 2 MiB stack.
    let run = |rule: String| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || Structural::compile(&rule_schema(json!([{"rule": rule}])), P).err())
            .map(|h| h.join().unwrap_or_else(|_| panic!("compile panicked")))
            .unwrap_or_else(|e| panic!("spawn: {e}"))
    };
    let parens = format!("{}self.min{} > 0", "(".repeat(60), ")".repeat(60));
    let errs = run(parens).unwrap_or_else(|| panic!("accepted"));
    assert!(
        errs[0].to_string().ends_with("compilation failed: ERROR: <input>:1:1: expression recursion limit exceeded: 100\n | ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((self.min)))))))))))))))))))))))))))))))))))))))))))))))))))))))))))) > 0\n | ^"),
        "{errs:#?}"
    );
    let sum = format!("self.min + {} > 0", vec!["1"; 150].join(" + "));
    let errs = run(sum).unwrap_or_else(|| panic!("accepted"));
    assert!(
        errs[0]
            .to_string()
            .contains("expression recursion limit exceeded: 100"),
        "{errs:#?}"
    );
    // Nesting just within the limit compiles and evaluates on that stack.
    let ok = format!(
        "{}self.min{} > 0 && {} > 0",
        "(".repeat(20),
        ")".repeat(20),
        vec!["1"; 90].join(" + ")
    );
    assert_eq!(run(ok.clone()).map(|e| strings(&e)), None);
    let s = compiled(rule_schema(json!([{"rule": ok}])));
    let errs = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || validate(&s, json!({"spec": {"min": 0}}), None))
        .map(|h| h.join().unwrap_or_else(|_| panic!("validate panicked")))
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn a_compiled_schema_can_be_shared_between_request_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Structural>();
}

#[test]
fn optional_old_self_rules_run_on_create_too() {
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {"size": {"type": "integer", "x-kubernetes-validations": [{
            "rule": "!oldSelf.hasValue() || self >= oldSelf.value()",
            "message": "size may not shrink",
            "optionalOldSelf": true,
        }, {
            "rule": "oldSelf.hasValue() || self <= 10",
            "message": "new objects start at 10 or less",
            "optionalOldSelf": true,
        }]}},
    })));
    let obj = |n: i64| json!({"spec": {"size": n}});
    assert_eq!(validate(&s, obj(5), None), Vec::<String>::new());
    assert_eq!(
        validate(&s, obj(11), None),
        ["spec.size: Invalid value: \"integer\": new objects start at 10 or less"]
    );
    assert_eq!(validate(&s, obj(20), Some(obj(15))), Vec::<String>::new());
    assert_eq!(
        validate(&s, obj(12), Some(obj(15))),
        ["spec.size: Invalid value: \"integer\": size may not shrink"]
    );
}

#[test]
fn rules_see_only_declared_fields_and_a_resources_name() {
    let root = |rule: &str| {
        json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": rule}],
            "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"known": {"type": "string"}}}},
        })
    };
    compiled(root(
        "self.metadata.name != '' && self.kind == 'Widget' && has(self.spec.known)",
    ));
    for (rule, field) in [
        ("self.metadata.labels.size() > 0", "labels"),
        ("has(self.spec.unknown)", "unknown"),
    ] {
        let errs = refused(root(rule));
        assert!(
            errs[0].contains(&format!(": undefined field '{field}'\n")),
            "{rule}: {errs:#?}"
        );
    }
}

#[test]
fn durations_and_timestamps_compare() {
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {
            "request": {"type": "string", "format": "duration", "maxLength": 32},
            "backend": {"type": "string", "maxLength": 32},
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
        },
        "x-kubernetes-validations": [
            {"rule": "!(has(self.request) && has(self.backend)) || duration(self.backend) <= self.request", "message": "backend timeout must not exceed the request timeout"},
            {"rule": "!(has(self.start) && has(self.end)) || self.start < self.end", "message": "start must come before end"},
            {"rule": "!has(self.request) || self.request != duration('0s')"},
            {"rule": "timestamp('2024-01-01T00:00:00Z') < timestamp('2024-01-01T00:00:01Z')"},
        ],
    })));
    assert_eq!(
        validate(
            &s,
            json!({"spec": {"request": "1m30s", "backend": "90s", "start": "2024-01-02T00:00:00Z", "end": "2024-01-02T00:00:00.5Z"}}),
            None
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        validate(
            &s,
            json!({"spec": {"request": "1m", "backend": "1.5m", "start": "2024-01-03T00:45:00+01:00", "end": "2024-01-02T23:30:00Z"}}),
            None
        ),
        [
            "spec: Invalid value: \"object\": backend timeout must not exceed the request timeout",
            "spec: Invalid value: \"object\": start must come before end",
        ]
    );
    assert_eq!(
        validate(&s, json!({"spec": {"request": "0"}}), None),
        [
            "spec: Invalid value: \"object\": failed rule: !has(self.request) || self.request != duration('0s')"
        ]
    );
}

#[test]
fn unchanged_values_are_ratcheted_on_update() {
    // The schema was tightened after `legacy` was stored with a longer name.
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {
            "legacy": {"type": "string", "maxLength": 3},
            "other": {"type": "integer"},
            "limits": {"type": "object", "properties": {"cpu": {"type": "integer", "maximum": 4}},
                "x-kubernetes-validations": [{"rule": "self.cpu % 2 == 0", "message": "cpu must be even"}]},
        },
    })));
    let old = json!({"spec": {"legacy": "toolong", "other": 1, "limits": {"cpu": 5}}});
    // Changing another field: the old, now invalid, values are not reported.
    assert_eq!(
        validate(
            &s,
            json!({"spec": {"legacy": "toolong", "other": 2, "limits": {"cpu": 5}}}),
            Some(old.clone())
        ),
        Vec::<String>::new()
    );
    // Changing them: they are.
    assert_eq!(
        validate(
            &s,
            json!({"spec": {"legacy": "stilltoolong", "other": 2, "limits": {"cpu": 7}}}),
            Some(old.clone())
        ),
        [
            "spec.legacy: Too long: may not be more than 3 bytes",
            "spec.limits.cpu: Invalid value: 7: spec.limits.cpu in body should be less than or equal to 4",
            "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
    // A rule without oldSelf is ratcheted too; once the value changes it holds again.
    let old = json!({"spec": {"limits": {"cpu": 3}}});
    assert_eq!(
        validate(
            &s,
            json!({"spec": {"other": 1, "limits": {"cpu": 3}}}),
            Some(old.clone())
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        validate(
            &s,
            json!({"spec": {"limits": {"cpu": 1}}}),
            Some(old.clone())
        ),
        ["spec.limits: Invalid value: \"object\": cpu must be even"]
    );
    // On create, everything is checked.
    assert_eq!(
        validate(&s, old, None),
        ["spec.limits: Invalid value: \"object\": cpu must be even"]
    );
}

#[test]
fn the_cel_environment_and_library_declare_without_conflicts() {
    let env = super::cel::environment().unwrap_or_else(|e| panic!("environment: {e}"));
    let mut ctx = cel::Context::with_env(std::sync::Arc::new(env));
    if let Err(e) = super::library::install(&mut ctx) {
        panic!("library: {e}");
    }
}

#[test]
fn cost_estimate_is_close_to_kubes_for_a_documented_rule() {
    // Kubernetes documents about 750 for this rule over 25 strings of at most 63 characters.
    let list = super::schema::Node::read(&json!({
        "type": "array", "maxItems": 25, "items": {"type": "string", "maxLength": 63},
    }));
    let program =
        cel::Program::compile("self.all(x, x.contains('gpu'))").unwrap_or_else(|e| panic!("{e}"));
    let cost = super::cost::Estimator::new(&list, false, super::cost::Sizes::Static)
        .estimate(program.expression())
        .cost;
    assert!((600..=900).contains(&cost), "estimated {cost}");
}

#[test]
fn the_schema_may_restrict_the_name() {
    let s = compiled(json!({
        "type": "object",
        "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}}}},
    }));
    assert_eq!(
        validate(
            &s,
            json!({"metadata": {"name": "short", "labels": {"a": "b"}}}),
            None
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        validate(&s, json!({"metadata": {"name": "muchtoolong"}}), None),
        ["metadata.name: Too long: may not be more than 5 bytes"]
    );
}

/// The shape of Gateway API's `targetRefs` (BackendTLSPolicy, standard channel) with its two
/// rules, which kube accepts: a public bundle's rules must compile and cost within the limits.
#[test]
fn a_public_bundles_nested_rules_are_accepted_and_enforced() {
    let name = |max: u64| json!({"type": "string", "maxLength": max, "minLength": 1});
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {"targetRefs": {
            "type": "array", "minItems": 1, "maxItems": 16, "x-kubernetes-list-type": "atomic",
            "items": {
                "type": "object",
                "required": ["group", "kind", "name"],
                "properties": {
                    "group": {"type": "string", "maxLength": 253},
                    "kind": name(63),
                    "name": name(253),
                    "sectionName": name(253),
                },
            },
            "x-kubernetes-validations": [
                {
                    "message": "sectionName must be specified when targetRefs includes 2 or more references to the same target",
                    "rule": "self.all(p1, self.all(p2, p1.group == p2.group && p1.kind == p2.kind && p1.name == p2.name ? ((!has(p1.sectionName) || p1.sectionName == '') == (!has(p2.sectionName) || p2.sectionName == '')) : true))",
                },
                {
                    "message": "sectionName must be unique when targetRefs includes 2 or more references to the same target",
                    "rule": "self.all(p1, self.exists_one(p2, p1.group == p2.group && p1.kind == p2.kind && p1.name == p2.name && (((!has(p1.sectionName) || p1.sectionName == '') && (!has(p2.sectionName) || p2.sectionName == '')) || (has(p1.sectionName) && has(p2.sectionName) && p1.sectionName == p2.sectionName))))",
                },
            ],
        }},
    })));
    let svc = |section: Option<&str>| {
        let mut r = json!({"group": "", "kind": "Service", "name": "web"});
        if let Some(sec) = section {
            r["sectionName"] = json!(sec);
        }
        r
    };
    let ok = json!({"spec": {"targetRefs": [svc(Some("http")), svc(Some("https"))]}});
    assert_eq!(validate(&s, ok, None), Vec::<String>::new());
    let mixed = json!({"spec": {"targetRefs": [svc(None), svc(Some("https"))]}});
    assert_eq!(
        validate(&s, mixed, None),
        [
            "spec.targetRefs: Invalid value: \"array\": sectionName must be specified when targetRefs includes 2 or more references to the same target"
        ]
    );
    let twice = json!({"spec": {"targetRefs": [svc(Some("http")), svc(Some("http"))]}});
    assert_eq!(
        validate(&s, twice, None),
        [
            "spec.targetRefs: Invalid value: \"array\": sectionName must be unique when targetRefs includes 2 or more references to the same target"
        ]
    );
}

/// HTTPRoute's cap on the total number of matches: a sum of sixteen conditionals.
#[test]
fn a_long_sum_of_conditionals_compiles_and_runs() {
    let terms: Vec<String> = (0..16)
        .map(|i| format!("(self.size() > {i} ? self[{i}].matches.size() : 0)"))
        .collect();
    let rule = format!("{} <= 128", terms.join(" + "));
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {"rules": {
            "type": "array", "maxItems": 16,
            "items": {"type": "object", "properties": {"matches": {
                "type": "array", "maxItems": 64,
                "items": {"type": "object", "properties": {"path": {"type": "string", "maxLength": 1024}}},
            }}},
            "x-kubernetes-validations": [{"rule": rule, "message": "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128"}],
        }},
    })));
    let rule_with = |n: usize| json!({"matches": vec![json!({"path": "/"}); n]});
    let fine = json!({"spec": {"rules": [rule_with(64), rule_with(64)]}});
    assert_eq!(validate(&s, fine, None), Vec::<String>::new());
    let over = json!({"spec": {"rules": [rule_with(64), rule_with(64), rule_with(1)]}});
    assert_eq!(validate(&s, over, None).len(), 1);
}

#[test]
fn one_evaluation_is_bounded_by_the_per_call_limit() {
    let rule = "self.names.all(x, x.matches('^a*$'))";
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {"names": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 1000}}},
        "x-kubernetes-validations": [{"rule": rule}],
    })));
    // Small values: the rule runs.
    assert_eq!(
        validate(&s, json!({"spec": {"names": ["aa", "ab"]}}), None).len(),
        1
    );
    // The largest values the schema allows: refused before running, in kube's words.
    let names: Vec<Value> = (0..1000).map(|_| Value::from("a".repeat(1000))).collect();
    assert_eq!(
        validate(&s, json!({"spec": {"names": names}}), None),
        [format!(
            "spec: Invalid value: \"object\": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {rule}"
        )]
    );
}
