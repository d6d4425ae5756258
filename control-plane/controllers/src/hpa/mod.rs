//! The HorizontalPodAutoscaler controller (kube-controller-manager's `horizontalpodautoscaling`,
//! `pkg/controller/podautoscaler`): every sync period, each autoscaling/v2 HPA reads its target's
//! `scale` subresource, the pods the scale selects and their `metrics.k8s.io/v1beta1`
//! PodMetrics, lets [`plan::decide`] compute the replica count, writes the scale when it
//! changes, then the HPA's status and Events. Resource and ContainerResource metrics are
//! computed; Pods, Object and External metrics need a custom or external metrics API, which
//! keelson does not serve, so they set `ScalingActive=False` with upstream's reasons.

pub mod calc;
pub mod plan;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::{
    autoscaling::{v1::Scale, v2::HorizontalPodAutoscaler},
    core::v1::Pod,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Recorder, Reporter},
        watcher,
    },
};

use self::{
    calc::{PodUsage, Settings},
    plan::{History, Observed},
};
use crate::{ApiContext, Result, job::record};

/// kube-controller-manager's `--horizontal-pod-autoscaler-sync-period` default.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);

struct Ctx {
    client: Client,
    recorder: Recorder,
    settings: Settings,
    sync_period: Duration,
    /// Per `namespace/name`: the recommendations and scale events of earlier passes.
    history: Mutex<HashMap<String, History>>,
    /// Per `namespace/name`: when the last pass ran and the generation it saw.
    last_pass: Mutex<HashMap<String, (std::time::Instant, Option<i64>)>>,
}

