//! End to end: `kubectl auth can-i` (SelfSubjectAccessReview, SelfSubjectRulesReview),
//! `kubectl auth whoami` and impersonation (`--as`, `--as-group`) against the real
//! `keelson-control-plane` binary with the real kubectl 1.33.
//!
//! The answers here hold whatever RBAC policy is stored: the admin is in `system:masters`,
//! and users named here are bound to nothing.

use keelson_tests::cluster::{ControlPlane, Kubectl};

/// Runs kubectl and returns (exit code, stdout, stderr).
fn outcome(k: &Kubectl<'_>, args: &[&str]) -> (i32, String, String) {
    let output = k.command(args).output().expect("run kubectl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn kubectl_auth_can_i_answers_as_kubernetes_does() {
    let plane = ControlPlane::start();
    let k = Kubectl::new(33, &plane);
    // (args, exit code, stdout) — kubectl prints yes/no and exits 1 on "no".
    let cases: &[(&[&str], i32, &str)] = &[
        (&["auth", "can-i", "list", "pods"], 0, "yes\n"),
        (
            &["auth", "can-i", "delete", "nodes", "--all-namespaces"],
            0,
            "yes\n",
        ),
        (&["auth", "can-i", "get", "/healthz"], 0, "yes\n"),
        (
            &["auth", "can-i", "get", "pods", "--as", "alice"],
            1,
            "no\n",
        ),
        (
            &[
                "auth",
                "can-i",
                "create",
                "deployments.apps",
                "-n",
                "kube-system",
                "--as",
                "bob",
            ],
            1,
            "no\n",
        ),
        // A user impersonated into system:masters may do everything.
        (
            &[
                "auth",
                "can-i",
                "delete",
                "secrets",
                "--as",
                "carol",
                "--as-group",
                "system:masters",
            ],
            0,
            "yes\n",
        ),
    ];
    for (args, code, stdout) in cases {
        let (status, out, err) = outcome(&k, args);
        assert_eq!(
            (status, out.as_str()),
            (*code, *stdout),
            "`kubectl {}`: stderr {err}\nserver log:\n{}",
            args.join(" "),
            plane.log()
        );
    }
    // The rules review: kubectl prints its table (the rows come from RBAC).
    let list = k.run(&["auth", "can-i", "--list"]);
    let header: Vec<&str> = list
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "Resources",
            "Non-Resource",
            "URLs",
            "Resource",
            "Names",
            "Verbs"
        ],
        "{list}"
    );
}

#[test]
fn kubectl_impersonates_users_and_groups() {
    let plane = ControlPlane::start();
    let k = Kubectl::new(33, &plane);
    let whoami = k.run(&["auth", "whoami", "--as", "bob", "--as-group", "devs"]);
    let rows: Vec<Vec<&str>> = whoami
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["ATTRIBUTE", "VALUE"],
            vec!["Username", "bob"],
            vec!["Groups", "[devs", "system:authenticated]"],
        ],
        "{whoami}"
    );
    let whoami = k.run(&["auth", "whoami", "--as", "bob"]);
    let groups: Vec<&str> = whoami
        .lines()
        .find(|l| l.starts_with("Groups"))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(groups, ["Groups", "[system:authenticated]"], "{whoami}");
    // The request runs as bob: his permissions, not the admin's.
    let (status, _, err) = outcome(&k, &["get", "pods", "--as", "bob", "--as-group", "g"]);
    assert_eq!(status, 1, "{err}");
    assert!(
        err.contains(
            "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in \
             the namespace \"default\""
        ),
        "{err}"
    );
    // Impersonated into system:masters, the same user may.
    let pods = k.run(&["get", "pods", "--as", "bob", "--as-group", "system:masters"]);
    assert_eq!(pods, "", "no pods: kubectl says so on stderr");
}

const POLICY: &str = "apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: root-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: User, name: root, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: eddie-edit, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{kind: User, name: eddie, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewers, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: User, name: vera, apiGroup: rbac.authorization.k8s.io}
- {kind: ServiceAccount, name: robot, namespace: team}
";

