//! `/livez`, `/readyz` and `/healthz` as kube-apiserver serves them
//! (k8s.io/apiserver/pkg/server/healthz): a registry of named checks, each endpoint running
//! the checks of its kind.
//!
//! - `GET /readyz` answers `200 ok` when every check passes; with `?verbose` it lists one
//!   `[+]name ok` line per check and ends with `readyz check passed`.
//! - When a check fails the answer is always verbose and `500`: the failing check reads
//!   `[-]name failed: reason withheld` (the reason goes to the log, not to the anonymous
//!   client) and the last line is `readyz check failed`.
//! - `?exclude=name` (repeatable) skips a check (`[+]name excluded: ok`); a name that matches
//!   no check adds a `warn: some health checks cannot be excluded: no matches for "name"` line.
//! - `GET /readyz/<name>` runs one check: `200 ok`, or `500 internal server error: <reason>`.
//!
//! `/livez` runs the [`Scope::Live`] checks only (is the process alive: `ping`, and `runtime`,
//! a task spawned on the async runtime runs within the bound), `/readyz` every check and
//! `/healthz` every check but the [`Scope::ReadyOnly`] ones (such as `shutdown`), as
//! kube-apiserver's endpoints do. Every check is bounded by [`Health::timeout`]: one that does
//! not answer in time fails.

use std::{
    fmt::Write as _,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, Query},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// How long a check may take before it counts as failed (kube-apiserver's etcd readiness
/// check has the same default bound, `--etcd-healthcheck-timeout=2s`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The three health endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/livez`: is the process alive (restart it if not).
    Livez,
    /// `/readyz`: may it serve (send it traffic, tell systemd it is ready).
    Readyz,
    /// `/healthz`: the deprecated combination kube-apiserver still serves.
    Healthz,
}

impl Probe {
    /// Every endpoint.
    pub const ALL: [Self; 3] = [Self::Livez, Self::Readyz, Self::Healthz];

    /// The endpoint's name (`readyz`), also the first word of its last verbose line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Livez => "livez",
            Self::Readyz => "readyz",
            Self::Healthz => "healthz",
        }
    }
}

/// Which endpoints run a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/livez`, `/readyz` and `/healthz`: the process is alive.
    Live,
    /// `/readyz` and `/healthz`: the process may serve.
    Ready,
    /// `/readyz` only (kube-apiserver's `shutdown` check).
    ReadyOnly,
}

impl Scope {
    fn runs_in(self, probe: Probe) -> bool {
        match (self, probe) {
            (Self::Live, _) | (Self::Ready, Probe::Readyz | Probe::Healthz) => true,
            (Self::ReadyOnly, probe) => probe == Probe::Readyz,
            (Self::Ready, Probe::Livez) => false,
        }
    }
}

/// What a check answered: `Err(reason)` when it failed.
pub type CheckResult = Result<(), String>;
type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

#[derive(Clone)]
struct Check {
    name: String,
    scope: Scope,
    run: CheckFn,
}

/// One check's line in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Passed,
    /// The check failed, for this reason (logged, never shown by the root endpoints).
    Failed(String),
    /// `?exclude=` skipped the check.
    Excluded,
}

