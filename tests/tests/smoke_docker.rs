//! Privileged smoke test: the Docker engine the node agent drives answers through bollard.

use keelson_tests::require_root;

#[tokio::test]
async fn dockerd_answers_through_bollard() {
    require_root();
    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap_or_else(|e| panic!("cannot reach dockerd's socket ({e}): run `cargo xtask setup`"));
    let pong = docker.ping().await.unwrap_or_else(|e| {
        panic!("dockerd does not answer on /var/run/docker.sock ({e}): run `cargo xtask setup`")
    });
    assert_eq!(pong, "OK");
    let version = docker.version().await.expect("GET /version");
    let api = version
        .api_version
        .expect("the engine reports its API version");
    assert!(
        api.split('.').count() == 2,
        "unexpected API version {api:?}"
    );
    let info = docker.info().await.expect("GET /info");
    assert!(
        info.driver.is_some_and(|d| !d.is_empty()),
        "the engine reports no storage driver"
    );
}
