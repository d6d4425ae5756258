//! End to end: Helm 4 (server-side apply by default) installs, upgrades, rolls back and
//! uninstalls a chart of keelson's own (tests/charts/webapp/) against the real
//! `keelson-control-plane`, and kubectl 1.33 reads what each step left: the values the chart
//! rendered, objects a later revision drops, Helm as the `Apply` manager of what it wrote, and
//! the release history Helm keeps in Secrets.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use keelson_tests::cluster::{ControlPlane, Kubectl};
use serde_json::Value;

/// Where `cargo xtask setup` puts Helm 4.
const HELM: &str = "/opt/keelson/helm/helm";

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/webapp")
}

struct Helm<'a> {
    plane: &'a ControlPlane,
    /// Helm's cache and config directories, so nothing of the machine's leaks in.
    home: tempfile::TempDir,
}

impl<'a> Helm<'a> {
    fn new(plane: &'a ControlPlane) -> Self {
        assert!(
            Path::new(HELM).is_file(),
            "{HELM} is missing: run `cargo xtask setup` (it installs Helm 4)"
        );
        Self {
            plane,
            home: tempfile::tempdir().expect("helm home"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(HELM);
        let home = self.home.path();
        command
            .env("KUBECONFIG", &self.plane.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .args(["--namespace", "shop"]);
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run helm");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`helm {}` failed ({}):\nstdout: {stdout}\nstderr: {}\nserver log:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.plane.log()
        );
        stdout
    }
}

fn json(k: &Kubectl<'_>, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-n", "shop", "-o", "json"]);
    serde_json::from_str(&k.run(&all)).expect("kubectl -o json")
}

/// The managers of `object` with their operation, e.g. `("helm", "Apply")`.
fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap_or_default().to_owned(),
                e["operation"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls_a_chart() {
    let plane = ControlPlane::start();
    let k = Kubectl::new(33, &plane);
    let helm = Helm::new(&plane);
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");

    // Install: every object the chart renders exists, owned by Helm through server-side apply.
    let out = helm.run(&["install", "web", chart, "--create-namespace"]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    let config = json(&k, &["get", "configmap", "web-config"]);
    assert_eq!(config["data"]["message"], "hello");
    assert_eq!(
        config["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    let deployment = json(&k, &["get", "deployment", "web-web"]);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert!(
        managers(&deployment).contains(&("helm".to_owned(), "Apply".to_owned())),
        "Helm 4 applies server-side: {:?}",
        managers(&deployment)
    );
    let service = json(&k, &["get", "service", "web-web"]);
    assert_eq!(service["spec"]["ports"][0]["port"], 80);

    // Upgrade: new values reach the objects; the Service the new values turn off goes.
    let out = helm.run(&[
        "upgrade",
        "web",
        chart,
        "--set",
        "replicas=3,message=goodbye,service.enabled=false",
    ]);
    assert!(out.contains("REVISION: 2"), "{out}");
    assert_eq!(
        json(&k, &["get", "configmap", "web-config"])["data"]["message"],
        "goodbye"
    );
    assert_eq!(
        json(&k, &["get", "deployment", "web-web"])["spec"]["replicas"],
        3
    );
    let gone = k.fail(&["get", "service", "web-web", "-n", "shop"]);
    assert!(gone.contains("NotFound") || gone.contains("not found"), "{gone}");

    // Rollback to the first revision: the first values and the Service are back.
    let out = helm.run(&["rollback", "web", "1"]);
    assert!(out.contains("Rollback was a success"), "{out}");
    assert_eq!(
        json(&k, &["get", "configmap", "web-config"])["data"]["message"],
        "hello"
    );
    assert_eq!(
        json(&k, &["get", "deployment", "web-web"])["spec"]["replicas"],
        1
    );
    assert_eq!(
        json(&k, &["get", "service", "web-web"])["spec"]["ports"][0]["port"],
        80
    );
    let history: Value =
        serde_json::from_str(&helm.run(&["history", "web", "-o", "json"])).expect("history json");
    let statuses: Vec<(i64, &str)> = history
        .as_array()
        .expect("history list")
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap_or_default(),
                r["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    );
    let releases = k.run(&[
        "get",
        "secrets",
        "-n",
        "shop",
        "-l",
        "owner=helm,name=web",
        "-o",
        "name",
    ]);
    assert_eq!(releases.lines().count(), 3, "one Secret per revision:\n{releases}");

    // Uninstall: the chart's objects and the release records are gone.
    helm.run(&["uninstall", "web"]);
    for object in ["configmap/web-config", "deployment/web-web", "service/web-web"] {
        let err = k.fail(&["get", object, "-n", "shop"]);
        assert!(err.contains("not found"), "{object} after uninstall: {err}");
    }
    let releases = k.run(&[
        "get", "secrets", "-n", "shop", "-l", "owner=helm", "-o", "name",
    ]);
    assert!(releases.trim().is_empty(), "{releases}");
}
