//! Conversion webhooks: custom resources of a CRD with `spec.conversion.strategy: Webhook`
//! are converted between versions by POSTing a `ConversionReview` to the CRD's webhook, as
//! kube-apiserver's `webhookConverter` does.
//!
//! Objects are stored in the storage version. Reads convert what they return (one review for
//! a whole list page); writes keep the object in the request's shape while it is admitted,
//! defaulted and validated (with `apiVersion` set to the storage version, as the `None`
//! conversion does, so the rest of the write path is unchanged) and convert it right before
//! it is stored. Only objects whose `apiVersion` differs from the one wanted are sent.
//!
//! The webhook's answer is checked as kube checks it: the review's kind and version, the
//! request's uid, `result.status` `Success`, one object back per object sent, each in the
//! desired version with the same kind, name, namespace and uid. Of `metadata` only labels and
//! annotations are taken from the webhook; the rest is restored from the object sent.
//! Failures are 500 `InternalError` Statuses worded as kube words them
//! (`conversion webhook for <group>/<version>, Kind=<kind> failed: ...`).

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use keelson_store::Store;
use serde_json::{Value, json};

use super::Served;
use crate::{
    ApiError,
    admission::{call, matching::Endpoint},
    error::{Cause, Details},
    object::encode,
    request::Target,
};

/// How long one conversion call may take (kube's webhook client default).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The ConversionReview versions keelson speaks, in its order of preference.
const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// `spec.conversion.webhook` of a CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Webhook {
    endpoint: Endpoint,
    ca_bundle: Option<Vec<u8>>,
    review_versions: Vec<String>,
}

impl Webhook {
    /// The webhook of `crd`, when its conversion strategy is `Webhook`.
    pub(crate) fn of(crd: &Value) -> Option<Self> {
        let conversion = crd.pointer("/spec/conversion")?;
        if conversion.get("strategy").and_then(Value::as_str) != Some("Webhook") {
            return None;
        }
        let webhook = conversion.get("webhook").unwrap_or(&Value::Null);
        let config = webhook.get("clientConfig").unwrap_or(&Value::Null);
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let endpoint = match (text(config, "url"), config.get("service")) {
            (Some(url), _) => Endpoint::Url(url),
            (None, Some(service)) if service.is_object() => Endpoint::Service {
                namespace: text(service, "namespace").unwrap_or_default(),
                name: text(service, "name").unwrap_or_default(),
                path: text(service, "path").unwrap_or_default(),
                port: service
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(443),
            },
            // Validation refuses a webhook with neither; it fails when called.
            _ => Endpoint::Url(String::new()),
        };
        let ca_bundle = text(config, "caBundle").and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        });
        let review_versions = webhook
            .get("conversionReviewVersions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        Some(Self {
            endpoint,
            ca_bundle,
            review_versions,
        })
    }
}

/// A conversion failure: kube's message, served as a 500 `InternalError` with the message as
/// its one cause (kube's `NewInternalError`).
fn failure(message: String) -> ApiError {
    tracing::warn!(%message, "custom resource conversion");
    ApiError {
        code: StatusCode::INTERNAL_SERVER_ERROR,
        reason: "InternalError",
        message: format!("Internal error occurred: {message}"),
        details: Some(Box::new(Details {
            causes: vec![Cause {
                reason: String::new(),
                message,
                field: String::new(),
            }],
            ..Details::default()
        })),
    }
}

/// The webhook of the CRD serving `target`, when it converts through one.
fn webhook_of(target: &Target) -> Option<&Served> {
    target.custom.as_deref().filter(|c| c.webhook.is_some())
}

/// A stored object as `target`'s clients see it.
pub(crate) async fn present(
    store: &dyn Store,
    target: &Target,
    stored: Value,
) -> Result<Value, ApiError> {
    let mut all = present_all(store, target, vec![stored]).await?;
    all.pop()
        .ok_or_else(|| failure("conversion returned no object".to_owned()))
}

