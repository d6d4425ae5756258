//! Images loaded at agent start from tarballs dropped in `<data-dir>/images` (`docker save`
//! archives, plain or compressed as Docker's load reads them): clusters without a registry
//! get their images this way, as k3s's `agent/images` directory does.

use std::path::{Path, PathBuf};

use bollard::{Docker, query_parameters::ImportImageOptions};
use futures_util::StreamExt as _;

/// The directory below the data directory holding image tarballs.
pub fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// Whether a file name is an image archive Docker's load reads (tar, gzip, bzip2, xz, zstd).
pub fn is_image_archive(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst",
    ];
    !name.starts_with('.') && SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The image names Docker reports having loaded (`Loaded image: x:1`, `Loaded image ID: ...`).
pub fn loaded_names(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("Loaded image: ")
                .or_else(|| l.trim().strip_prefix("Loaded image ID: "))
        })
        .map(str::to_owned)
        .collect()
}

/// Why an archive was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the file.
    #[error("reading {path}")]
    Read {
        /// The archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Docker refused it.
    #[error("docker refused {path}: {message}")]
    Docker {
        /// The archive.
        path: PathBuf,
        /// Docker's message.
        message: String,
    },
}

/// Loads one archive into Docker; returns the images it held.
pub async fn load(docker: &Docker, path: &Path) -> Result<Vec<String>, ArchiveError> {
    // Read whole (a blocking read off the runtime's threads): archives are images of a few
    // hundred MiB at most, loaded once at start.
    let owned = path.to_owned();
    let data = tokio::task::spawn_blocking(move || std::fs::read(&owned))
        .await
        .map_err(|e| ArchiveError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| ArchiveError::Read {
            path: path.to_owned(),
            source,
        })?;
    let chunks =
        futures_util::stream::once(
            async move { Ok::<_, std::io::Error>(bytes::Bytes::from(data)) },
        );
    let options = ImportImageOptions {
        quiet: true,
        platform: None,
    };
    let mut stream = Box::pin(docker.import_image_stream(options, chunks, None));
    let mut output = String::new();
    while let Some(item) = stream.next().await {
        let docker_error = |message: String| ArchiveError::Docker {
            path: path.to_owned(),
            message,
        };
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(docker_error(message));
                }
                if let Some(text) = info.stream {
                    output.push_str(&text);
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(docker_error(message));
            }
            Err(e) => return Err(docker_error(e.to_string())),
        }
    }
    Ok(loaded_names(&output))
}

/// Loads every archive of `<data-dir>/images` (in name order), one log line each; a missing
/// directory is no error. Returns how many archives were loaded.
pub async fn load_all(docker: &Docker, data_dir: &Path) -> usize {
    let dir = images_dir(data_dir);
    let Ok(read) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut paths: Vec<PathBuf> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_image_archive)
        })
        .collect();
    paths.sort();
    let mut loaded = 0;
    for path in paths {
        let started = std::time::Instant::now();
        match load(docker, &path).await {
            Ok(images) => {
                loaded += 1;
                tracing::info!(
                    archive = %path.display(),
                    images = %images.join(","),
                    took = %super::go_duration(started.elapsed()),
                    "imported images"
                );
            }
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "importing images");
            }
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_known_by_suffix() {
        let cases = [
            ("app.tar", true),
            ("app.tar.gz", true),
            ("app.tgz", true),
            ("app.tar.zst", true),
            ("app.tar.xz", true),
            ("app.tar.bz2", true),
            (".partial.tar", false),
            ("app.tar.part", false),
            ("README", false),
            ("app.zip", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_image_archive(name), want, "{name}");
        }
    }

    #[test]
    fn loaded_images_are_read_from_docker_output() {
        assert_eq!(
            loaded_names("Loaded image: keelson/busybox:1\nLoaded image: x:2\n"),
            ["keelson/busybox:1", "x:2"]
        );
        assert_eq!(
            loaded_names("Loaded image ID: sha256:abc\n"),
            ["sha256:abc"]
        );
        assert!(loaded_names("").is_empty());
    }
}
