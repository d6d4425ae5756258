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