/// Stored objects as `target`'s clients see them: one review for all of them.
pub(crate) async fn present_all(
    store: &dyn Store,
    target: &Target,
    stored: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let resource = target.resource;
    match webhook_of(target) {
        Some(served) => convert(store, served, stored, &resource.api_version()).await,
        None => Ok(stored.into_iter().map(|o| resource.present(o)).collect()),
    }
}

/// A stored object in the form the write path works on (the request version's fields, the
/// storage version's `apiVersion`).
pub(crate) async fn load(
    store: &dyn Store,
    target: &Target,
    stored: Value,
) -> Result<Value, ApiError> {
    if webhook_of(target).is_none() {
        return Ok(stored);
    }
    let presented = present(store, target, stored).await?;
    Ok(target.resource.to_storage(presented))
}

/// What the write path worked on, converted to the storage version and encoded to be stored.
pub(crate) async fn encode_for_storage(
    store: &dyn Store,
    target: &Target,
    working: &Value,
) -> Result<Bytes, ApiError> {
    let Some(served) = webhook_of(target) else {
        return Ok(encode(working));
    };
    let resource = target.resource;
    let desired = format!("{}/{}", resource.group, resource.storage_version);
    let presented = resource.present(working.clone());
    let converted = convert(store, served, vec![presented], &desired).await?;
    let stored = converted
        .first()
        .ok_or_else(|| failure("conversion returned no object".to_owned()))?;
    Ok(encode(stored))
}

/// `apiVersion` and `kind` of `object`, as Go prints a GroupVersionKind.
fn gvk(object: &Value) -> String {
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
    format!("{}, Kind={}", text("apiVersion"), text("kind"))
}

/// Converts `objects` to `desired` (`group/version`) through `served`'s webhook.
async fn convert(
    store: &dyn Store,
    served: &Served,
    mut objects: Vec<Value>,
    desired: &str,
) -> Result<Vec<Value>, ApiError> {
    let Some(webhook) = served.webhook.as_deref() else {
        return Ok(objects);
    };
    // Objects already in `desired` are not sent, nor what is not this kind (a Status).
    let kind = served.resource.kind;
    let send = |o: &Value| {
        o.get("apiVersion").and_then(Value::as_str) != Some(desired)
            && o.get("kind").and_then(Value::as_str) == Some(kind)
    };
    let positions: Vec<usize> = (0..objects.len()).filter(|i| send(&objects[*i])).collect();
    let Some(first) = positions.first() else {
        return Ok(objects);
    };
    let from = gvk(&objects[*first]);
    let sent: Vec<Value> = positions.iter().map(|i| objects[*i].clone()).collect();
    // The first of the CRD's versions keelson speaks, as kube picks it.
    let review_version = webhook
        .review_versions
        .iter()
        .find_map(|v| REVIEW_VERSIONS.iter().find(|known| **known == v.as_str()))
        .ok_or_else(|| failure("no supported conversion review versions".to_owned()))?;
    let uid = uuid::Uuid::new_v4().to_string();
    let review = json!({
        "apiVersion": format!("apiextensions.k8s.io/{review_version}"),
        "kind": "ConversionReview",
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": sent},
    });
    let answer = call::post(
        store,
        &webhook.endpoint,
        webhook.ca_bundle.as_deref(),
        &review,
        TIMEOUT,
    )
    .await
    .map_err(|e| {
        let cause = e.0.strip_prefix("failed to call webhook: ").unwrap_or(&e.0);
        failure(format!("conversion webhook for {from} failed: {cause}"))
    })?;
    let converted = verify(&answer, review_version, &uid)
        .map_err(|cause| failure(format!("conversion webhook for {from} failed: {cause}")))?;
    if converted.len() != sent.len() {
        return Err(failure(format!(
            "conversion webhook for {from} returned {} objects, expected {}",
            converted.len(),
            sent.len()
        )));
    }
    // kube words the one-object case and the list case a little differently.
    let single = objects.len() == 1;
    for (n, (converted, original)) in converted.into_iter().zip(&sent).enumerate() {
        let checked = check_converted(original, converted, desired).map_err(|cause| {
            failure(if single {
                format!("conversion webhook for {from} returned invalid object: {cause}")
            } else {
                format!(
                    "conversion webhook for {from} returned invalid converted object at index \
                     {}: {cause}",
                    n + 1
                )
            })
        })?;
        objects[positions[n]] = checked;
    }
    Ok(objects)
}

