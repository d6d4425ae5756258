//! Object-name validation, with the rules and messages of Kubernetes'
//! `k8s.io/apimachinery/pkg/util/validation` so clients see familiar errors.

/// Maximum length of a DNS-1123 label (namespaces, services).
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Maximum length of a DNS-1123 subdomain (most object names).
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

/// Why a name is not valid. `Display` gives the message Kubernetes uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a name is required")]
    Empty,
    /// The name is longer than the kind of name allows.
    #[error("must be no more than {max} characters")]
    TooLong { max: usize },
    /// A DNS-1123 label has a character or shape it may not have.
    #[error(
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
         and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
         regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    )]
    InvalidLabel,
    /// A DNS-1123 subdomain has a character or shape it may not have.
    #[error(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
         or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
         regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )]
    InvalidSubdomain,
}

/// Validates a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn validate_dns1123_label(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > DNS1123_LABEL_MAX_LEN {
        return Err(NameError::TooLong {
            max: DNS1123_LABEL_MAX_LEN,
        });
    }
    if is_label(name) {
        Ok(())
    } else {
        Err(NameError::InvalidLabel)
    }
}

/// Validates a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn validate_dns1123_subdomain(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        return Err(NameError::TooLong {
            max: DNS1123_SUBDOMAIN_MAX_LEN,
        });
    }
    if name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(NameError::InvalidSubdomain)
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without a length limit (subdomain parts have none of their own).
fn is_label(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_accept_what_kubernetes_accepts() {
        for ok in ["a", "0", "my-name", "123-abc", "a-b-c", &"x".repeat(63)] {
            assert_eq!(validate_dns1123_label(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn labels_reject_what_kubernetes_rejects() {
        assert_eq!(validate_dns1123_label(""), Err(NameError::Empty));
        assert_eq!(
            validate_dns1123_label(&"x".repeat(64)),
            Err(NameError::TooLong { max: 63 })
        );
        for bad in ["-a", "a-", "A", "a.b", "a_b", "ä", " a"] {
            assert_eq!(
                validate_dns1123_label(bad),
                Err(NameError::InvalidLabel),
                "{bad}"
            );
        }
    }

    #[test]
    fn subdomains_accept_dotted_labels() {
        for ok in ["example.com", "a.b.c", "kube-system", "x1.y-2.z3"] {
            assert_eq!(validate_dns1123_subdomain(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn subdomains_reject_bad_shapes_and_lengths() {
        for bad in [".a", "a.", "a..b", "a.-b", "A.b", "a b"] {
            assert_eq!(
                validate_dns1123_subdomain(bad),
                Err(NameError::InvalidSubdomain),
                "{bad}"
            );
        }
        assert_eq!(
            validate_dns1123_subdomain(&"a".repeat(254)),
            Err(NameError::TooLong { max: 253 })
        );
    }

    #[test]
    fn messages_match_kubernetes() {
        assert!(
            NameError::InvalidLabel
                .to_string()
                .starts_with("a lowercase RFC 1123 label must consist of")
        );
        assert_eq!(
            NameError::TooLong { max: 63 }.to_string(),
            "must be no more than 63 characters"
        );
    }
}
