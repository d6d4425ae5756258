//! The default `imagePullPolicy` of a container, from its image reference.
//!
//! pkg/apis/core/v1/defaults.go `SetDefaults_Container` asks pkg/util/parsers `ParseImageName`
//! for the tag: `Always` when it is `latest`, `IfNotPresent` otherwise. `ParseImageName` reports
//! `latest` when the reference has neither tag nor digest, and no tag at all when the reference
//! does not parse (github.com/distribution/reference `ParseNormalizedNamed`), so an unparsable or
//! empty image gets `IfNotPresent`.

/// `Always` or `IfNotPresent` for `image`, as Kubernetes chooses it.
pub(super) fn default_pull_policy(image: &str) -> &'static str {
    match tag_of(image) {
        Some("latest") => "Always",
        _ => "IfNotPresent",
    }
}

/// The tag `ParseImageName` reports: the reference's own tag, `latest` when it has neither tag
/// nor digest, and `None` when it has only a digest or does not parse.
fn tag_of(image: &str) -> Option<&str> {
    // An image ID (64 hex digits) is refused as a repository name.
    if image.len() == 64
        && image
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let (named, digest) = match image.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (image, None),
    };
    if digest.is_some_and(|d| !valid_digest(d)) {
        return None;
    }
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    let last_slash = named.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match named[last_slash..].rfind(':') {
        Some(i) => (&named[..last_slash + i], Some(&named[last_slash + i + 1..])),
        None => (named, None),
    };
    if tag.is_some_and(|t| !valid_tag(t)) || !valid_name(name) {
        return None;
    }
    match (tag, digest) {
        (Some(tag), _) => Some(tag),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    }
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// A digest of an algorithm Kubernetes' image library knows, with a hex part of its length.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `[domain/]path`, normalised the way `ParseNormalizedNamed` does: the first component is a
/// registry when it has a '.' or ':', is `localhost`, or has upper-case letters; the path must
/// be lower-case components joined by '/'; the full name is at most 255 characters.
fn valid_name(name: &str) -> bool {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    let prefix = if domain == "docker.io" && !path.contains('/') {
        "library/".len()
    } else {
        0
    };
    valid_domain(domain)
        && path.split('/').all(valid_path_component)
        && domain.len() + 1 + prefix + path.len() <= 255
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens, or `[ipv6]`.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (domain, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    host.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__` or one or more `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::default_pull_policy;

    #[test]
    fn pull_policy_follows_the_tag() {
        let sha = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("nginx:Latest", "IfNotPresent"),
            ("library/nginx:latest", "Always"),
            ("docker.io/library/nginx", "Always"),
            ("registry.k8s.io/pause:3.10", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v2", "IfNotPresent"),
            ("localhost/app:latest", "Always"),
            ("[::1]:5000/app", "Always"),
            (&format!("nginx@{sha}"), "IfNotPresent"),
            (&format!("nginx:latest@{sha}"), "Always"),
            (&format!("nginx:1.2@{sha}"), "IfNotPresent"),
            // References Kubernetes cannot parse report no tag.
            ("", "IfNotPresent"),
            ("NGINX", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
            ("nginx:", "IfNotPresent"),
            ("my..image", "IfNotPresent"),
            ("-nginx", "IfNotPresent"),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "IfNotPresent",
            ),
            // Separators inside path components.
            ("my-org/my__image.v2", "Always"),
            ("my_-image", "IfNotPresent"),
            // A registry name may carry upper case; the path may not.
            ("Registry.Example.com/app", "Always"),
            ("registry.example.com/App", "IfNotPresent"),
        ];
        for (image, policy) in cases {
            assert_eq!(default_pull_policy(image), policy, "image {image:?}");
        }
    }
}
