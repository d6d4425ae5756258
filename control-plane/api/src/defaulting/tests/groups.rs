//! The API groups besides core, apps and batch.

use serde_json::{Value, json};

use super::{Case, run};

fn case(
    name: &'static str,
    group: &'static str,
    kind: &'static str,
    input: Value,
    expected: Value,
) -> Case {
    Case {
        name,
        group,
        kind,
        input,
        expected,
    }
}

/// A kind without defaults: the object is stored as sent.
fn unchanged(group: &'static str, kind: &'static str, object: Value) -> Case {
    case("no defaults", group, kind, object.clone(), object)
}

#[test]
fn autoscaling() {
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
    run(vec![
        case(
            "HPA v2: one replica at least, 80% CPU, no behavior added",
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v2", "spec": {"scaleTargetRef": target, "maxReplicas": 5}}),
            json!({"apiVersion": "autoscaling/v2", "spec": {"scaleTargetRef": target, "maxReplicas": 5,
                "minReplicas": 1, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
        ),
        case(
            "HPA v2: a behavior gets both directions filled around what the client set",
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v2", "spec": {"scaleTargetRef": target, "maxReplicas": 5, "minReplicas": 2,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
            json!({"apiVersion": "autoscaling/v2", "spec": {"scaleTargetRef": target, "maxReplicas": 5, "minReplicas": 2,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}],
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                        {"type": "Percent", "value": 100, "periodSeconds": 15}]},
                    "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15}]}}}}),
        ),
        case(
            "HPA v1: only minReplicas",
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v1", "spec": {"scaleTargetRef": target, "maxReplicas": 5}}),
            json!({"apiVersion": "autoscaling/v1", "spec": {"scaleTargetRef": target, "maxReplicas": 5, "minReplicas": 1}}),
        ),
        unchanged(
            "policy",
            "PodDisruptionBudget",
            json!({"spec": {"minAvailable": 1, "selector": {}}}),
        ),
    ]);
}

#[test]
fn rbac() {
    run(vec![
        case(
            "RoleBinding: roleRef and user/group subjects in the RBAC group, service accounts in core",
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({"roleRef": {"kind": "Role", "name": "reader"}, "subjects": [
                {"kind": "User", "name": "jane"}, {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "name": "default", "namespace": "ns"}]}),
            json!({"roleRef": {"kind": "Role", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"}, "subjects": [
                {"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "ServiceAccount", "name": "default", "namespace": "ns"}]}),
        ),
        case(
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"kind": "User", "name": "jane", "apiGroup": "example.com"}]}),
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"kind": "User", "name": "jane", "apiGroup": "example.com"}]}),
        ),
        unchanged(
            "rbac.authorization.k8s.io",
            "Role",
            json!({"rules": [{"verbs": ["get"], "resources": ["pods"]}]}),
        ),
        unchanged(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"rules": []}),
        ),
    ]);
}

