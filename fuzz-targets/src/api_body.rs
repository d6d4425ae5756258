//! Request bodies as the API server decodes them: JSON, YAML and Kubernetes protobuf, then
//! typed as the kind they name under every `fieldValidation` mode.

use keelson_apiserver::fuzzing::{decode_body, decode_protobuf};

/// `application/json` create/update bodies.
pub(crate) fn json(data: &[u8]) {
    let _ = decode_body("application/json", data);
}

/// `application/yaml` bodies and apply configurations (`application/apply-patch+yaml`).
pub(crate) fn yaml(data: &[u8]) {
    let _ = decode_body("application/yaml", data);
    let _ = decode_body("application/apply-patch+yaml", data);
}

/// `application/vnd.kubernetes.protobuf` bodies.
pub(crate) fn protobuf(data: &[u8]) {
    let _ = decode_protobuf(data);
}