/// Runs the controller, every HPA synced each `sync_period`.
pub async fn run(client: Client, sync_period: Duration) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        watcher::Config::default(),
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "horizontal-pod-autoscaler".into(),
            instance: None,
        },
    );
    let ctx = Arc::new(Ctx {
        client,
        recorder,
        settings: Settings::default(),
        sync_period,
        history: Mutex::new(HashMap::new()),
        last_pass: Mutex::new(HashMap::new()),
    });
    crate::drive(
        "horizontal-pod-autoscaler",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

/// The resource behind a scale target's kind: the kinds that have a `scale` subresource in
/// Kubernetes itself (upstream asks the REST mapper; custom resources are not looked up).
pub fn scale_resource(api_version: &str, kind: &str) -> Result<ApiResource, String> {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    if version.is_empty() || api_version.matches('/').count() > 1 {
        return Err(format!("unexpected GroupVersion string: {api_version}"));
    }
    let plural = match (group, kind) {
        ("apps", "Deployment") => "deployments",
        ("apps", "ReplicaSet") => "replicasets",
        ("apps", "StatefulSet") => "statefulsets",
        ("", "ReplicationController") => "replicationcontrollers",
        _ => return Err(format!("no matches for kind {kind:?} in group {group:?}")),
    };
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// The PodMetrics items of a `metrics.k8s.io/v1beta1` list, as the calculator reads them.
pub fn pod_usages(items: &[DynamicObject]) -> Vec<PodUsage> {
    items
        .iter()
        .filter_map(|item| {
            let timestamp = item
                .data
                .get("timestamp")?
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()?;
            let window = item
                .data
                .get("window")
                .and_then(|w| w.as_str())
                .and_then(calc::parse_go_duration)
                .unwrap_or(jiff::SignedDuration::from_mins(1));
            let containers = item
                .data
                .get("containers")
                .and_then(|c| c.as_array())
                .into_iter()
                .flatten()
                .map(|c| {
                    let name = c
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let usage: BTreeMap<String, i64> = c
                        .get("usage")
                        .and_then(|u| u.as_object())
                        .into_iter()
                        .flatten()
                        .filter_map(|(resource, value)| {
                            let q = keelson_api::quantity::Quantity::parse(value.as_str()?).ok()?;
                            Some((resource.clone(), q.milli_value()))
                        })
                        .collect();
                    (name, usage)
                })
                .collect();
            Some(PodUsage {
                name: item.name_any(),
                timestamp,
                window,
                containers,
            })
        })
        .collect()
}

/// Whether any metric is a resource metric (the others are not read from `metrics.k8s.io`).
fn wants_resource_metrics(hpa: &HorizontalPodAutoscaler) -> bool {
    hpa.spec
        .as_ref()
        .and_then(|s| s.metrics.as_ref())
        .is_none_or(|metrics| {
            metrics
                .iter()
                .any(|m| matches!(m.type_.as_str(), "Resource" | "ContainerResource"))
        })
}

async fn note_all(ctx: &Ctx, hpa: &HorizontalPodAutoscaler, notes: Vec<plan::Note>) {
    for note in notes {
        record(&ctx.recorder, hpa, note.warning, note.reason, note.message).await;
    }
}

/// Writes `status` when it differs from the HPA's: an update of the `status` subresource, as
/// upstream's (an HPA deleted meanwhile is no failure).
async fn write_status(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    status: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus,
) -> Result<()> {
    if hpa.status.as_ref() == Some(status) {
        return Ok(());
    }
    let namespace = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let mut updated = hpa.clone();
    updated.status = Some(status.clone());
    match Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &namespace)
        .replace_status(&name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if crate::is_status(&e, 404) => Ok(()),
        Err(e) => {
            record(
                &ctx.recorder,
                hpa,
                true,
                "FailedUpdateStatus",
                crate::error_chain(&e),
            )
            .await;
            Err(e).action(|| {
                format!("update the status of HorizontalPodAutoscaler {namespace}/{name}")
            })
        }
    }
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action> {
    let requeue = Action::requeue(ctx.sync_period);
    let namespace = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let key = format!("{namespace}/{name}");
    let Some(spec) = hpa.spec.as_ref() else {
        return Ok(requeue);
    };
    // One pass per sync period, as upstream's queue does: the HPA's own status writes (and
    // any other change but its spec's) wait for the next period.
    {
        let mut last = ctx.last_pass.lock().unwrap_or_else(|e| e.into_inner());
        let generation = hpa.metadata.generation;
        if let Some((at, seen)) = last.get(&key)
            && *seen == generation
            && let Some(left) = ctx.sync_period.checked_sub(at.elapsed())
            && !left.is_zero()
        {
            return Ok(Action::requeue(left));
        }
        last.insert(key.clone(), (std::time::Instant::now(), generation));
    }
    let target = &spec.scale_target_ref;
    let now = jiff::Timestamp::now();

    // The target's scale.
    let read = match scale_resource(target.api_version.as_deref().unwrap_or(""), &target.kind) {
        Ok(resource) => {
            let api =
                Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource);
            api.get_scale(&target.name)
                .await
                .map(|scale| (api, scale))
                .map_err(|e| crate::error_chain(&e))
        }
        Err(e) => Err(e),
    };
    let (scale_api, scale) = match read {
        Ok(read) => read,
        Err(error) => {
            let (status, note) = plan::scale_failed(&hpa, &error, now);
            tracing::warn!(hpa = %key, %error, "cannot read the scale target");
            note_all(&ctx, &hpa, vec![note]).await;
            write_status(&ctx, &hpa, &status).await?;
            return Ok(requeue);
        }
    };
    let observed_scale = plan::Scale {
        spec_replicas: scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        status_replicas: scale.status.as_ref().map_or(0, |s| s.replicas),
        selector: scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default(),
    };

    // The pods and their usage.
    let selector_ok = !observed_scale.selector.is_empty()
        && keelson_api::selectors::LabelSelector::parse(&observed_scale.selector).is_ok();
    let pods: Vec<Pod> = if selector_ok {
        Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default().labels(&observed_scale.selector))
            .await
            .map_err(|source| crate::Error::Api {
                action: format!("list the pods of HorizontalPodAutoscaler {key}"),
                source,
            })?
            .items
    } else {
        Vec::new()
    };
    let metrics: Result<Vec<PodUsage>, String> = if selector_ok && wants_resource_metrics(&hpa) {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
            "pods",
        );
        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource)
            .list(&ListParams::default().labels(&observed_scale.selector))
            .await
            .map(|list| pod_usages(&list.items))
            .map_err(|e| crate::error_chain(&e))
    } else {
        Ok(Vec::new())
    };

    // Decide, scale, report.
    let observed = Observed {
        hpa: &hpa,
        scale: &observed_scale,
        pods: &pods,
        metrics: &metrics,
        now,
    };
    let decision = {
        let mut histories = ctx.history.lock().unwrap_or_else(|e| e.into_inner());
        plan::decide(
            &observed,
            histories.entry(key.clone()).or_default(),
            &ctx.settings,
        )
    };
    if let Some(failure) = &decision.failure {
        tracing::warn!(hpa = %key, error = %failure, "cannot compute the desired replicas");
    }
    let update = if decision.rescale {
        let mut new_scale = Scale {
            metadata: scale.metadata.clone(),
            spec: scale.spec.clone(),
            status: None,
        };
        new_scale.spec.get_or_insert_default().replicas = Some(decision.desired);
        let result = scale_api
            .replace_scale(&target.name, &PostParams::default(), &new_scale)
            .await
            .map(drop)
            .map_err(|e| crate::error_chain(&e));
        match &result {
            Ok(()) => tracing::info!(
                hpa = %key,
                from = observed_scale.spec_replicas,
                to = decision.desired,
                reason = %decision.reason,
                "rescaled"
            ),
            Err(error) => tracing::warn!(hpa = %key, %error, "cannot rescale"),
        }
        Some(result)
    } else {
        None
    };
    let outcome = {
        let mut histories = ctx.history.lock().unwrap_or_else(|e| e.into_inner());
        decision.finish(
            update,
            spec.behavior.as_ref(),
            histories.entry(key.clone()).or_default(),
            &ctx.settings,
            jiff::Timestamp::now(),
        )
    };
    note_all(&ctx, &hpa, outcome.notes).await;
    write_status(&ctx, &hpa, &outcome.status).await?;
    Ok(requeue)
}