#[test]
fn networking() {
    let peer = json!([{"podSelector": {}}]);
    run(vec![
        case(
            "NetworkPolicy without rules: Ingress",
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}}}),
            json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        ),
        case(
            "NetworkPolicy with egress rules: Ingress and Egress; ports TCP",
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "ingress": [{"from": peer, "ports": [{"port": 80}]}],
                            "egress": [{"to": peer, "ports": [{"port": 53, "protocol": "UDP"}, {"port": 443}]}]}}),
            json!({"spec": {"podSelector": {}, "ingress": [{"from": peer, "ports": [{"port": 80, "protocol": "TCP"}]}],
                            "egress": [{"to": peer, "ports": [{"port": 53, "protocol": "UDP"}, {"port": 443, "protocol": "TCP"}]}],
                            "policyTypes": ["Ingress", "Egress"]}}),
        ),
        case(
            "NetworkPolicy with an empty egress list: Ingress only",
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "egress": []}}),
            json!({"spec": {"podSelector": {}, "egress": [], "policyTypes": ["Ingress"]}}),
        ),
        case(
            "NetworkPolicy: the client's policy types are kept",
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}}),
            json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}}),
        ),
        case(
            "IngressClass parameters are cluster-scoped",
            "networking.k8s.io",
            "IngressClass",
            json!({"spec": {"controller": "example.com/ingress", "parameters": {"kind": "Params", "name": "p"}}}),
            json!({"spec": {"controller": "example.com/ingress", "parameters": {"kind": "Params", "name": "p", "scope": "Cluster"}}}),
        ),
        unchanged(
            "networking.k8s.io",
            "IngressClass",
            json!({"spec": {"controller": "example.com/ingress"}}),
        ),
        unchanged(
            "networking.k8s.io",
            "Ingress",
            json!({"spec": {"rules": [{"http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
        unchanged(
            "networking.k8s.io",
            "IPAddress",
            json!({"spec": {"parentRef": {"resource": "services", "name": "s"}}}),
        ),
        unchanged(
            "networking.k8s.io",
            "ServiceCIDR",
            json!({"spec": {"cidrs": ["10.96.0.0/16"]}}),
        ),
        case(
            "EndpointSlice ports: name \"\" and TCP",
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}],
                   "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}],
                   "ports": [{"port": 80, "name": "", "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
    ]);
}

#[test]
fn storage() {
    run(vec![
        case(
            "StorageClass",
            "storage.k8s.io",
            "StorageClass",
            json!({"provisioner": "example.com/csi"}),
            json!({"provisioner": "example.com/csi", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
        ),
        case(
            "CSIDriver",
            "storage.k8s.io",
            "CSIDriver",
            json!({"metadata": {"name": "example.com"}, "spec": {"podInfoOnMount": true}}),
            json!({"metadata": {"name": "example.com"}, "spec": {"attachRequired": true, "podInfoOnMount": true,
                "storageCapacity": false, "fsGroupPolicy": "ReadWriteOnceWithFSType",
                "volumeLifecycleModes": ["Persistent"], "requiresRepublish": false, "seLinuxMount": false}}),
        ),
        case(
            "VolumeAttachment: an inline volume's source",
            "storage.k8s.io",
            "VolumeAttachment",
            json!({"spec": {"attacher": "a", "nodeName": "n", "source": {"inlineVolumeSpec": {"hostPath": {"path": "/x"}}}}}),
            json!({"spec": {"attacher": "a", "nodeName": "n", "source": {"inlineVolumeSpec": {"hostPath": {"path": "/x", "type": ""}}}}}),
        ),
        unchanged(
            "storage.k8s.io",
            "CSINode",
            json!({"spec": {"drivers": [{"name": "d", "nodeID": "n"}]}}),
        ),
        unchanged(
            "storage.k8s.io",
            "CSIStorageCapacity",
            json!({"storageClassName": "fast", "capacity": "1Gi"}),
        ),
    ]);
}

#[test]
fn admission() {
    let group = "admissionregistration.k8s.io";
    let rule = json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]});
    let rule_defaulted = json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"});
    let webhook = json!({"name": "w.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"namespace": "ns", "name": "svc"}}, "rules": [rule]});
    let webhook_defaulted = json!({"name": "w.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"namespace": "ns", "name": "svc", "port": 443}}, "rules": [rule_defaulted],
        "failurePolicy": "Fail", "matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {},
        "timeoutSeconds": 10});
    let mut mutating_defaulted = webhook_defaulted.clone();
    mutating_defaulted["reinvocationPolicy"] = json!("Never");
    let constraints = json!({"resourceRules": [rule], "excludeResourceRules": [rule]});
    let constraints_defaulted = json!({"resourceRules": [rule_defaulted], "excludeResourceRules": [rule_defaulted],
        "matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {}});
    run(vec![
        case(
            "ValidatingWebhookConfiguration",
            group,
            "ValidatingWebhookConfiguration",
            json!({"webhooks": [webhook]}),
            json!({"webhooks": [webhook_defaulted]}),
        ),
        case(
            "MutatingWebhookConfiguration",
            group,
            "MutatingWebhookConfiguration",
            json!({"webhooks": [webhook]}),
            json!({"webhooks": [mutating_defaulted]}),
        ),
        case(
            "ValidatingAdmissionPolicy",
            group,
            "ValidatingAdmissionPolicy",
            json!({"spec": {"matchConstraints": constraints, "validations": [{"expression": "true"}]}}),
            json!({"spec": {"matchConstraints": constraints_defaulted, "validations": [{"expression": "true"}],
                            "failurePolicy": "Fail"}}),
        ),
        case(
            "ValidatingAdmissionPolicyBinding: match resources only when given",
            group,
            "ValidatingAdmissionPolicyBinding",
            json!({"spec": {"policyName": "p", "validationActions": ["Deny"], "matchResources": constraints}}),
            json!({"spec": {"policyName": "p", "validationActions": ["Deny"], "matchResources": constraints_defaulted}}),
        ),
        unchanged(
            group,
            "ValidatingAdmissionPolicyBinding",
            json!({"spec": {"policyName": "p", "validationActions": ["Deny"]}}),
        ),
        case(
            "APIService: service port 443",
            "apiregistration.k8s.io",
            "APIService",
            json!({"spec": {"group": "metrics.k8s.io", "version": "v1beta1", "service": {"namespace": "kube-system", "name": "metrics"}}}),
            json!({"spec": {"group": "metrics.k8s.io", "version": "v1beta1", "service": {"namespace": "kube-system", "name": "metrics", "port": 443}}}),
        ),
        unchanged(
            "apiregistration.k8s.io",
            "APIService",
            json!({"spec": {"group": "", "version": "v1", "groupPriorityMinimum": 18000}}),
        ),
    ]);
}

#[test]
fn scheduling_flowcontrol_and_the_rest() {
    let group = "flowcontrol.apiserver.k8s.io";
    run(vec![
        case(
            "PriorityClass",
            "scheduling.k8s.io",
            "PriorityClass",
            json!({"value": 1000}),
            json!({"value": 1000, "preemptionPolicy": "PreemptLowerPriority"}),
        ),
        case(
            "FlowSchema: matching precedence 1000",
            group,
            "FlowSchema",
            json!({"spec": {"priorityLevelConfiguration": {"name": "workload-low"}}}),
            json!({"spec": {"priorityLevelConfiguration": {"name": "workload-low"}, "matchingPrecedence": 1000}}),
        ),
        case(
            "PriorityLevelConfiguration: limited with queuing",
            group,
            "PriorityLevelConfiguration",
            json!({"spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue", "queuing": {"queues": 128}}}}}),
            json!({"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 30, "lendablePercent": 0,
                "limitResponse": {"type": "Queue", "queuing": {"queues": 128, "handSize": 8, "queueLengthLimit": 50}}}}}),
        ),
        case(
            "PriorityLevelConfiguration: zero shares of a limited level are kept; exempt",
            group,
            "PriorityLevelConfiguration",
            json!({"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 0, "limitResponse": {"type": "Reject"}},
                            "exempt": {}}}),
            json!({"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 0, "lendablePercent": 0,
                "limitResponse": {"type": "Reject"}}, "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}}}),
        ),
        unchanged("node.k8s.io", "RuntimeClass", json!({"handler": "runc"})),
        unchanged(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            json!({"spec": {"request": "", "signerName": "kubernetes.io/kube-apiserver-client"}}),
        ),
        unchanged(
            "events.k8s.io",
            "Event",
            json!({"reason": "Started", "regarding": {"kind": "Pod"}}),
        ),
        unchanged(
            "coordination.k8s.io",
            "Lease",
            json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
        ),
    ]);
}
