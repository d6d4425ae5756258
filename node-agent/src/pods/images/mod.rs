//! Images as the kubelet handles them beyond `imagePullPolicy`: the words of its pull events
//! ([`pulled_message`], with Go's duration format), registry credentials from the pod's
//! `imagePullSecrets` ([`auth`]), and images loaded at agent start from tarballs in
//! `<data-dir>/images` ([`archive`], k3s's air-gap images).
//!
//! Sources: kubernetes `pkg/kubelet/images/image_manager.go` (events),
//! `pkg/credentialprovider/keyring.go` and `config.go` (matching, secret formats).

pub mod archive;
pub mod auth;
pub mod gc;

use std::time::Duration;

/// A duration as Go prints a `time.Duration` truncated to milliseconds (`313ms`, `1.594s`,
/// `1m2.5s`, `0s`), which is how the kubelet's `Pulled` event shows it.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let trim = |millis: u128| {
        let text = format!("{}.{:03}", millis / 1000, millis % 1000);
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    match (h, m) {
        (0, 0) => format!("{}s", trim(rest)),
        (0, m) => format!("{m}m{}s", trim(rest)),
        (h, m) => format!("{h}h{m}m{}s", trim(rest)),
    }
}

/// The kubelet's `Pulled` event after a pull: the pull's own time, the time including the
/// wait for an earlier pull, and the image's size.
pub fn pulled_message(image: &str, pulling: Duration, total: Duration, size: i64) -> String {
    format!(
        "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {size} \
         bytes.",
        go_duration(pulling),
        go_duration(total)
    )
}

/// The kubelet's `Pulled` event when the policy needs no pull.
pub fn present_message(image: &str) -> String {
    format!("Container image \"{image}\" already present on machine")
}

/// The kubelet's `Failed` event for a failed pull.
pub fn failed_message(image: &str, error: &str) -> String {
    format!("Failed to pull image \"{image}\": {error}")
}

/// Pulls `image` with each of `credentials` in turn until one works (anonymously when there
/// are none), as the kubelet tries every matching keyring entry; the last error otherwise.
pub async fn pull(
    runtime: &dyn super::runtime::ContainerRuntime,
    image: &str,
    credentials: Vec<bollard::auth::DockerCredentials>,
) -> Result<(), super::runtime::RuntimeError> {
    if credentials.is_empty() {
        return runtime.pull(image, None).await;
    }
    let mut last = Ok(());
    for c in credentials {
        last = runtime.pull(image, Some(c)).await;
        if last.is_ok() {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        let cases = [
            (0, "0s"),
            (313, "313ms"),
            (1000, "1s"),
            (1594, "1.594s"),
            (1600, "1.6s"),
            (62_500, "1m2.5s"),
            (3_600_000, "1h0m0s"),
            (3_723_004, "1h2m3.004s"),
        ];
        for (ms, want) in cases {
            assert_eq!(go_duration(Duration::from_millis(ms)), want, "{ms}");
        }
        // Truncated, not rounded.
        assert_eq!(go_duration(Duration::from_micros(1_999_999)), "1.999s");
    }

    #[test]
    fn events_read_as_the_kubelet_writes_them() {
        assert_eq!(
            pulled_message(
                "busybox",
                Duration::from_millis(796),
                Duration::from_millis(1594),
                4_269_694
            ),
            "Successfully pulled image \"busybox\" in 796ms (1.594s including waiting). Image \
             size: 4269694 bytes."
        );
        assert_eq!(
            present_message("keelson/busybox:1"),
            "Container image \"keelson/busybox:1\" already present on machine"
        );
        assert_eq!(
            failed_message("x:1", "denied"),
            "Failed to pull image \"x:1\": denied"
        );
    }
}
