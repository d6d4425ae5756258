//! Core (v1) kinds.

use serde_json::{Value, json};

use super::{create, has, update, with};

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx:1.27",
                "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "MODE", "value": "prod"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                              "requests": {"cpu": "250m", "memory": "64Mi"}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.txt"}]}}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}
        }
    })
}

#[test]
fn a_valid_pod_passes() {
    assert_eq!(create("", "Pod", &pod()), Vec::<String>::new());
}

#[test]
fn pod_mistakes_give_kubernetes_messages() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"spec": {"containers": []}}),
            "spec.containers: Required value",
        ),
        (
            json!({"spec": {"containers": [{"name": "a"}]}}),
            "spec.containers[0].image: Required value",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}}),
            "spec.containers[1].name: Duplicate value: \"a\"",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]}}),
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "HTTP"}]}]}}),
            "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "Http"}]}]}}),
            "spec.containers[0].ports[0].name: Invalid value: \"Http\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "A=B"}]}]}}),
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "500m"}, "requests": {"cpu": "1"}}}]}}),
            "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "resources": {"limits": {"memory": "lots"}}}]}}),
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}}]}}),
            "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}]}}),
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "readinessProbe": {"periodSeconds": 3}}]}}),
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": -1}}]}}),
            "spec.containers[0].startupProbe.failureThreshold: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            json!({"spec": {"restartPolicy": "Sometimes"}}),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ),
        (
            json!({"spec": {"dnsPolicy": "Cluster"}}),
            "spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
        ),
        (
            json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}]}}),
            "spec.volumes[1].name: Duplicate value: \"data\"",
        ),
        (
            json!({"spec": {"volumes": [{"name": "data"}]}}),
            "spec.volumes[0]: Required value: must specify a volume type",
        ),
        (
            json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}, "configMap": {"name": "c"}}]}}),
            "spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type",
        ),
        (
            json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c", "defaultMode": 1000}}]}}),
            "spec.volumes[1].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
        ),
        (
            json!({"spec": {"initContainers": [{"name": "init", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}}]}}),
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
        ),
        (
            json!({"spec": {"initContainers": [{"name": "web", "image": "x"}]}}),
            "spec.initContainers[0].name: Duplicate value: \"web\"",
        ),
        (
            json!({"spec": {"tolerations": [{"operator": "Equal", "value": "x"}]}}),
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ),
        (
            json!({"spec": {"nodeSelector": {"disk": "fast ssd"}}}),
            "spec.nodeSelector: Invalid value: \"fast ssd\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": " x"}]}}),
            "spec.containers[0].image: Invalid value: \" x\": must not have leading or trailing whitespace",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "E", "valueFrom": {"fieldRef": {"fieldPath": "spec.restartPolicy"}}}]}]}}),
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.restartPolicy\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "E", "valueFrom": {}}]}]}}),
            "spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ),
    ];
    for (patch, expected) in cases {
        let mut object = with(&pod(), patch.clone());
        // Lists replace wholesale under a merge patch; keep the data volume for mounts.
        if patch["spec"].get("volumes").is_none() {
            object["spec"]["volumes"] = pod()["spec"]["volumes"].clone();
        }
        let lines = create("", "Pod", &object);
        has(&lines, expected);
    }
}

/// Requests and limits compare by value whatever the notation, after the whitespace
/// Kubernetes' decoding drops; malformed ones get the parser's message.
#[test]
fn resource_quantities_compare_by_value() {
    let gpu = "example.com/gpu";
    for (request, limit, expected) in [
        ("2", "2e0", vec![]),
        (" 2 ", "2000m", vec![]),
        (
            "3",
            "2e0",
            vec![
                "spec.containers[0].resources.requests: Invalid value: \"3\": must be equal to \
                 example.com/gpu limit of 2",
            ],
        ),
        (
            "2",
            "--1",
            vec![
                "spec.containers[0].resources.limits[example.com/gpu]: Invalid value: \"--1\": \
                 unable to parse quantity's suffix",
            ],
        ),
    ] {
        let object = with(
            &pod(),
            json!({"spec": {"containers": [{"name": "web", "image": "x", "resources": {
                "requests": {gpu: request}, "limits": {gpu: limit}}}]}}),
        );
        assert_eq!(create("", "Pod", &object), expected, "{request} / {limit}");
    }
}

