//! Leader election with a coordination.k8s.io/v1 Lease, so that one agent
//! of the fleet writes status, not every node. The holder renews the lease
//! every `renew_every`; another agent takes it over once it has seen no
//! renewal for `duration` (measured on its own clock from when it observed
//! the lease change, so clock skew between nodes does not matter), or at
//! once when the holder releases it on shutdown.
use std::time::{Duration, Instant};

use ::kube::{
    api::{Api, PostParams},
    Client,
};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use tokio::{sync::watch, task::JoinHandle};

/// Where the lease is and who we are.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique per agent: the node name (plus the pod name when known).
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

/// Errors of one election round (logged; the next round retries).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: Box<::kube::Error>,
    },
}

/// The election task. `is_leader` follows the lease.
pub struct Election {
    pub is_leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Election {
    pub fn spawn(client: Client, settings: LeaseSettings) -> Self {
        let (leader_tx, is_leader) = watch::channel(false);
        let (stop, mut stop_rx) = watch::channel(false);
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let task = tokio::spawn(async move {
            let mut state = Observed::default();
            loop {
                let leading = match round(&api, &settings, &mut state).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "lease round failed");
                        // Without a successful renewal for a whole lease
                        // duration, another agent may have taken over.
                        *leader_tx.borrow()
                            && state
                                .renewed
                                .is_some_and(|t| t.elapsed() < settings.duration)
                    }
                };
                if leading != *leader_tx.borrow() {
                    tracing::info!(identity = %settings.identity, leading, "status-writer lease");
                }
                leader_tx.send_replace(leading);
                tokio::select! {
                    _ = tokio::time::sleep(settings.renew_every) => {}
                    _ = stop_rx.changed() => break,
                }
            }
            if *leader_tx.borrow() {
                leader_tx.send_replace(false);
                if let Err(e) = release(&api, &settings).await {
                    tracing::warn!(error = %e, "releasing the status-writer lease");
                } else {
                    tracing::info!(identity = %settings.identity, "status-writer lease released");
                }
            }
        });
        Self {
            is_leader,
            stop,
            task,
        }
    }

    /// Stops renewing and releases the lease if held.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What this agent last saw of the lease.
#[derive(Debug, Default)]
struct Observed {
    resource_version: Option<String>,
    /// When the lease last changed, by our clock.
    changed_at: Option<Instant>,
    /// When we last renewed it.
    renewed: Option<Instant>,
}

fn api_err(settings: &LeaseSettings) -> impl Fn(::kube::Error) -> LeaseError + '_ {
    move |e| LeaseError::Api {
        namespace: settings.namespace.clone(),
        name: settings.name.clone(),
        source: Box::new(e),
    }
}

fn is_conflict(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 409)
}

/// One acquire-or-renew attempt: whether we hold the lease afterwards.
async fn round(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    seen: &mut Observed,
) -> Result<bool, LeaseError> {
    let now = MicroTime(Timestamp::now());
    let duration_secs = settings.duration.as_secs().max(1) as i32;
    let Some(mut lease) = api
        .get_opt(&settings.name)
        .await
        .map_err(api_err(settings))?
    else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                seen.renewed = Some(Instant::now());
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(api_err(settings)(e)),
        };
    };
    if lease.metadata.resource_version != seen.resource_version {
        seen.resource_version = lease.metadata.resource_version.clone();
        seen.changed_at = Some(Instant::now());
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let ours = holder.as_deref() == Some(settings.identity.as_str());
    let their_duration =
        Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64);
    let expired = seen.changed_at.is_none_or(|t| t.elapsed() > their_duration);
    if !ours && holder.is_some() && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(now);
    // The update carries the resourceVersion we read: if another agent wrote
    // in between, we get 409 and stay a follower.
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(l) => {
            seen.resource_version = l.metadata.resource_version;
            seen.changed_at = Some(Instant::now());
            seen.renewed = Some(Instant::now());
            Ok(true)
        }
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(api_err(settings)(e)),
    }
}

/// Gives the lease up so a follower takes over without waiting for expiry.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) -> Result<(), LeaseError> {
    let Some(mut lease) = api
        .get_opt(&settings.name)
        .await
        .map_err(api_err(settings))?
    else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = None;
    api.replace(&settings.name, &PostParams::default(), &lease)
        .await
        .map_err(api_err(settings))?;
    Ok(())
}
