//! The label selectors' tests: the query syntax, matching, the typed conversions and node
//! affinity, each against Kubernetes' own cases.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn parses_every_label_operator() {
    let s =
        LabelSelector::parse("app=web, tier==fe,env!=prod,zone in (a, b),x notin (y),has,!gone")
            .expect("valid");
    assert_eq!(
        s.requirements,
        vec![
            LabelRequirement::Equals("app".into(), "web".into()),
            LabelRequirement::Equals("tier".into(), "fe".into()),
            LabelRequirement::NotEquals("env".into(), "prod".into()),
            LabelRequirement::In("zone".into(), vec!["a".into(), "b".into()]),
            LabelRequirement::NotIn("x".into(), vec!["y".into()]),
            LabelRequirement::Exists("has".into()),
            LabelRequirement::DoesNotExist("gone".into()),
        ]
    );
}

#[test]
fn matches_like_kubernetes() {
    let s = LabelSelector::parse("app=web,env!=prod,zone in (a,b),!canary").expect("valid");
    assert!(s.matches(&labels(&[("app", "web"), ("zone", "a")])));
    assert!(s.matches(&labels(&[("app", "web"), ("zone", "b"), ("env", "dev")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("zone", "c")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("zone", "a"), ("env", "prod")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("zone", "a"), ("canary", "")])));
    let notin = LabelSelector::parse("x notin (y)").expect("valid");
    assert!(notin.matches(&labels(&[])), "absent labels satisfy notin");
    assert!(
        LabelSelector::parse("")
            .expect("empty")
            .matches(&labels(&[]))
    );
}

#[test]
fn rejects_bad_selectors_with_kubernetes_messages() {
    assert!(matches!(
        LabelSelector::parse("app in ()"),
        Err(SelectorError::Syntax(_))
    ));
    assert!(matches!(
        LabelSelector::parse("a b c"),
        Err(SelectorError::Syntax(_))
    ));
    let err = LabelSelector::parse("-bad=x").expect_err("invalid key");
    assert!(
        err.to_string().starts_with("invalid label key \"-bad\""),
        "{err}"
    );
    let err = LabelSelector::parse("app=we b").expect_err("invalid value");
    assert!(err.to_string().starts_with("invalid label value"), "{err}");
    assert!(LabelSelector::parse("example.com/app=x").is_ok());
    assert!(LabelSelector::parse("Bad_Prefix!/app=x").is_err());
}

fn expression(key: &str, operator: &str, values: &[&str]) -> metav1::LabelSelectorRequirement {
    metav1::LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
    }
}

/// A typed selector -> its query text, or Kubernetes' error message.
#[test]
fn typed_label_selectors_convert_like_label_selector_as_selector() {
    let selector = |labels: &[(&str, &str)], expressions| metav1::LabelSelector {
        match_labels: (!labels.is_empty()).then(|| self::labels(labels)),
        match_expressions: Some(expressions),
    };
    for (typed, expected) in [
        (selector(&[], vec![]), Ok("")),
        (
            selector(
                &[("app", "web")],
                vec![expression("tier", "In", &["b", "a"])],
            ),
            Ok("app=web,tier in (a,b)"),
        ),
        (
            selector(
                &[("z", "1")],
                vec![
                    expression("canary", "DoesNotExist", &[]),
                    expression("env", "NotIn", &["prod"]),
                    expression("a", "Exists", &[]),
                ],
            ),
            Ok("a,!canary,env notin (prod),z=1"),
        ),
        (
            selector(&[], vec![expression("tier", "Matches", &["a"])]),
            Err("\"Matches\" is not a valid label selector operator"),
        ),
        (
            selector(&[], vec![expression("tier", "In", &[])]),
            Err(
                "values: Invalid value: []string(nil): for 'in', 'notin' operators, values \
                 set can't be empty",
            ),
        ),
        (
            selector(&[], vec![expression("tier", "Exists", &["a"])]),
            Err(
                "values: Invalid value: []string{\"a\"}: values set must be empty for \
                 exists and does not exist",
            ),
        ),
        (
            selector(&[], vec![expression("tier", "Gt", &["1"])]),
            Err("\"Gt\" is not a valid label selector operator"),
        ),
        (
            selector(&[("-bad", "x")], vec![]),
            Err(
                "invalid label key \"-bad\": name part must consist of alphanumeric \
                 characters, '-', '_' or '.', and must start and end with an alphanumeric \
                 character",
            ),
        ),
    ] {
        let converted = LabelSelector::from_label_selector(&typed);
        assert_eq!(
            converted
                .as_ref()
                .map(ToString::to_string)
                .map_err(ToString::to_string),
            expected.map(str::to_owned).map_err(str::to_owned),
            "{typed:?}"
        );
        if let Ok(s) = converted {
            let text = s.to_string();
            let parsed = LabelSelector::parse(&text).expect("the text parses back");
            assert_eq!(parsed.to_string(), text);
        }
    }
}