/// `kubectl auth can-i --as ...` for Kubernetes' bootstrap roles, as Kubernetes 1.33 answers:
/// cluster-admin, edit and view bound in a namespace, a ServiceAccount, a node and a user bound
/// to nothing; and a user bound to `edit` cannot bind `cluster-admin` (escalation).
#[test]
fn can_i_follows_the_bootstrap_roles_and_bindings() {
    let plane = ControlPlane::start();
    let k = Kubectl::new(33, &plane);
    let dir = tempfile::tempdir().expect("temp dir");
    keelson_tests::pods::apply(&k, dir.path(), "policy.yaml", POLICY);
    let sa = "system:serviceaccount:team:robot";
    // (impersonation, can-i arguments, allowed)
    let cases: &[(&[&str], &[&str], bool)] = &[
        (&["--as", "root"], &["*", "*"], true),
        (&["--as", "root"], &["delete", "nodes"], true),
        (&["--as", "root"], &["get", "/metrics"], true),
        (
            &["--as", "eddie"],
            &["create", "deployments.apps", "-n", "team"],
            true,
        ),
        (&["--as", "eddie"], &["get", "secrets", "-n", "team"], true),
        (
            &["--as", "eddie"],
            &["create", "pods/exec", "-n", "team"],
            true,
        ),
        (
            &["--as", "eddie"],
            &["impersonate", "serviceaccounts", "-n", "team"],
            true,
        ),
        (
            &["--as", "eddie"],
            &[
                "create",
                "rolebindings.rbac.authorization.k8s.io",
                "-n",
                "team",
            ],
            false,
        ),
        (
            &["--as", "eddie"],
            &["update", "resourcequotas", "-n", "team"],
            false,
        ),
        (
            &["--as", "eddie"],
            &["create", "pods", "-n", "default"],
            false,
        ),
        (&["--as", "eddie"], &["list", "nodes"], false),
        (&["--as", "vera"], &["list", "pods", "-n", "team"], true),
        (&["--as", "vera"], &["get", "pods/log", "-n", "team"], true),
        (&["--as", "vera"], &["get", "secrets", "-n", "team"], false),
        (&["--as", "vera"], &["create", "pods", "-n", "team"], false),
        (
            &["--as", "vera"],
            &["create", "pods/exec", "-n", "team"],
            false,
        ),
        (&["--as", sa], &["list", "pods", "-n", "team"], true),
        (
            &["--as", sa],
            &["create", "selfsubjectaccessreviews.authorization.k8s.io"],
            true,
        ),
        (&["--as", sa], &["list", "secrets", "-n", "team"], false),
        (&["--as", sa], &["list", "pods", "-n", "default"], false),
        (
            &["--as", "system:node:n1", "--as-group", "system:nodes"],
            &["get", "nodes"],
            true,
        ),
        (
            &["--as", "system:node:n1", "--as-group", "system:nodes"],
            &["list", "pods", "-A"],
            true,
        ),
        (
            &["--as", "system:node:n1", "--as-group", "system:nodes"],
            &["list", "secrets", "-A"],
            false,
        ),
        (
            &["--as", "system:node:n1", "--as-group", "system:nodes"],
            &["get", "secrets/s1", "-n", "default"],
            false,
        ),
        (
            &["--as", "system:node:n1", "--as-group", "system:nodes"],
            &["delete", "namespaces"],
            false,
        ),
        (
            &["--as", "alice"],
            &["create", "selfsubjectrulesreviews.authorization.k8s.io"],
            true,
        ),
        (&["--as", "alice"], &["get", "/version"], true),
        (&["--as", "alice"], &["get", "pods"], false),
    ];
    for (who, question, allowed) in cases {
        let mut args = vec!["auth", "can-i"];
        args.extend_from_slice(question);
        args.extend_from_slice(who);
        let (code, stdout, stderr) = outcome(&k, &args);
        // A denial may carry the authorizer's reason: `no - <reason>`.
        let answer = stdout.split(" - ").next().unwrap_or_default().trim();
        let want = if *allowed { (0, "yes") } else { (1, "no") };
        assert_eq!(
            (code, answer),
            want,
            "kubectl {}: {stdout}{stderr}",
            args.join(" ")
        );
    }
    // The admin's rules: everything, listed as Kubernetes lists cluster-admin's.
    let (code, listed, stderr) = outcome(&k, &["auth", "can-i", "--list"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["*.*", "[]", "[]", "[*]"]),
        "{listed}"
    );

    // Escalation: eddie may write RoleBindings once allowed to, but not to cluster-admin.
    keelson_tests::pods::apply(
        &k,
        dir.path(),
        "binder.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: binder, namespace: team}
rules:
- {apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: eddie-binder, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: binder}
subjects: [{kind: User, name: eddie, apiGroup: rbac.authorization.k8s.io}]
",
    );
    let (code, _, stderr) = outcome(
        &k,
        &[
            "create",
            "rolebinding",
            "grab",
            "-n",
            "team",
            "--clusterrole",
            "cluster-admin",
            "--user",
            "eddie",
            "--as",
            "eddie",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("is attempting to grant RBAC permissions not currently held"),
        "{stderr}"
    );
    let (code, _, stderr) = outcome(
        &k,
        &[
            "create",
            "rolebinding",
            "fine",
            "-n",
            "team",
            "--clusterrole",
            "view",
            "--user",
            "vera",
            "--as",
            "eddie",
        ],
    );
    assert_eq!(code, 0, "edit may grant view, which it holds: {stderr}");
}