/// The converted objects of a ConversionReview response, checked as kube checks them.
fn verify(answer: &Value, version: &str, uid: &str) -> Result<Vec<Value>, String> {
    fn text<'a>(v: &'a Value, key: &str) -> &'a str {
        v.get(key).and_then(Value::as_str).unwrap_or_default()
    }
    let expected = format!("apiextensions.k8s.io/{version}");
    // v1beta1 answers were never checked for kind or uid; kube keeps it so.
    let strict = version == "v1";
    if strict
        && (text(answer, "apiVersion") != expected || text(answer, "kind") != "ConversionReview")
    {
        return Err(format!(
            "expected webhook response of {expected}, Kind=ConversionReview, got {}",
            gvk(answer)
        ));
    }
    let Some(response) = answer.get("response").filter(|r| r.is_object()) else {
        return Err("no response provided".to_owned());
    };
    if strict && text(response, "uid") != uid {
        return Err(format!(
            "expected response.uid={uid:?}, got {:?}",
            text(response, "uid")
        ));
    }
    let result = response.get("result").unwrap_or(&Value::Null);
    let status = text(result, "status");
    if status != "Success" {
        let message = text(result, "message");
        return Err(if message.is_empty() {
            format!("response.result.status was '{status}', not 'Success'")
        } else {
            message.to_owned()
        });
    }
    Ok(response
        .get("convertedObjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// One converted object: in `desired`, the same object as `original`, with `original`'s
/// metadata except the labels and annotations the webhook returned.
fn check_converted(original: &Value, mut converted: Value, desired: &str) -> Result<Value, String> {
    let text = |v: &Value, key: &str| -> String {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let meta = |v: &Value, key: &str| -> String {
        v.get("metadata").map(|m| text(m, key)).unwrap_or_default()
    };
    let got = text(&converted, "apiVersion");
    if got != desired {
        return Err(format!(
            "invalid groupVersion (expected {desired}, received {got})"
        ));
    }
    let (kind, got_kind) = (text(original, "kind"), text(&converted, "kind"));
    if kind != got_kind {
        return Err(format!(
            "invalid kind (expected {kind}, received {got_kind})"
        ));
    }
    for (key, what) in [("name", "name"), ("namespace", "namespace"), ("uid", "UID")] {
        let (e, a) = (meta(original, key), meta(&converted, key));
        if e != a {
            return Err(format!("must have the same {what}: {e} != {a}"));
        }
    }
    let returned = match converted.get("metadata") {
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(format!(
                "invalid metadata of type {} in converted object",
                type_name(other)
            ));
        }
        None => return Err("missing metadata in converted object".to_owned()),
    };
    let mut metadata = original
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for field in ["labels", "annotations"] {
        match returned.get(field) {
            None | Some(Value::Null) => {
                metadata.remove(field);
            }
            Some(Value::Object(values)) => {
                if let Some((k, v)) = values.iter().find(|(_, v)| !v.is_string()) {
                    return Err(format!(
                        "metadata.{field}[{k}] must be a string, but is {} in converted object",
                        type_name(v)
                    ));
                }
                metadata.insert(field.to_owned(), Value::Object(values.clone()));
            }
            Some(other) => {
                return Err(format!(
                    "invalid metadata.{field} of type {} in converted object",
                    type_name(other)
                ));
            }
        }
    }
    if let Some(root) = converted.as_object_mut() {
        root.insert("metadata".to_owned(), Value::Object(metadata));
    }
    Ok(converted)
}

/// The Go type a JSON value decodes to, as kube's messages name it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget(api_version: &str, name: &str, size: Value) -> Value {
        json!({
            "apiVersion": api_version,
            "kind": "Widget",
            "metadata": {"name": name, "namespace": "default", "uid": "u1",
                         "resourceVersion": "7", "labels": {"a": "b"}},
            "spec": size,
        })
    }

    #[test]
    fn converted_objects_are_checked_and_keep_the_sent_metadata() {
        let original = widget("example.com/v1", "w", json!({"size": 3}));
        let mut back = widget("example.com/v2", "w", json!({"length": 3}));
        back["metadata"]["resourceVersion"] = json!("999");
        back["metadata"]["labels"] = json!({"c": "d"});
        let checked = check_converted(&original, back, "example.com/v2").expect("valid");
        assert_eq!(checked["metadata"]["resourceVersion"], "7");
        assert_eq!(checked["metadata"]["labels"], json!({"c": "d"}));
        assert_eq!(checked["spec"], json!({"length": 3}));

        for (back, message) in [
            (
                widget("example.com/v1", "w", json!({})),
                "invalid groupVersion (expected example.com/v2, received example.com/v1)",
            ),
            (
                widget("example.com/v2", "other", json!({})),
                "must have the same name: w != other",
            ),
            (
                json!({"apiVersion": "example.com/v2", "kind": "Gadget", "metadata": {}}),
                "invalid kind (expected Widget, received Gadget)",
            ),
            (
                json!({"apiVersion": "example.com/v2", "kind": "Widget"}),
                "must have the same name: w != ",
            ),
            (
                {
                    let mut w = widget("example.com/v2", "w", json!({}));
                    w["metadata"]["labels"] = json!({"n": 1});
                    w
                },
                "metadata.labels[n] must be a string, but is float64 in converted object",
            ),
        ] {
            assert_eq!(
                check_converted(&original, back, "example.com/v2"),
                Err(message.to_owned())
            );
        }
    }

    #[test]
    fn reviews_are_checked_as_kube_checks_them() {
        let review = |response: Value| json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "response": response});
        assert_eq!(
            verify(
                &review(
                    json!({"uid": "u", "result": {"status": "Success"}, "convertedObjects": [{"a": 1}]})
                ),
                "v1",
                "u"
            ),
            Ok(vec![json!({"a": 1})])
        );
        for (answer, message) in [
            (
                review(json!({"uid": "x", "result": {"status": "Success"}})),
                "expected response.uid=\"u\", got \"x\"",
            ),
            (
                review(json!({"uid": "u", "result": {"status": "Failure", "message": "no way"}})),
                "no way",
            ),
            (
                review(json!({"uid": "u", "result": {"status": "Failure"}})),
                "response.result.status was 'Failure', not 'Success'",
            ),
            (
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview"}),
                "no response provided",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Review", "response": {}}),
                "expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, \
                 got v1, Kind=Review",
            ),
        ] {
            assert_eq!(verify(&answer, "v1", "u"), Err(message.to_owned()));
        }
        // v1beta1 answers are not checked for their kind or uid, as in kube.
        assert_eq!(
            verify(
                &json!({"response": {"uid": "x", "result": {"status": "Success"}, "convertedObjects": []}}),
                "v1beta1",
                "u"
            ),
            Ok(Vec::new())
        );
    }

    #[test]
    fn webhooks_are_read_from_the_crd() {
        let crd = json!({"spec": {"conversion": {"strategy": "Webhook", "webhook": {
            "conversionReviewVersions": ["v1beta1", "v1"],
            "clientConfig": {"service": {"namespace": "ns", "name": "conv", "path": "/c"}},
        }}}});
        assert_eq!(
            Webhook::of(&crd),
            Some(Webhook {
                endpoint: Endpoint::Service {
                    namespace: "ns".to_owned(),
                    name: "conv".to_owned(),
                    path: "/c".to_owned(),
                    port: 443,
                },
                ca_bundle: None,
                review_versions: vec!["v1beta1".to_owned(), "v1".to_owned()],
            })
        );
        assert_eq!(
            Webhook::of(&json!({"spec": {"conversion": {"strategy": "None"}}})),
            None
        );
    }
}