#[test]
fn container_names_are_dns_labels() {
    let object = with(
        &pod(),
        json!({"spec": {"containers": [{"name": "Web_1", "image": "x"}]}}),
    );
    assert_eq!(
        create("", "Pod", &object),
        [format!(
            "spec.containers[0].name: Invalid value: \"Web_1\": {LABEL_MSG}"
        )]
    );
}

#[test]
fn pod_mounts_must_name_a_volume() {
    let object = with(
        &pod(),
        json!({"spec": {"volumes": [{"name": "other", "emptyDir": {}}]}}),
    );
    assert_eq!(
        create("", "Pod", &object),
        ["spec.containers[0].volumeMounts[0].name: Not found: \"data\""]
    );
}

#[test]
fn pod_updates_change_only_images_and_deadlines() {
    let old = with(
        &pod(),
        json!({"metadata": {"uid": "u1", "resourceVersion": "1"}}),
    );
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    assert_eq!(update("", "Pod", &old, &new), Vec::<String>::new());
    let changed = with(&old, json!({"spec": {"restartPolicy": "Never"}}));
    let lines = update("", "Pod", &old, &changed);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with(
            "spec: Forbidden: pod updates may not change fields other than \
             `spec.containers[*].image`,`spec.initContainers[*].image`,\
             `spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing \
             tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it \
             was previously negative)\n"
        ),
        "{lines:#?}"
    );
    let mut fewer = old.clone();
    fewer["spec"]["initContainers"] = json!([]);
    has(
        &update("", "Pod", &old, &fewer),
        "spec.initContainers: Forbidden: pod updates may not add or remove containers",
    );
}

fn service() -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

