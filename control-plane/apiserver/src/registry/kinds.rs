//! Every served kind, one entry each, in kube-apiserver's discovery order within a group.
//! Short names, categories, subresources and field selectors are kube-apiserver 1.33's.

use k8s_openapi::{
    api::{
        admissionregistration::v1 as admission, apps::v1 as apps,
        autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling, batch::v1 as batch,
        certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, events::v1 as events, flowcontrol::v1 as flowcontrol,
        networking::v1 as networking, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
        scheduling::v1 as scheduling, storage::v1 as storage,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions,
    kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration,
};

use super::{
    CSR_SUBRESOURCES, Conversion, NAMESPACE_SUBRESOURCES, NODE_SUBRESOURCES, POD_SUBRESOURCES,
    Resource, SERVICE_ACCOUNT_SUBRESOURCES, SERVICE_SUBRESOURCES, typed::typed,
};

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every served resource.
pub static RESOURCES: &[Resource] = &[
    // --- core/v1 ---
    Resource::new(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        typed::<core::Namespace>,
    )
    .cluster()
    .short(&["ns"])
    .spec_status()
    .subresources(NAMESPACE_SUBRESOURCES)
    .fields(&["status.phase"]),
    Resource::new("", "Pod", "pods", "pod", typed::<core::Pod>)
        .short(&["po"])
        .in_all()
        .spec_status()
        .subresources(POD_SUBRESOURCES)
        .fields(POD_FIELDS),
    Resource::new("", "Service", "services", "service", typed::<core::Service>)
        .short(&["svc"])
        .in_all()
        .spec_status()
        .subresources(SERVICE_SUBRESOURCES)
        .fields(&["spec.clusterIP", "spec.type"]),
    Resource::new(
        "",
        "Endpoints",
        "endpoints",
        "endpoints",
        typed::<core::Endpoints>,
    )
    .short(&["ep"]),
    Resource::new("", "Node", "nodes", "node", typed::<core::Node>)
        .cluster()
        .short(&["no"])
        .spec_status()
        .subresources(NODE_SUBRESOURCES)
        .fields(&["spec.unschedulable"]),
    Resource::new("", "Event", "events", "event", typed::<core::Event>)
        .short(&["ev"])
        .fields(EVENT_FIELDS),
    Resource::new(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        typed::<core::ConfigMap>,
    )
    .short(&["cm"]),
    Resource::new("", "Secret", "secrets", "secret", typed::<core::Secret>).fields(&["type"]),
    Resource::new(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        typed::<core::ServiceAccount>,
    )
    .short(&["sa"])
    .subresources(SERVICE_ACCOUNT_SUBRESOURCES),
    Resource::new(
        "",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        typed::<core::ReplicationController>,
    )
    .short(&["rc"])
    .in_all()
    .spec_status()
    .scale()
    .fields(&["status.replicas"]),
    Resource::new(
        "",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        typed::<core::PersistentVolume>,
    )
    .cluster()
    .short(&["pv"])
    .spec_status(),
    Resource::new(
        "",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        typed::<core::PersistentVolumeClaim>,
    )
    .short(&["pvc"])
    .spec_status(),
    Resource::new(
        "",
        "PodTemplate",
        "podtemplates",
        "podtemplate",
        typed::<core::PodTemplate>,
    ),
    Resource::new(
        "",
        "LimitRange",
        "limitranges",
        "limitrange",
        typed::<core::LimitRange>,
    )
    .short(&["limits"])
    .spec(),
    Resource::new(
        "",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        typed::<core::ResourceQuota>,
    )
    .short(&["quota"])
    .spec_status(),
    // --- apiregistration.k8s.io/v1 ---
    Resource::new(
        "apiregistration.k8s.io",
        "APIService",
        "apiservices",
        "apiservice",
        typed::<apiregistration::APIService>,
    )
    .cluster()
    .api_extension()
    .spec_status(),
    // --- apps/v1 ---
    Resource::new(
        "apps",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        typed::<apps::ControllerRevision>,
    ),
    Resource::new(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        typed::<apps::DaemonSet>,
    )
    .short(&["ds"])
    .in_all()
    .spec_status(),
    Resource::new(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        typed::<apps::Deployment>,
    )
    .short(&["deploy"])
    .in_all()
    .spec_status()
    .scale(),
    Resource::new(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        typed::<apps::ReplicaSet>,
    )
    .short(&["rs"])
    .in_all()
    .spec_status()
    .scale()
    .fields(&["status.replicas"]),
    Resource::new(
        "apps",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        typed::<apps::StatefulSet>,
    )
    .short(&["sts"])
    .in_all()
    .spec_status()
    .scale(),
    // --- events.k8s.io/v1: the core Events, seen in their newer form ---
    Resource::new(
        "events.k8s.io",
        "Event",
        "events",
        "event",
        typed::<events::Event>,
    )
    .short(&["ev"])
    .converted(Conversion {
        to_storage: keelson_api::events::events_v1_to_core,
        from_storage: keelson_api::events::core_to_events_v1,
        stored_as: ("", "v1"),
    }),
    // --- autoscaling/v2 ---
    Resource::new(
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        typed::<autoscaling::HorizontalPodAutoscaler>,
    )
    .version("v2")
    .short(&["hpa"])
    .in_all()
    .spec_status(),
    // --- autoscaling/v1: the same HPAs, CPU utilization only (`kubectl autoscale` writes it) ---
    Resource::new(
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        typed::<autoscaling_v1::HorizontalPodAutoscaler>,
    )
    .version("v1")
    .stored_as("v2")
    .short(&["hpa"])
    .in_all()
    .spec_status()
    .converted(Conversion {
        to_storage: keelson_api::autoscaling::v1_to_v2,
        from_storage: keelson_api::autoscaling::v2_to_v1,
        stored_as: ("autoscaling", "v2"),
    }),
    // --- batch/v1 ---
    Resource::new(
        "batch",
        "CronJob",
        "cronjobs",
        "cronjob",
        typed::<batch::CronJob>,
    )
    .short(&["cj"])
    .in_all()
    .spec_status(),
    Resource::new("batch", "Job", "jobs", "job", typed::<batch::Job>)
        .in_all()
        .spec_status()
        .fields(&["status.successful"]),
    // --- certificates.k8s.io/v1 ---
    Resource::new(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "certificatesigningrequest",
        typed::<certificates::CertificateSigningRequest>,
    )
    .cluster()
    .short(&["csr"])
    .spec_status()
    .subresources(CSR_SUBRESOURCES)
    .fields(&["spec.signerName"]),
    // --- networking.k8s.io/v1 ---
    Resource::new(
        "networking.k8s.io",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        typed::<networking::IngressClass>,
    )
    .cluster()
    .spec(),
    Resource::new(
        "networking.k8s.io",
        "Ingress",
        "ingresses",
        "ingress",
        typed::<networking::Ingress>,
    )
    .short(&["ing"])
    .spec_status()
    .note("keelson stores Ingresses but runs no ingress controller yet"),
    Resource::new(
        "networking.k8s.io",
        "IPAddress",
        "ipaddresses",
        "ipaddress",
        typed::<networking::IPAddress>,
    )
    .stored_as("v1beta1")
    .cluster()
    .short(&["ip"])
    .spec(),
    Resource::new(
        "networking.k8s.io",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        typed::<networking::NetworkPolicy>,
    )
    .short(&["netpol"])
    .spec(),
    Resource::new(
        "networking.k8s.io",
        "ServiceCIDR",
        "servicecidrs",
        "servicecidr",
        typed::<networking::ServiceCIDR>,
    )
    .stored_as("v1beta1")
    .cluster()
    .spec_status(),
    // --- policy/v1 ---
    Resource::new(
        "policy",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        typed::<policy::PodDisruptionBudget>,
    )
    .short(&["pdb"])
    .spec_status(),
    // --- rbac.authorization.k8s.io/v1 ---
    Resource::new(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        typed::<rbac::ClusterRoleBinding>,
    )
    .cluster(),
    Resource::new(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        typed::<rbac::ClusterRole>,
    )
    .cluster(),
    Resource::new(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        typed::<rbac::RoleBinding>,
    ),
    Resource::new(
        "rbac.authorization.k8s.io",
        "Role",
        "roles",
        "role",
        typed::<rbac::Role>,
    ),
    // --- storage.k8s.io/v1 ---
    Resource::new(
        "storage.k8s.io",
        "CSIDriver",
        "csidrivers",
        "csidriver",
        typed::<storage::CSIDriver>,
    )
    .cluster()
    .spec(),
    Resource::new(
        "storage.k8s.io",
        "CSINode",
        "csinodes",
        "csinode",
        typed::<storage::CSINode>,
    )
    .cluster()
    .spec(),
    Resource::new(
        "storage.k8s.io",
        "CSIStorageCapacity",
        "csistoragecapacities",
        "csistoragecapacity",
        typed::<storage::CSIStorageCapacity>,
    ),
    Resource::new(
        "storage.k8s.io",
        "StorageClass",
        "storageclasses",
        "storageclass",
        typed::<storage::StorageClass>,
    )
    .cluster()
    .short(&["sc"]),
    Resource::new(
        "storage.k8s.io",
        "VolumeAttachment",
        "volumeattachments",
        "volumeattachment",
        typed::<storage::VolumeAttachment>,
    )
    .cluster()
    .spec_status(),
    // --- admissionregistration.k8s.io/v1 ---
    Resource::new(
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        typed::<admission::MutatingWebhookConfiguration>,
    )
    .cluster()
    .api_extension(),
    Resource::new(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        typed::<admission::ValidatingAdmissionPolicy>,
    )
    .cluster()
    .api_extension()
    .spec_status(),
    Resource::new(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        typed::<admission::ValidatingAdmissionPolicyBinding>,
    )
    .cluster()
    .api_extension()
    .spec(),
    Resource::new(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        typed::<admission::ValidatingWebhookConfiguration>,
    )
    .cluster()
    .api_extension(),
    // --- apiextensions.k8s.io/v1 (custom resources themselves: `crate::crd`) ---
    Resource::new(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        typed::<apiextensions::CustomResourceDefinition>,
    )
    // kube-apiserver 1.33 still stores CRDs as v1beta1 (its storageVersionHash says so).
    .stored_as("v1beta1")
    .cluster()
    .short(&["crd", "crds"])
    .api_extension()
    .spec_status(),
    // --- scheduling.k8s.io/v1 ---
    Resource::new(
        "scheduling.k8s.io",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        typed::<scheduling::PriorityClass>,
    )
    .cluster()
    .short(&["pc"]),
    // --- coordination.k8s.io/v1 ---
    Resource::new(
        "coordination.k8s.io",
        "Lease",
        "leases",
        "lease",
        typed::<coordination::Lease>,
    ),
    // --- node.k8s.io/v1 ---
    Resource::new(
        "node.k8s.io",
        "RuntimeClass",
        "runtimeclasses",
        "runtimeclass",
        typed::<node::RuntimeClass>,
    )
    .cluster(),
    // --- discovery.k8s.io/v1 ---
    Resource::new(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        typed::<discovery::EndpointSlice>,
    ),
    // --- flowcontrol.apiserver.k8s.io/v1 ---
    Resource::new(
        "flowcontrol.apiserver.k8s.io",
        "FlowSchema",
        "flowschemas",
        "flowschema",
        typed::<flowcontrol::FlowSchema>,
    )
    .cluster()
    .spec_status()
    .note("keelson stores FlowSchemas but does not do API priority and fairness yet"),
    Resource::new(
        "flowcontrol.apiserver.k8s.io",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        "prioritylevelconfiguration",
        typed::<flowcontrol::PriorityLevelConfiguration>,
    )
    .cluster()
    .spec_status()
    .note(
        "keelson stores PriorityLevelConfigurations but does not do API priority and fairness yet",
    ),
];