/// The registry of named checks (cheap to clone: clones share the checks).
#[derive(Clone)]
pub struct Health {
    checks: Arc<Mutex<Vec<Check>>>,
    timeout: Duration,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().iter().map(|c| c.name.clone()).collect();
        f.debug_struct("Health")
            .field("checks", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A registry holding the two liveness checks every process has: `ping` (always passes:
    /// the endpoint answered) and `runtime` (a task spawned on the async runtime runs within
    /// the bound, so the runtime is not starved by blocked workers).
    pub fn new() -> Self {
        let health = Self {
            checks: Arc::default(),
            timeout: DEFAULT_TIMEOUT,
        };
        health.add("ping", Scope::Live, || async { Ok(()) });
        health.add("runtime", Scope::Live, || async {
            tokio::spawn(async {})
                .await
                .map_err(|error| format!("a spawned task did not run: {error}"))
        });
        health
    }

    /// The same registry with checks bounded by `timeout` instead of [`DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a check may take before it counts as failed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Check>> {
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds check `name` (replacing one of the same name), run by the endpoints of `scope`.
    pub fn add<F, Fut>(&self, name: &str, scope: Scope, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        let run: CheckFn = Arc::new(move || Box::pin(check()));
        let check = Check {
            name: name.to_owned(),
            scope,
            run,
        };
        let mut checks = self.lock();
        match checks.iter_mut().find(|c| c.name == name) {
            Some(existing) => *existing = check,
            None => checks.push(check),
        }
    }

    /// Adds check `name` whose answer something else sets: it fails with `pending` until
    /// [`Condition::set`] says otherwise (an informer that syncs, a hook that finishes).
    pub fn add_condition(&self, name: &str, scope: Scope, pending: &str) -> Condition {
        let condition = Condition(Arc::new(Mutex::new(Err(pending.to_owned()))));
        let read = condition.clone();
        self.add(name, scope, move || {
            let answer = read.get();
            async move { answer }
        });
        condition
    }

    /// The names of the checks `probe` runs, in the order they were added.
    pub fn names(&self, probe: Probe) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|c| c.scope.runs_in(probe))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Runs `probe`'s checks (concurrently, each bounded) but those in `exclude`.
    pub async fn run(&self, probe: Probe, exclude: &[String]) -> Vec<(String, Outcome)> {
        let checks: Vec<Check> = self
            .lock()
            .iter()
            .filter(|c| c.scope.runs_in(probe))
            .cloned()
            .collect();
        let runs = checks.into_iter().map(|check| async move {
            if exclude.contains(&check.name) {
                return (check.name, Outcome::Excluded);
            }
            let outcome = match bounded(self.timeout, (check.run)()).await {
                Ok(()) => Outcome::Passed,
                Err(reason) => Outcome::Failed(reason),
            };
            (check.name, outcome)
        });
        futures_util::future::join_all(runs).await
    }

    /// Whether every check of `probe` passes; the failing checks' reasons otherwise.
    pub async fn passes(&self, probe: Probe) -> Result<(), Vec<(String, String)>> {
        let failed: Vec<(String, String)> = self
            .run(probe, &[])
            .await
            .into_iter()
            .filter_map(|(name, outcome)| match outcome {
                Outcome::Failed(reason) => Some((name, reason)),
                Outcome::Passed | Outcome::Excluded => None,
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// Runs the one check `name` of `probe`; `None` when `probe` has no such check.
    pub async fn run_one(&self, probe: Probe, name: &str) -> Option<CheckResult> {
        let run = self
            .lock()
            .iter()
            .find(|c| c.name == name && c.scope.runs_in(probe))
            .map(|c| Arc::clone(&c.run))?;
        Some(bounded(self.timeout, run()).await)
    }

    /// The routes `/livez`, `/readyz`, `/healthz` and `/<endpoint>/<check>`, for any router
    /// state.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let mut router = Router::new();
        for probe in Probe::ALL {
            let health = self.clone();
            router = router.route(
                &format!("/{}", probe.name()),
                get(move |Query(query): Query<Vec<(String, String)>>| {
                    let health = health.clone();
                    async move { health.respond(probe, &query).await }
                }),
            );
            let health = self.clone();
            router = router.route(
                &format!("/{}/{{*check}}", probe.name()),
                get(move |Path(check): Path<String>| {
                    let health = health.clone();
                    async move { health.respond_one(probe, &check).await }
                }),
            );
        }
        router
    }

    async fn respond(&self, probe: Probe, query: &[(String, String)]) -> Response {
        let verbose = query.iter().any(|(key, _)| key == "verbose");
        let exclude: Vec<String> = query
            .iter()
            .filter(|(key, _)| key == "exclude")
            .map(|(_, value)| value.clone())
            .collect();
        let results = self.run(probe, &exclude).await;
        let unmatched: Vec<String> = exclude
            .iter()
            .filter(|name| !results.iter().any(|(check, _)| check == *name))
            .cloned()
            .collect();
        for (name, outcome) in &results {
            if let Outcome::Failed(reason) = outcome {
                tracing::info!(check = %name, %reason, "{} check failed", probe.name());
            }
        }
        let (status, body) = render(probe, &results, &unmatched, verbose);
        text(status, body)
    }

    async fn respond_one(&self, probe: Probe, check: &str) -> Response {
        match self.run_one(probe, check).await {
            None => text(StatusCode::NOT_FOUND, "404 page not found\n".to_owned()),
            Some(Ok(())) => text(StatusCode::OK, "ok".to_owned()),
            Some(Err(reason)) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal server error: {reason}\n"),
            ),
        }
    }
}

async fn bounded(timeout: Duration, check: CheckFuture) -> CheckResult {
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The status and body of `probe`'s endpoint for these check results (`unmatched`: the
/// `?exclude=` names that matched no check).
pub fn render(
    probe: Probe,
    results: &[(String, Outcome)],
    unmatched: &[String],
    verbose: bool,
) -> (StatusCode, String) {
    let mut lines = String::new();
    let mut failed = false;
    for (name, outcome) in results {
        // Writing to a String cannot fail.
        let _ = match outcome {
            Outcome::Passed => writeln!(lines, "[+]{name} ok"),
            Outcome::Excluded => writeln!(lines, "[+]{name} excluded: ok"),
            Outcome::Failed(_) => {
                failed = true;
                writeln!(lines, "[-]{name} failed: reason withheld")
            }
        };
    }
    if !unmatched.is_empty() {
        let names: Vec<String> = unmatched.iter().map(|n| format!("{n:?}")).collect();
        let _ = writeln!(
            lines,
            "warn: some health checks cannot be excluded: no matches for {}",
            names.join(",")
        );
    }
    if failed {
        let _ = writeln!(lines, "{} check failed", probe.name());
        return (StatusCode::INTERNAL_SERVER_ERROR, lines);
    }
    if !verbose {
        return (StatusCode::OK, "ok".to_owned());
    }
    let _ = writeln!(lines, "{} check passed", probe.name());
    (StatusCode::OK, lines)
}

/// A check's answer that its owner sets (see [`Health::add_condition`]).
#[derive(Debug, Clone)]
pub struct Condition(Arc<Mutex<CheckResult>>);

impl Condition {
    /// Sets what the check answers from now on.
    pub fn set(&self, result: CheckResult) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = result;
    }

    /// The check passes from now on.
    pub fn pass(&self) {
        self.set(Ok(()));
    }

    /// What the check answers now.
    pub fn get(&self) -> CheckResult {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    fn health() -> Health {
        let health = Health::new();
        health.add("etcd", Scope::Ready, || async { Ok(()) });
        health.add("shutdown", Scope::ReadyOnly, || async { Ok(()) });
        health
    }

    async fn get_text(health: &Health, uri: &str) -> (u16, String) {
        let response = health
            .routes::<()>()
            .oneshot(
                axum::http::Request::get(uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn endpoints_answer_as_kube_apiserver_does() {
        let healthy = health();
        let failing = health();
        failing.add("etcd", Scope::Ready, || async {
            Err("connection refused".to_owned())
        });
        let cases: &[(&Health, &str, u16, &str)] = &[
            (&healthy, "/readyz", 200, "ok"),
            (&healthy, "/livez", 200, "ok"),
            (
                &healthy,
                "/readyz?verbose",
                200,
                "[+]ping ok\n[+]runtime ok\n[+]etcd ok\n[+]shutdown ok\nreadyz check passed\n",
            ),
            (
                &healthy,
                "/livez?verbose",
                200,
                "[+]ping ok\n[+]runtime ok\nlivez check passed\n",
            ),
            (
                &healthy,
                "/healthz?verbose",
                200,
                "[+]ping ok\n[+]runtime ok\n[+]etcd ok\nhealthz check passed\n",
            ),
            (
                &failing,
                "/readyz",
                500,
                "[+]ping ok\n[+]runtime ok\n[-]etcd failed: reason withheld\n[+]shutdown ok\n\
                 readyz check failed\n",
            ),
            (&failing, "/livez", 200, "ok"),
            (
                &failing,
                "/readyz?verbose&exclude=etcd&exclude=nope",
                200,
                "[+]ping ok\n[+]runtime ok\n[+]etcd excluded: ok\n[+]shutdown ok\n\
                 warn: some health checks cannot be excluded: no matches for \"nope\"\n\
                 readyz check passed\n",
            ),
            (&healthy, "/readyz/etcd", 200, "ok"),
            (
                &failing,
                "/readyz/etcd",
                500,
                "internal server error: connection refused\n",
            ),
            (&failing, "/livez/etcd", 404, "404 page not found\n"),
            (&healthy, "/healthz/shutdown", 404, "404 page not found\n"),
        ];
        for (health, uri, status, body) in cases {
            assert_eq!(
                get_text(health, uri).await,
                (*status, (*body).to_owned()),
                "GET {uri}"
            );
        }
    }

    #[tokio::test]
    async fn a_check_with_a_slash_in_its_name_has_its_own_path() {
        let health = Health::new();
        let hook = health.add_condition("poststarthook/bootstrap", Scope::Ready, "not run yet");
        assert_eq!(
            get_text(&health, "/readyz/poststarthook/bootstrap").await,
            (500, "internal server error: not run yet\n".to_owned())
        );
        hook.pass();
        assert_eq!(
            get_text(&health, "/readyz/poststarthook/bootstrap").await,
            (200, "ok".to_owned())
        );
        assert_eq!(
            get_text(&health, "/readyz?exclude=poststarthook%2Fbootstrap&verbose")
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn a_check_that_does_not_answer_in_time_fails() {
        let health = Health::new().with_timeout(Duration::from_millis(20));
        health.add("store", Scope::Ready, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        assert_eq!(
            health.passes(Probe::Readyz).await,
            Err(vec![(
                "store".to_owned(),
                "no answer within 20ms".to_owned()
            )])
        );
        assert_eq!(health.passes(Probe::Livez).await, Ok(()));
    }

    #[test]
    fn names_follow_the_scope() {
        let health = health();
        assert_eq!(health.names(Probe::Livez), ["ping", "runtime"]);
        assert_eq!(
            health.names(Probe::Readyz),
            ["ping", "runtime", "etcd", "shutdown"]
        );
        assert_eq!(health.names(Probe::Healthz), ["ping", "runtime", "etcd"]);
    }
}