#[test]
fn services() {
    assert_eq!(create("", "Service", &service()), Vec::<String>::new());
    let headless =
        json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {"clusterIP": "None"}});
    assert_eq!(create("", "Service", &headless), Vec::<String>::new());
    let external = json!({"metadata": {"name": "db", "namespace": "d"},
                          "spec": {"type": "ExternalName", "externalName": "db.example.com."}});
    assert_eq!(create("", "Service", &external), Vec::<String>::new());

    let cases: Vec<(Value, &str)> = vec![
        (json!({"spec": {"ports": []}}), "spec.ports: Required value"),
        (
            json!({"spec": {"ports": [{"port": 0}]}}),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}}),
            "spec.ports[0].name: Required value",
        ),
        (
            json!({"spec": {"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}}),
            "spec.ports[1].name: Duplicate value: \"a\"",
        ),
        (
            json!({"spec": {"ports": [{"port": 80, "targetPort": "HTTP"}]}}),
            "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ),
        (
            json!({"spec": {"type": "Foo"}}),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ),
        (
            json!({"spec": {"sessionAffinity": "Sticky"}}),
            "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
        ),
        (
            json!({"spec": {"clusterIP": "abc"}}),
            "spec.clusterIPs[0]: Invalid value: \"abc\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ),
        (
            json!({"spec": {"type": "ExternalName", "ports": null}}),
            "spec.externalName: Required value",
        ),
        (
            json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        ),
        (
            json!({"metadata": {"name": "Web"}}),
            "metadata.name: Invalid value: \"Web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
        (
            json!({"spec": {"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}}),
            "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
        ),
    ];
    for (patch, expected) in cases {
        has(&create("", "Service", &with(&service(), patch)), expected);
    }
}

#[test]
fn service_cluster_ips_are_immutable() {
    let old = with(
        &service(),
        json!({"spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}}),
    );
    let moved = with(
        &old,
        json!({"spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"]}}),
    );
    has(
        &update("", "Service", &old, &moved),
        "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.20\"}: may not change once set",
    );
    let omitted = with(
        &old,
        json!({"spec": {"clusterIP": null, "clusterIPs": null}}),
    );
    assert_eq!(update("", "Service", &old, &omitted), Vec::<String>::new());
}

#[test]
fn config_maps_and_secrets() {
    let cm = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"app.conf": "x"}});
    assert_eq!(create("", "ConfigMap", &cm), Vec::<String>::new());
    assert_eq!(
        create(
            "",
            "ConfigMap",
            &with(&cm, json!({"data": {"bad key": "x"}}))
        ),
        [
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of \
          alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or \
          'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ]
    );
    let big = with(&cm, json!({"data": {"a": "x".repeat(1024 * 1024 + 1)}}));
    assert_eq!(
        create("", "ConfigMap", &big),
        ["[]: Too long: may not be more than 1048576 bytes"]
    );
    let frozen = with(&cm, json!({"immutable": true}));
    assert_eq!(
        update(
            "",
            "ConfigMap",
            &frozen,
            &with(&frozen, json!({"data": {"app.conf": "y"}}))
        ),
        ["data: Forbidden: field is immutable when `immutable` is set"]
    );

    let tls = json!({"metadata": {"name": "t", "namespace": "d"}, "type": "kubernetes.io/tls",
                     "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}});
    assert_eq!(create("", "Secret", &tls), Vec::<String>::new());
    assert_eq!(
        create(
            "",
            "Secret",
            &with(&tls, json!({"data": {"tls.key": null}}))
        ),
        ["data[tls.key]: Required value"]
    );
    let docker = json!({"metadata": {"name": "r", "namespace": "d"},
                        "type": "kubernetes.io/dockerconfigjson", "data": {}});
    assert_eq!(
        create("", "Secret", &docker),
        ["data[.dockerconfigjson]: Required value"]
    );
    let string_data = with(
        &docker,
        json!({"stringData": {".dockerconfigjson": "{\"auths\":{}}"}}),
    );
    assert_eq!(create("", "Secret", &string_data), Vec::<String>::new());
    let bad_json = with(
        &docker,
        json!({"stringData": {".dockerconfigjson": "nope"}}),
    );
    assert_eq!(
        create("", "Secret", &bad_json),
        [
            "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid \
          character 'n' looking for beginning of value"
        ]
    );
    let opaque = with(&tls, json!({"type": "Opaque"}));
    assert_eq!(
        update("", "Secret", &tls, &opaque),
        ["type: Invalid value: \"Opaque\": field is immutable"]
    );
}

#[test]
fn namespaces_nodes_accounts_and_events() {
    let ns = json!({"metadata": {"name": "team-a"}});
    assert_eq!(create("", "Namespace", &ns), Vec::<String>::new());
    assert_eq!(
        create("", "Namespace", &json!({"metadata": {"name": "team.a"}})),
        ["metadata.name: Invalid value: \"team.a\": must not contain dots"]
    );
    let node = json!({"metadata": {"name": "node-1"},
                      "spec": {"podCIDRs": ["10.244.1.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]}});
    assert_eq!(create("", "Node", &node), Vec::<String>::new());
    assert_eq!(
        create(
            "",
            "Node",
            &with(
                &node,
                json!({"spec": {"taints": [{"key": "k", "effect": "Never"}]}})
            )
        ),
        [
            "metadata.taints[0].effect: Unsupported value: \"Never\": supported values: \
          \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
        ]
    );
    assert_eq!(
        update(
            "",
            "Node",
            &node,
            &with(&node, json!({"spec": {"podCIDRs": ["10.244.2.0/24"]}}))
        ),
        ["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]
    );
    let sa = json!({"metadata": {"name": "builder", "namespace": "d"}});
    assert_eq!(create("", "ServiceAccount", &sa), Vec::<String>::new());
    let ev = json!({"metadata": {"name": "e.1", "namespace": "d"},
                    "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d"},
                    "reason": "Started", "message": "ok"});
    assert_eq!(create("", "Event", &ev), Vec::<String>::new());
    assert_eq!(
        create(
            "",
            "Event",
            &with(&ev, json!({"involvedObject": {"namespace": "other"}}))
        ),
        ["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
    );
    let new_style = with(
        &ev,
        json!({"eventTime": "2025-01-01T00:00:00.000000Z", "reportingComponent": "kubelet",
                                     "reportingInstance": "node-1", "action": "Started"}),
    );
    assert_eq!(create("", "Event", &new_style), Vec::<String>::new());
    // Kubernetes also runs the qualified-name check on the empty value.
    has(
        &create(
            "",
            "Event",
            &with(&new_style, json!({"reportingComponent": null})),
        ),
        "source: Required value",
    );
    let ev2 = json!({"metadata": {"name": "e.2", "namespace": "d"}, "eventTime": "2025-01-01T00:00:00.000000Z",
                     "reportingController": "example.com/ctl", "reportingInstance": "i", "action": "Sync",
                     "reason": "Synced", "type": "Normal", "regarding": {"kind": "Pod", "name": "p"}});
    assert_eq!(create("events.k8s.io", "Event", &ev2), Vec::<String>::new());
    has(
        &create(
            "events.k8s.io",
            "Event",
            &with(&ev2, json!({"type": "Info", "action": null})),
        ),
        "type: Invalid value: \"\": has invalid value: Info",
    );
}

#[test]
fn volumes_and_claims() {
    let pvc = json!({"metadata": {"name": "data", "namespace": "d"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    assert_eq!(
        create("", "PersistentVolumeClaim", &pvc),
        Vec::<String>::new()
    );
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"spec": {"accessModes": []}}),
            "spec.accessModes: Required value: at least 1 access mode is required",
        ),
        (
            json!({"spec": {"accessModes": ["ReadWriteAlways"]}}),
            "spec.accessModes: Unsupported value: \"ReadWriteAlways\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
        ),
        (
            json!({"spec": {"resources": {"requests": null}}}),
            "spec.resources[storage]: Required value",
        ),
        (
            json!({"spec": {"resources": {"requests": {"storage": "0"}}}}),
            "spec.resources[storage]: Invalid value: \"0\": must be greater than zero",
        ),
    ];
    for (patch, expected) in cases {
        has(
            &create("", "PersistentVolumeClaim", &with(&pvc, patch)),
            expected,
        );
    }
    let grown = with(
        &pvc,
        json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
    );
    let lines = update("", "PersistentVolumeClaim", &pvc, &grown);
    assert!(lines.len() == 1 && lines[0].starts_with("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n"), "{lines:#?}");
    let bound_old = with(&pvc, json!({"status": {"phase": "Bound"}}));
    let bound_new = with(
        &grown,
        json!({"status": {"phase": "Bound"}, "spec": {"volumeName": "pv-1"}}),
    );
    assert_eq!(
        update("", "PersistentVolumeClaim", &bound_old, &bound_new),
        Vec::<String>::new()
    );

    let pv = json!({"metadata": {"name": "pv-1"},
                    "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                             "hostPath": {"path": "/mnt/data"}}});
    assert_eq!(create("", "PersistentVolume", &pv), Vec::<String>::new());
    has(
        &create(
            "",
            "PersistentVolume",
            &with(&pv, json!({"spec": {"hostPath": null}})),
        ),
        "spec: Required value: must specify a volume type",
    );
    has(
        &create(
            "",
            "PersistentVolume",
            &with(&pv, json!({"spec": {"capacity": null}})),
        ),
        "spec.capacity: Required value",
    );
}

#[test]
fn limit_ranges_quotas_templates_controllers_endpoints() {
    let lr = json!({"metadata": {"name": "l", "namespace": "d"},
                    "spec": {"limits": [{"type": "Container", "min": {"cpu": "1"}, "max": {"cpu": "500m"}}]}});
    assert_eq!(
        create("", "LimitRange", &lr),
        [
            "spec.limits[0].min[cpu]: Invalid value: \"1\": min value 1 is greater than max value 500m"
        ]
    );
    let rq = json!({"metadata": {"name": "q", "namespace": "d"},
                    "spec": {"hard": {"pods": "10", "requests.cpu": "4", "count/deployments.apps": "5"}}});
    assert_eq!(create("", "ResourceQuota", &rq), Vec::<String>::new());
    has(
        &create(
            "",
            "ResourceQuota",
            &with(&rq, json!({"spec": {"hard": {"pods": "1.5"}}})),
        ),
        "spec.hard[pods]: Invalid value: \"1500m\": must be an integer",
    );
    let template = json!({"metadata": {"name": "t", "namespace": "d"},
                          "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod()["spec"].clone()}});
    assert_eq!(create("", "PodTemplate", &template), Vec::<String>::new());
    let rc = json!({"metadata": {"name": "rc", "namespace": "d"},
                    "spec": {"replicas": 1, "selector": {"app": "web"},
                             "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod()["spec"].clone()}}});
    assert_eq!(
        create("", "ReplicationController", &rc),
        Vec::<String>::new()
    );
    has(
        &create(
            "",
            "ReplicationController",
            &with(&rc, json!({"spec": {"selector": {"app": "db"}}})),
        ),
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
    );
    let ep = json!({"metadata": {"name": "web", "namespace": "d"},
                    "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 80}]}]});
    assert_eq!(create("", "Endpoints", &ep), Vec::<String>::new());
    has(
        &create(
            "",
            "Endpoints",
            &with(
                &ep,
                json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}]}]}),
            ),
        ),
        "subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
    );
}