#[test]
fn typed_label_selectors_match_like_kubernetes() {
    let web = labels(&[("app", "web"), ("tier", "b")]);
    let selector = metav1::LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![expression("tier", "In", &["a", "b"])]),
    };
    assert!(label_selector_matches(Some(&selector), &web));
    assert!(!label_selector_matches(
        Some(&selector),
        &labels(&[("app", "web")])
    ));
    assert!(!label_selector_matches(
        Some(&selector),
        &labels(&[("app", "db"), ("tier", "a")])
    ));
    assert!(
        label_selector_matches(Some(&metav1::LabelSelector::default()), &web),
        "empty matches everything"
    );
    assert!(
        !label_selector_matches(None, &web),
        "absent matches nothing"
    );
    let invalid = metav1::LabelSelector {
        match_expressions: Some(vec![expression("tier", "Matches", &[])]),
        ..metav1::LabelSelector::default()
    };
    assert!(
        !label_selector_matches(Some(&invalid), &web),
        "invalid matches nothing"
    );
}

#[test]
fn set_and_service_selectors() {
    let pod = labels(&[("app", "web"), ("tier", "fe")]);
    let set = labels(&[("tier", "fe"), ("app", "web")]);
    assert_eq!(LabelSelector::from_set(&set).to_string(), "app=web,tier=fe");
    assert!(LabelSelector::from_set(&set).matches(&pod));
    assert!(LabelSelector::from_set(&BTreeMap::new()).matches(&pod));
    assert!(service_selector(Some(&set)).is_some_and(|s| s.matches(&pod)));
    assert_eq!(service_selector(Some(&BTreeMap::new())), None);
    assert_eq!(service_selector(None), None);
}

#[test]
fn greater_and_less_than() {
    let s = LabelSelector::parse("cores>4,gen<3").expect("valid");
    assert_eq!(
        s.requirements,
        vec![
            LabelRequirement::GreaterThan("cores".into(), 4),
            LabelRequirement::LessThan("gen".into(), 3),
        ]
    );
    assert_eq!(s.to_string(), "cores>4,gen<3");
    assert!(s.matches(&labels(&[("cores", "8"), ("gen", "2")])));
    assert!(!s.matches(&labels(&[("cores", "4"), ("gen", "2")])));
    assert!(!s.matches(&labels(&[("cores", "many"), ("gen", "2")])));
    assert!(!s.matches(&labels(&[("gen", "2")])));
    let err = LabelSelector::parse("cores>four").expect_err("not an integer");
    assert_eq!(
        err.to_string(),
        "values: Invalid value: []string{\"four\"}: for 'Gt', 'Lt' operators, the value \
         must be an integer"
    );
}

fn node_requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
    }
}

/// (matchExpressions, matchFields) of one term -> whether node `n1` with zone=a, cores=8
/// matches.
#[test]
fn node_selector_terms() {
    let node = labels(&[("zone", "a"), ("cores", "8")]);
    let term = |expressions: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
        NodeSelectorTerm {
            match_expressions: (!expressions.is_empty()).then_some(expressions),
            match_fields: (!fields.is_empty()).then_some(fields),
        }
    };
    let r = node_requirement;
    for (term, expected) in [
        (term(vec![], vec![]), false),
        (term(vec![r("zone", "In", &["a", "b"])], vec![]), true),
        (term(vec![r("zone", "NotIn", &["a"])], vec![]), false),
        (term(vec![r("gpu", "DoesNotExist", &[])], vec![]), true),
        (term(vec![r("zone", "Exists", &[])], vec![]), true),
        (term(vec![r("cores", "Gt", &["4"])], vec![]), true),
        (term(vec![r("cores", "Lt", &["4"])], vec![]), false),
        (term(vec![r("cores", "Gt", &["4", "5"])], vec![]), false),
        (term(vec![r("cores", "Gt", &["four"])], vec![]), false),
        (term(vec![r("zone", "Matches", &["a"])], vec![]), false),
        (term(vec![], vec![r("metadata.name", "In", &["n1"])]), true),
        (term(vec![], vec![r("metadata.name", "In", &["n2"])]), false),
        (
            term(vec![], vec![r("metadata.name", "NotIn", &["n2"])]),
            true,
        ),
        (
            term(vec![], vec![r("metadata.name", "In", &["n1", "n2"])]),
            false,
        ),
        (term(vec![], vec![r("metadata.name", "Exists", &[])]), false),
        (
            term(
                vec![r("zone", "In", &["a"])],
                vec![r("metadata.name", "In", &["n1"])],
            ),
            true,
        ),
        (
            term(
                vec![r("zone", "In", &["b"])],
                vec![r("metadata.name", "In", &["n1"])],
            ),
            false,
        ),
    ] {
        assert_eq!(
            node_selector_term_matches(&term, "n1", &node),
            expected,
            "{term:?}"
        );
    }
    let selector = NodeSelector {
        node_selector_terms: vec![
            term(vec![r("zone", "In", &["b"])], vec![]),
            term(vec![r("zone", "In", &["a"])], vec![]),
        ],
    };
    assert!(
        node_selector_matches(&selector, "n1", &node),
        "terms are ORed"
    );
    assert!(!node_selector_matches(
        &NodeSelector::default(),
        "n1",
        &node
    ));
}
