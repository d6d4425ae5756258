//! networking, rbac, policy, autoscaling, scheduling, node, coordination, storage,
//! admissionregistration, apiregistration, certificates, flowcontrol and discovery kinds.

use serde_json::{Value, json};

use super::{create, has, update, with};

fn ok(group: &str, kind: &str, object: &Value) {
    assert_eq!(create(group, kind, object), Vec::<String>::new(), "{kind}");
}

const NET: &str = "networking.k8s.io";
const RBAC: &str = "rbac.authorization.k8s.io";

#[test]
fn network_policies() {
    let np = json!({"metadata": {"name": "allow", "namespace": "d"},
                    "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                                                   {"podSelector": {"matchLabels": {"app": "web"}}}],
                                          "ports": [{"protocol": "TCP", "port": 5432}]}]}});
    ok(NET, "NetworkPolicy", &np);
    let rule = |r: Value| with(&np, json!({"spec": {"ingress": [r]}}));
    let cases: Vec<(Value, &str)> = vec![
        (
            rule(json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]})),
            "spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": not a valid CIDR",
        ),
        (
            rule(
                json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["192.168.0.0/24"]}}]}),
            ),
            "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"192.168.0.0/24\": must be a strict subset of `cidr`",
        ),
        (
            rule(json!({"from": [{}]})),
            "spec.ingress[0].from[0]: Required value: must specify a peer",
        ),
        (
            rule(json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]})),
            "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
        ),
        (
            rule(json!({"ports": [{"port": 70000}]})),
            "spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            rule(json!({"ports": [{"port": 80, "endPort": 79}]})),
            "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
        ),
        (
            rule(json!({"from": [{"ipBlock": {"cidr": "10.0.0.1"}}]})),
            "spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"10.0.0.1\": not a valid CIDR",
        ),
        (
            rule(json!({"from": [{"ipBlock": {"cidr": ""}}]})),
            "spec.ingress[0].from[0].ipBlock.cidr: Required value",
        ),
        (
            rule(
                json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.300.0.0/16"]}}]}),
            ),
            "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.300.0.0/16\": not a valid CIDR",
        ),
        (
            with(
                &np,
                json!({"spec": {"egress": [{"to": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.0.0/16"]}}]}]}}),
            ),
            "spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"192.168.0.0/16\": must be a strict subset of `cidr`",
        ),
        (
            with(
                &np,
                json!({"spec": {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/x"}}]}]}}),
            ),
            "spec.egress[0].to[0].ipBlock.cidr: Invalid value: \"10.0.0.0/x\": not a valid CIDR",
        ),
        (
            rule(json!({"ports": [{"port": "http", "endPort": 90}]})),
            "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
        ),
        (
            with(&np, json!({"spec": {"policyTypes": ["Inbound"]}})),
            "spec.policyTypes[0]: Unsupported value: \"Inbound\": supported values: \"Ingress\", \"Egress\"",
        ),
    ];
    for (object, expected) in cases {
        has(&create(NET, "NetworkPolicy", &object), expected);
    }
}

#[test]
fn ingresses_and_classes() {
    let ing = json!({"metadata": {"name": "web", "namespace": "d"},
                     "spec": {"ingressClassName": "nginx",
                              "rules": [{"host": "*.example.com", "http": {"paths": [
                                  {"path": "/", "pathType": "Prefix",
                                   "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
                              "tls": [{"hosts": ["www.example.com"], "secretName": "web-tls"}]}});
    ok(NET, "Ingress", &ing);
    let path = |p: Value| {
        with(
            &ing,
            json!({"spec": {"rules": [{"host": "example.com", "http": {"paths": [p]}}]}}),
        )
    };
    let svc = json!({"service": {"name": "web", "port": {"number": 80}}});
    let cases: Vec<(Value, &str)> = vec![
        (
            path(json!({"path": "/", "backend": svc})),
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
        ),
        (
            path(json!({"path": "api", "pathType": "Prefix", "backend": svc})),
            "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path",
        ),
        (
            path(json!({"path": "/", "pathType": "Regex", "backend": svc})),
            "spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
        ),
        (
            path(json!({"path": "/", "pathType": "Prefix", "backend": {}})),
            "spec.rules[0].http.paths[0].backend: Invalid value: \"\": resource or service backend is required",
        ),
        (
            path(
                json!({"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}}),
            ),
            "spec.rules[0].http.paths[0].backend: Required value: port name or number is required",
        ),
        (
            with(&ing, json!({"spec": {"rules": [{"host": "10.0.0.1"}]}})),
            "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
        ),
        (
            with(&ing, json!({"spec": {"rules": [{"host": "foo.*.com"}]}})),
            "spec.rules[0].host: Invalid value: \"foo.*.com\": a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
        (
            with(&ing, json!({"spec": {"rules": null}})),
            "spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified",
        ),
    ];
    for (object, expected) in cases {
        has(&create(NET, "Ingress", &object), expected);
    }
    let class =
        json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}});
    ok(NET, "IngressClass", &class);
    assert_eq!(
        create(
            NET,
            "IngressClass",
            &json!({"metadata": {"name": "x"}, "spec": {}})
        ),
        ["spec.controller: Required value"]
    );
    assert_eq!(
        update(
            NET,
            "IngressClass",
            &class,
            &with(&class, json!({"spec": {"controller": "example.com/other"}}))
        ),
        ["spec.controller: Invalid value: \"example.com/other\": field is immutable"]
    );
    let ip = json!({"metadata": {"name": "10.96.0.10"}, "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "d", "name": "web"}}});
    ok(NET, "IPAddress", &ip);
    has(
        &create(
            NET,
            "IPAddress",
            &with(&ip, json!({"metadata": {"name": "2001:db8:0::1"}})),
        ),
        "metadata.name: Invalid value: \"2001:db8:0::1\": must be a canonical format IP address",
    );
    let cidr = json!({"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.96.0.0/12"]}});
    ok(NET, "ServiceCIDR", &cidr);
    assert_eq!(
        create(
            NET,
            "ServiceCIDR",
            &with(&cidr, json!({"spec": {"cidrs": []}}))
        ),
        ["spec.cidrs: Required value: at least one CIDR required"]
    );
}

#[test]
fn rbac() {
    let role = json!({"metadata": {"name": "reader", "namespace": "d"},
                      "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
    ok(RBAC, "Role", &role);
    assert_eq!(
        create(
            RBAC,
            "Role",
            &with(
                &role,
                json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]})
            )
        ),
        ["rules[0].verbs: Required value: verbs must contain at least one value"]
    );
    assert_eq!(
        create(
            RBAC,
            "Role",
            &with(
                &role,
                json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]})
            )
        ),
        [
            "rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"
        ]
    );
    let cr = json!({"metadata": {"name": "system:reader"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]});
    ok(RBAC, "ClusterRole", &cr);
    let rb = json!({"metadata": {"name": "read", "namespace": "d"},
                    "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "reader"},
                    "subjects": [{"kind": "ServiceAccount", "name": "builder", "namespace": "d"},
                                 {"kind": "User", "name": "alice"}]});
    ok(RBAC, "RoleBinding", &rb);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"roleRef": {"kind": "Pod"}}),
            "roleRef.kind: Unsupported value: \"Pod\": supported values: \"Role\", \"ClusterRole\"",
        ),
        (
            json!({"roleRef": {"apiGroup": ""}}),
            "roleRef.apiGroup: Unsupported value: \"\": supported values: \"rbac.authorization.k8s.io\"",
        ),
        (
            json!({"subjects": [{"kind": "Robot", "name": "r"}]}),
            "subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
        ),
        (
            json!({"subjects": [{"kind": "User"}]}),
            "subjects[0].name: Required value",
        ),
    ];
    for (patch, expected) in cases {
        has(&create(RBAC, "RoleBinding", &with(&rb, patch)), expected);
    }
    assert_eq!(
        update(
            RBAC,
            "RoleBinding",
            &rb,
            &with(&rb, json!({"roleRef": {"name": "writer"}}))
        ),
        [
            "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"writer\"}: cannot change roleRef"
        ]
    );
    let crb = json!({"metadata": {"name": "admins"},
                     "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "cluster-admin"},
                     "subjects": [{"kind": "ServiceAccount", "name": "builder"}]});
    assert_eq!(
        create(RBAC, "ClusterRoleBinding", &crb),
        ["subjects[0].namespace: Required value"]
    );
    has(
        &create(
            RBAC,
            "ClusterRoleBinding",
            &with(&crb, json!({"roleRef": {"kind": "Role"}})),
        ),
        "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
    );
}

#[test]
fn disruption_budgets_autoscalers_priorities_runtimes_leases() {
    let pdb = json!({"metadata": {"name": "web", "namespace": "d"},
                     "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}});
    ok("policy", "PodDisruptionBudget", &pdb);
    let both = with(&pdb, json!({"spec": {"maxUnavailable": 1}}));
    let lines = create("policy", "PodDisruptionBudget", &both);
    assert!(
        lines[0].starts_with("spec: Invalid value: ")
            && lines[0].ends_with(": minAvailable and maxUnavailable cannot be both set"),
        "{lines:#?}"
    );
    has(
        &create(
            "policy",
            "PodDisruptionBudget",
            &with(&pdb, json!({"spec": {"minAvailable": "150%"}})),
        ),
        "spec.minAvailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%",
    );
    let hpa = json!({"metadata": {"name": "web", "namespace": "d"},
                     "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                              "minReplicas": 1, "maxReplicas": 5,
                              "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}});
    ok("autoscaling", "HorizontalPodAutoscaler", &hpa);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"spec": {"minReplicas": 0}}),
            "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
        ),
        (
            json!({"spec": {"minReplicas": 6}}),
            "spec.maxReplicas: Invalid value: 5: must be greater than or equal to `minReplicas`",
        ),
        (
            json!({"spec": {"scaleTargetRef": {"name": null}}}),
            "spec.scaleTargetRef.name: Required value",
        ),
        (
            json!({"spec": {"metrics": [{"type": "Resource"}]}}),
            "spec.metrics[0].resource: Required value: must populate information for the given metric source",
        ),
        (
            json!({"spec": {"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]}}),
            "spec.metrics[0].resource.target.averageUtilization: Required value: must set either a target raw value or a target utilization",
        ),
    ];
    for (patch, expected) in cases {
        has(
            &create("autoscaling", "HorizontalPodAutoscaler", &with(&hpa, patch)),
            expected,
        );
    }
    let pc = json!({"metadata": {"name": "high"}, "value": 1000000, "preemptionPolicy": "PreemptLowerPriority"});
    ok("scheduling.k8s.io", "PriorityClass", &pc);
    assert_eq!(
        create(
            "scheduling.k8s.io",
            "PriorityClass",
            &with(&pc, json!({"value": 2000000000}))
        ),
        ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
    );
    assert_eq!(
        create(
            "scheduling.k8s.io",
            "PriorityClass",
            &with(&pc, json!({"metadata": {"name": "system-high"}}))
        ),
        [
            "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-high is not a known system priority class"
        ]
    );
    assert_eq!(
        update(
            "scheduling.k8s.io",
            "PriorityClass",
            &pc,
            &with(&pc, json!({"value": 5}))
        ),
        ["value: Forbidden: may not be changed in an update."]
    );
    let rc = json!({"metadata": {"name": "gvisor"}, "handler": "runsc"});
    ok("node.k8s.io", "RuntimeClass", &rc);
    assert_eq!(
        update(
            "node.k8s.io",
            "RuntimeClass",
            &rc,
            &with(&rc, json!({"handler": "kata"}))
        ),
        ["handler: Invalid value: \"kata\": field is immutable"]
    );
    let lease = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"},
                       "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
    ok("coordination.k8s.io", "Lease", &lease);
    assert_eq!(
        create(
            "coordination.k8s.io",
            "Lease",
            &with(&lease, json!({"spec": {"leaseDurationSeconds": 0}}))
        ),
        ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
}

#[test]
fn storage_kinds() {
    let sc = json!({"metadata": {"name": "fast"}, "provisioner": "example.com/fast",
                    "parameters": {"type": "ssd"}, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
    ok("storage.k8s.io", "StorageClass", &sc);
    has(
        &create(
            "storage.k8s.io",
            "StorageClass",
            &with(&sc, json!({"provisioner": null})),
        ),
        "provisioner: Required value",
    );
    has(
        &create(
            "storage.k8s.io",
            "StorageClass",
            &with(&sc, json!({"reclaimPolicy": "Recycle"})),
        ),
        "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
    );
    has(
        &create(
            "storage.k8s.io",
            "StorageClass",
            &with(&sc, json!({"volumeBindingMode": "Lazy"})),
        ),
        "volumeBindingMode: Unsupported value: \"Lazy\": supported values: \"Immediate\", \"WaitForFirstConsumer\"",
    );
    let changed = with(
        &sc,
        json!({"parameters": {"type": "hdd"}, "provisioner": "example.com/slow"}),
    );
    assert_eq!(
        update("storage.k8s.io", "StorageClass", &sc, &changed),
        [
            "parameters: Forbidden: updates to parameters are forbidden.",
            "provisioner: Forbidden: updates to provisioner are forbidden."
        ]
    );
    let driver = json!({"metadata": {"name": "csi.example.com"}, "spec": {"attachRequired": true}});
    ok("storage.k8s.io", "CSIDriver", &driver);
    assert_eq!(
        update(
            "storage.k8s.io",
            "CSIDriver",
            &driver,
            &with(&driver, json!({"spec": {"attachRequired": false}}))
        ),
        ["spec.attachedRequired: Invalid value: false: field is immutable"]
    );
    let node = json!({"metadata": {"name": "node-1"}, "spec": {"drivers": [{"name": "csi.example.com", "nodeID": "n1"}]}});
    ok("storage.k8s.io", "CSINode", &node);
    let va = json!({"metadata": {"name": "va-1"}, "spec": {"attacher": "csi.example.com", "nodeName": "node-1", "source": {"persistentVolumeName": "pv-1"}}});
    ok("storage.k8s.io", "VolumeAttachment", &va);
    assert_eq!(
        create(
            "storage.k8s.io",
            "VolumeAttachment",
            &with(
                &va,
                json!({"spec": {"source": {"persistentVolumeName": null}}})
            )
        ),
        [
            "spec.source: Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName"
        ]
    );
    let cap = json!({"metadata": {"name": "cap-1", "namespace": "d"}, "storageClassName": "fast", "capacity": "10Gi"});
    ok("storage.k8s.io", "CSIStorageCapacity", &cap);
}

#[test]
fn admission_configurations_and_policies() {
    let hook = json!({"name": "check.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                      "clientConfig": {"service": {"name": "hook", "namespace": "d", "path": "/validate"}},
                      "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]});
    let vwc = json!({"metadata": {"name": "check"}, "webhooks": [hook]});
    const AR: &str = "admissionregistration.k8s.io";
    ok(AR, "ValidatingWebhookConfiguration", &vwc);
    ok(AR, "MutatingWebhookConfiguration", &vwc);
    let bad =
        |patch: Value| json!({"metadata": {"name": "check"}, "webhooks": [with(&hook, patch)]});
    let cases: Vec<(Value, &str)> = vec![
        (
            bad(json!({"name": "check"})),
            "webhooks[0].name: Invalid value: \"check\": should be a domain with at least three segments separated by dots",
        ),
        (
            bad(json!({"sideEffects": null})),
            "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        ),
        (
            bad(json!({"sideEffects": "Some"})),
            "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
        ),
        (
            bad(json!({"admissionReviewVersions": []})),
            "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
        ),
        (
            bad(
                json!({"clientConfig": {"url": "https://hook.example.com/x", "service": {"name": "h", "namespace": "d"}}}),
            ),
            "webhooks[0].clientConfig: Required value: exactly one of url or service is required",
        ),
        (
            bad(json!({"clientConfig": {"service": null, "url": "http://hook.example.com"}})),
            "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
        ),
        (
            bad(json!({"timeoutSeconds": 60})),
            "webhooks[0].timeoutSeconds: Invalid value: 60: the timeout value must be between 1 and 30 seconds",
        ),
        (
            bad(
                json!({"rules": [{"operations": ["PATCH"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}),
            ),
            "webhooks[0].rules[0].operations[0]: Unsupported value: \"PATCH\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\"",
        ),
        (
            json!({"metadata": {"name": "check"}, "webhooks": [hook.clone(), hook.clone()]}),
            "webhooks[1].name: Duplicate value: \"check.example.com\"",
        ),
    ];
    for (object, expected) in cases {
        has(
            &create(AR, "ValidatingWebhookConfiguration", &object),
            expected,
        );
    }
    let policy = json!({"metadata": {"name": "replicas"},
                        "spec": {"matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]},
                                 "validations": [{"expression": "object.spec.replicas <= 5"}]}});
    ok(AR, "ValidatingAdmissionPolicy", &policy);
    assert_eq!(
        create(
            AR,
            "ValidatingAdmissionPolicy",
            &with(&policy, json!({"spec": {"validations": null}}))
        ),
        [
            "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
            "spec.auditAnnotations: Required value: validations or auditAnnotations must contain at least one item"
        ]
    );
    let binding = json!({"metadata": {"name": "replicas"}, "spec": {"policyName": "replicas", "validationActions": ["Deny"]}});
    ok(AR, "ValidatingAdmissionPolicyBinding", &binding);
    for (param_ref, expected) in [
        (
            json!({"name": "limits", "selector": {}, "parameterNotFoundAction": "Deny"}),
            vec![
                "spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
                "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive",
            ],
        ),
        (
            json!({"parameterNotFoundAction": "Skip"}),
            vec![
                "spec.paramRef: Required value: one of name or selector must be specified",
                "spec.paramRef.parameterNotFoundAction: Unsupported value: \"Skip\": supported values: \"Deny\", \"Allow\"",
            ],
        ),
        (
            json!({"name": "a/b"}),
            vec![
                "spec.paramRef.name: Invalid value: \"a/b\": may not contain '/'",
                "spec.paramRef.parameterNotFoundAction: Required value",
            ],
        ),
    ] {
        assert_eq!(
            create(
                AR,
                "ValidatingAdmissionPolicyBinding",
                &with(&binding, json!({"spec": {"paramRef": param_ref}}))
            ),
            expected
        );
    }
    assert_eq!(
        create(
            AR,
            "ValidatingAdmissionPolicyBinding",
            &with(&binding, json!({"spec": {"validationActions": ["Block"]}}))
        ),
        [
            "spec.validationActions[0]: Unsupported value: \"Block\": supported values: \"Audit\", \"Deny\", \"Warn\""
        ]
    );
}

#[test]
fn aggregation_certificates_flowcontrol_discovery() {
    let api = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
                     "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                              "service": {"name": "metrics-server", "namespace": "kube-system"}}});
    ok("apiregistration.k8s.io", "APIService", &api);
    assert_eq!(
        create(
            "apiregistration.k8s.io",
            "APIService",
            &with(&api, json!({"metadata": {"name": "metrics"}}))
        ),
        [
            "metadata.name: Invalid value: \"metrics\": must be `spec.version+\".\"+spec.group`: \"v1beta1.metrics.k8s.io\""
        ]
    );
    let pem = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlIcU1JR1NBZ0VBTURBeEZUQVRCZ05WQkFvTURITjVjM1JsYlRwdWIyUmxjekVYTUJVR0ExVUVBd3dPYzNsegpkR1Z0T201dlpHVTZiakV3V1RBVEJnY3Foa2pPUFFJQkJnZ3Foa2pPUFFNQkJ3TkNBQVJ5aEZwMDVmSE9CMlFLCjg0WlBYV0NTSVBKVFB5YUFRNnNiVUlTRFpEU2I3bXpQSlNDZVgwdHRsMTQ4R1Mrcmdvc1ZtZzRIUGFxTGgzeWoKUEhibDdqUW5vQUF3Q2dZSUtvWkl6ajBFQXdJRFJ3QXdSQUlnVXJITmo1VzhGZkZuNW1MOHFqS0RYOHg3UnNwOQo1K2ZDdDZacnNuRk42MDRDSUZYT25uQlZQR1FJUHV5cm51bG1ONWRvL3JVcmhEVXpiemNnSTlyZm9PdmkKLS0tLS1FTkQgQ0VSVElGSUNBVEUgUkVRVUVTVC0tLS0tCg==";
    let csr = json!({"metadata": {"name": "alice"},
                     "spec": {"request": pem, "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]}});
    ok("certificates.k8s.io", "CertificateSigningRequest", &csr);
    assert_eq!(
        create(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &with(&csr, json!({"spec": {"signerName": "example"}}))
        ),
        [
            "spec.signerName: Invalid value: \"example\": must be a fully qualified domain and path of the form 'example.com/signer-name'"
        ]
    );
    let empty_pem = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KLS0tLS1FTkQgQ0VSVElGSUNBVEUgUkVRVUVTVC0tLS0tCg==";
    let errors = create(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        &with(&csr, json!({"spec": {"request": empty_pem}})),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.request: Invalid value: ") && errors[0].contains("x509: "),
        "{errors:?}"
    );
    let fs = json!({"metadata": {"name": "fs"},
                    "spec": {"priorityLevelConfiguration": {"name": "global-default"}, "matchingPrecedence": 1000,
                             "distinguisherMethod": {"type": "ByUser"}}});
    ok("flowcontrol.apiserver.k8s.io", "FlowSchema", &fs);
    let plc = json!({"metadata": {"name": "p"}, "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 10}}});
    ok(
        "flowcontrol.apiserver.k8s.io",
        "PriorityLevelConfiguration",
        &plc,
    );
    let slice = json!({"metadata": {"name": "web-abc", "namespace": "d"}, "addressType": "IPv4",
                       "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}],
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    ok("discovery.k8s.io", "EndpointSlice", &slice);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"addressType": "IPv5"}),
            "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
        ),
        (
            json!({"endpoints": [{"addresses": []}]}),
            "endpoints[0].addresses: Required value: must contain at least 1 address",
        ),
        (
            json!({"endpoints": [{"addresses": ["fe80::1"]}]}),
            "endpoints[0].addresses[0]: Invalid value: \"fe80::1\": must be a valid IPv4 address",
        ),
    ];
    for (patch, expected) in cases {
        has(
            &create("discovery.k8s.io", "EndpointSlice", &with(&slice, patch)),
            expected,
        );
    }
    assert_eq!(
        update(
            "discovery.k8s.io",
            "EndpointSlice",
            &slice,
            &with(
                &slice,
                json!({"addressType": "IPv6", "endpoints": [{"addresses": ["2001:db8::5"]}]})
            )
        ),
        ["addressType: Invalid value: \"IPv6\": field is immutable"]
    );
}
