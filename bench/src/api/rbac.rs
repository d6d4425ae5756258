//! The RBAC comparison of `keelson-bench api`: the closed-loop creates run twice against the
//! same control plane once a realistic policy is stored — as the `system:masters` admin (which
//! the first link of the authorizer chain allows without looking at RBAC) and as a user that
//! only RBAC allows (`edit` bound in its namespace), among 500 Roles and 1000 bindings to
//! other users and groups. Both authenticate the same way, with a static bearer token
//! (`--token-auth-file`; the admin's names the group `system:masters`), so the comparison
//! measures the authorizer and nothing else, and they take turns in alternating rounds (ABBA
//! order), so a store growing or a noisy neighbour weighs on both alike.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, stream};
use k8s_openapi::api::{
    core::v1::ConfigMap,
    rbac::v1::{ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, api::PostParams};

use super::load;

/// The user RBAC authorizes.
pub const USER: &str = "bench-rbac-user";
/// The namespace where [`USER`] is bound to `edit` and creates.
pub const NAMESPACE: &str = "bench-rbac";
/// The namespace the admin creates in during the comparison.
pub const ADMIN_NAMESPACE: &str = "bench-rbac-admin";
/// Roles in the policy.
pub const ROLES: usize = 500;
/// RoleBindings and ClusterRoleBindings to other subjects in the policy.
pub const BINDINGS: usize = 1000;
/// Namespaces the Roles are spread over.
const POLICY_NAMESPACES: usize = 50;
/// The bench user's bearer token (a scratch control plane on loopback only).
pub const TOKEN: &str = "keelson-bench-rbac-token";
/// The bench admin's bearer token, a member of `system:masters`.
const MASTERS_TOKEN: &str = "keelson-bench-masters-token";
/// The bench admin's name.
const MASTERS_USER: &str = "bench-admin";

/// Writes the static token file naming [`USER`] and the bench admin into `dir`; give the path
/// to the control plane's `--token-auth-file`.
pub fn token_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("bench-tokens.csv");
    std::fs::write(
        &path,
        format!(
            "{TOKEN},{USER},bench-rbac-uid,\"bench-users\"\n\
             {MASTERS_TOKEN},{MASTERS_USER},bench-admin-uid,\"system:masters\"\n"
        ),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A client of the control plane as [`USER`]: `admin`'s kubeconfig (server, CA) with the
/// bench user's token instead of the admin's credentials.
pub async fn user_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    token_client(kubeconfig, TOKEN).await
}

/// A client of the control plane as the bench admin (`system:masters`, by bearer token like
/// [`user_client`]).
pub async fn masters_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    token_client(kubeconfig, MASTERS_TOKEN).await
}

async fn token_client(kubeconfig: &Path, token: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("no client config from the admin kubeconfig")?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).context("cannot build a bench client with a token")
}

fn role(namespace: &str, i: usize) -> Role {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..PolicyRule::default()
    };
    Role {
        metadata: ObjectMeta {
            name: Some(format!("role-{i:03}")),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(
                &[""],
                &["pods", "pods/log", "services"],
                &["get", "list", "watch"],
            ),
            rule(
                &["apps"],
                &["deployments", "replicasets"],
                &["get", "list", "watch", "update", "patch"],
            ),
            rule(&[""], &["configmaps"], &["get", "list"]),
            rule(
                &["batch"],
                &["jobs", "cronjobs"],
                &["create", "delete", "get", "list"],
            ),
        ]),
    }
}

fn subject(i: usize) -> Subject {
    if i.is_multiple_of(3) {
        Subject {
            kind: "Group".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: format!("team-{}", i % 97),
            namespace: None,
        }
    } else {
        Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: format!("user-{i:04}"),
            namespace: None,
        }
    }
}

/// `view` or `edit`, alternately.
fn cluster_role(i: usize) -> String {
    let name = if i.is_multiple_of(2) { "view" } else { "edit" };
    name.to_owned()
}

fn role_ref(kind: &str, name: String) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name,
    }
}

/// Stores the policy (namespaces, [`ROLES`] Roles, [`BINDINGS`] bindings to other subjects:
/// four in five RoleBindings, one in five ClusterRoleBindings to `view`/`edit`) and binds
/// `edit` to [`USER`] in [`NAMESPACE`]. Sends 32 requests at a time.
pub async fn load_policy(admin: &kube::Client) -> anyhow::Result<()> {
    for ns in (0..POLICY_NAMESPACES)
        .map(|n| format!("bench-policy-{n:02}"))
        .chain([NAMESPACE.to_owned(), ADMIN_NAMESPACE.to_owned()])
    {
        load::create_namespace(admin, &ns).await?;
    }
    let namespace = |i: usize| format!("bench-policy-{:02}", i % POLICY_NAMESPACES);
    let roles = (0..ROLES).map(|i| {
        let api = Api::<Role>::namespaced(admin.clone(), &namespace(i));
        async move {
            api.create(&PostParams::default(), &role(&namespace(i), i))
                .await
                .map(drop)
                .with_context(|| format!("cannot create Role role-{i:03}"))
        }
    });
    run_all(roles).await?;
    let bindings = (0..BINDINGS).map(|i| {
        let admin = admin.clone();
        async move {
            let name = format!("binding-{i:04}");
            let created = if i % 5 == 4 {
                let binding = ClusterRoleBinding {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    role_ref: role_ref("ClusterRole", cluster_role(i)),
                    subjects: Some(vec![subject(i)]),
                };
                Api::<ClusterRoleBinding>::all(admin)
                    .create(&PostParams::default(), &binding)
                    .await
                    .map(drop)
            } else {
                let ns = namespace(i);
                let binding = RoleBinding {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        ..ObjectMeta::default()
                    },
                    role_ref: role_ref("Role", format!("role-{:03}", i % ROLES)),
                    subjects: Some(vec![subject(i), subject(i + 1)]),
                };
                Api::<RoleBinding>::namespaced(admin, &ns)
                    .create(&PostParams::default(), &binding)
                    .await
                    .map(drop)
            };
            created.with_context(|| format!("cannot create binding {name}"))
        }
    });
    run_all(bindings).await?;
    let edit = RoleBinding {
        metadata: ObjectMeta {
            name: Some("bench-user-edit".into()),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        role_ref: role_ref("ClusterRole", "edit".into()),
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: USER.into(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &edit)
        .await
        .context("cannot bind edit to the bench user")?;
    Ok(())
}

async fn run_all(
    tasks: impl Iterator<Item = impl std::future::Future<Output = anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let mut results = stream::iter(tasks).buffer_unordered(32);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

/// One create as [`USER`]: fails with a one-line cause when RBAC did not let it through
/// (the control plane does not enforce RBAC, so the comparison means nothing).
pub async fn probe(user: &kube::Client) -> anyhow::Result<()> {
    let api = Api::<ConfigMap>::namespaced(user.clone(), NAMESPACE);
    let probe = load::config_map("rbac-probe".into(), vec![("probe", "1".into())]);
    match api.create(&PostParams::default(), &probe).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 403 => bail!(
            "RBAC is not enforced: {USER}, bound to `edit` in {NAMESPACE}, got 403 creating a \
             ConfigMap there ({})",
            status.message
        ),
        Err(e) => Err(e).context("the bench user's probe create failed"),
    }
}
