//! LeaderElector: competes for the `coordination.k8s.io/v1` Lease and opens the
//! [`Fence`] only while this replica holds it (docs/contract.md, "High availability").
//!
//! ```text
//!  every retry_period (standby: + up to 20% jitter), or at once when the watched Lease
//!  is released:
//!    GET lease ─► decide ─► Create / Renew / Acquire: CREATE or REPLACE (resourceVersion)
//!                       └► HoldOff: remember the version, look again later
//!  success: fence open until attempt start + renew_deadline
//!  leading, fence closed (no renewal within renew_deadline), or someone else holds it:
//!    close the fence, tell the app: the process exits and Kubernetes starts a fresh
//!    standby
//! ```
//!
//! Why exit rather than compete again in process: a leader that lost the Lease has
//! workers, in-flight events and a reader loop of its leadership; a fresh process has
//! none of them and becomes a plain standby, the state every other path already tests.
//! The fence stops every action before the exit, so the exit's timing does not matter.
//!
//! The decision is [`crate::lease::decide`], a pure function; this actor only does the
//! API calls, each with a timeout. A standby also watches the one Lease (by name), so a
//! released Lease is taken over within a round trip instead of the next poll.
//!
//! It runs on an actix Arbiter (thread) of its own with a Kubernetes client made there
//! (`app.rs`), and its requests skip the client-side rate limit: neither a busy main
//! thread nor a burst of pod requests can hold a renewal past the renew deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use rand::Rng;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::lease::{Decision, Fence, LeaseRecord, Observation, decide};
use crate::messages::leader::{LeadershipAcquired, ReleaseLease};
use crate::metrics::Metrics;
use crate::retry;
use crate::settings::HaSettings;

/// The longest one Lease request may take; a renewal that hangs counts as failed (the
/// fence closes by itself at the renew deadline anyway).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of the release write (a renewal's write may race with it once).
const RELEASE_ATTEMPTS: u32 = 3;

/// What the elector needs to know.
#[derive(Debug, Clone)]
pub struct ElectorConfig {
    pub lease_name: String,
    /// This replica's identity: its Redis consumer name (the pod name in-cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectorConfig {
    pub fn from_settings(ha: &HaSettings, identity: String) -> ElectorConfig {
        ElectorConfig {
            lease_name: ha.lease_name.clone(),
            identity,
            lease_duration: ha.lease_duration,
            renew_deadline: ha.renew_deadline,
            retry_period: ha.retry_period,
        }
    }

    /// The wait before the next look: `retry_period`, and for a standby up to 20% more,
    /// so that standbys started together do not ask in step.
    fn next_look(&self, leading: bool) -> Duration {
        if leading {
            self.retry_period
        } else {
            self.retry_period
                .mul_f64(1.0 + rand::rng().random_range(0.0..0.2))
        }
    }
}

/// Competes for the Lease; opens the fence while it holds it.
pub struct LeaderElector {
    leases: Api<Lease>,
    config: Arc<ElectorConfig>,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    /// Told when this replica becomes the leader (the Supervisor, the reader).
    followers: Vec<Recipient<LeadershipAcquired>>,
    /// Told once when leadership is lost: the app then exits.
    lost: Option<oneshot::Sender<String>>,
    leading: bool,
    /// An attempt is running (at most one at a time).
    busy: bool,
    /// Look again as soon as the running attempt ends (the watch saw a change).
    again: bool,
    /// The Lease was released (shutdown): no more attempts.
    released: bool,
    /// When the Lease's current version was first seen, for expiry.
    observed: Option<Observation>,
    /// The holder last logged, so every change is logged once.
    last_holder: Option<String>,
    next: Option<SpawnHandle>,
    /// The Lease as this replica last wrote it, while it leads: a renewal replaces it
    /// at once (one request, not a GET first). A conflict drops it.
    own: Option<Lease>,
}

/// What one attempt found and did.
enum Attempt {
    /// This replica holds the Lease now; `acquired`: it just took it (with the previous
    /// holder), rather than renewing.
    Leading {
        acquired: Option<Option<String>>,
        lease: Box<Lease>,
    },
    /// Another replica holds it (`None`: nobody, it is being created).
    Standby {
        holder: Option<String>,
        observation: Option<Observation>,
        expires_in: Duration,
    },
    /// Another replica wrote between our read and our write.
    Conflict,
}

impl LeaderElector {
    pub fn new(
        leases: Api<Lease>,
        config: ElectorConfig,
        fence: Arc<Fence>,
        metrics: Arc<Metrics>,
        followers: Vec<Recipient<LeadershipAcquired>>,
        lost: oneshot::Sender<String>,
    ) -> LeaderElector {
        LeaderElector {
            leases,
            config: Arc::new(config),
            fence,
            metrics,
            followers,
            lost: Some(lost),
            leading: false,
            busy: false,
            again: false,
            released: false,
            observed: None,
            last_holder: None,
            next: None,
            own: None,
        }
    }

    /// One look at the Lease, and the write it calls for.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.released {
            return;
        }
        if self.busy {
            self.again = true;
            return;
        }
        if let Some(handle) = self.next.take() {
            ctx.cancel_future(handle);
        }
        if self.lose_if_past_deadline(ctx) {
            return;
        }
        self.busy = true;
        let started = Instant::now();
        let leases = self.leases.clone();
        let config = self.config.clone();
        let observed = self.observed.clone();
        let own = self.own.take().filter(|_| self.leading);
        let fut = async move {
            tokio::time::timeout(CALL_TIMEOUT * 2, attempt(&leases, &config, observed, own))
                .await
                .unwrap_or_else(|_| Err("no answer in time".to_string()))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            if act.released {
                return;
            }
            act.on_attempt(res, started, ctx);
            if std::mem::take(&mut act.again) && !act.leading {
                act.tick(ctx);
            } else {
                act.schedule(ctx);
            }
        }));
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.released || self.next.is_some() {
            return;
        }
        let delay = self.config.next_look(self.leading);
        self.next = Some(ctx.run_later(delay, |act, ctx| {
            act.next = None;
            act.tick(ctx);
        }));
    }

    fn on_attempt(
        &mut self,
        res: Result<Attempt, String>,
        started: Instant,
        ctx: &mut Context<Self>,
    ) {
        match res {
            Ok(Attempt::Leading { acquired, lease }) => {
                self.observed = None;
                self.own = Some(*lease);
                let took = started.elapsed();
                if took > self.config.retry_period {
                    warn!(lease = %self.config.lease_name, ?took, "slow Lease write");
                }
                self.fence.open_until(started + self.config.renew_deadline);
                self.log_holder(Some(self.config.identity.clone()));
                if let Some(previous) = acquired.filter(|_| !self.leading) {
                    self.become_leader(previous);
                } else if !self.leading {
                    // Renewed a Lease this identity held already (a restarted process).
                    self.become_leader(Some(self.config.identity.clone()));
                }
            }
            Ok(Attempt::Standby {
                holder,
                observation,
                expires_in,
            }) => {
                self.observed = observation;
                if self.leading {
                    return self.lose(
                        format!(
                            "the Lease is held by {}",
                            holder.as_deref().unwrap_or("nobody")
                        ),
                        ctx,
                    );
                }
                debug!(holder = holder.as_deref(), ?expires_in, "standing by");
                self.log_holder(holder);
            }
            Ok(Attempt::Conflict) => {
                self.observed = None;
                debug!("another replica wrote the Lease first; looking again");
            }
            Err(e) => {
                self.metrics.lease_error();
                warn!(lease = %self.config.lease_name, error = %e, leading = self.leading, "Lease request failed; retrying");
                self.lose_if_past_deadline(ctx);
            }
        }
    }

    fn become_leader(&mut self, previous: Option<String>) {
        self.leading = true;
        self.metrics.set_leader(true);
        self.metrics.leader_transition();
        info!(
            lease = %self.config.lease_name,
            holder = %self.config.identity,
            previous = previous.as_deref(),
            "acquired the Lease; this replica leads now"
        );
        for follower in &self.followers {
            follower.do_send(LeadershipAcquired {
                previous: previous.clone(),
            });
        }
    }

    /// Logs the Lease's holder whenever it changes.
    fn log_holder(&mut self, holder: Option<String>) {
        if self.last_holder != holder {
            info!(lease = %self.config.lease_name, holder = holder.as_deref(), previous = self.last_holder.as_deref(), "Lease holder changed");
            self.last_holder = holder;
        }
    }

    /// A leader whose fence closed (no renewal within the renew deadline) has lost.
    fn lose_if_past_deadline(&mut self, ctx: &mut Context<Self>) -> bool {
        if !self.leading || self.fence.is_open() {
            return false;
        }
        self.lose(
            format!(
                "the Lease was not renewed within ha.renew_deadline ({})",
                humantime::format_duration(self.config.renew_deadline)
            ),
            ctx,
        );
        true
    }

    /// Leadership is lost: close the fence at once and tell the app, which exits.
    fn lose(&mut self, why: String, ctx: &mut Context<Self>) {
        self.fence.close();
        if self.leading {
            self.leading = false;
            self.metrics.set_leader(false);
        }
        self.released = true;
        if let Some(handle) = self.next.take() {
            ctx.cancel_future(handle);
        }
        error!(lease = %self.config.lease_name, reason = %why, "lost leadership: stopped reading, creating, deleting and publishing; exiting so that a fresh standby starts");
        if let Some(lost) = self.lost.take() {
            let _ = lost.send(why);
        }
    }

    /// Watches the one Lease, so a release is noticed within a round trip.
    fn watch(&self, ctx: &mut Context<Self>) {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.config.lease_name));
        let stream =
            watcher(self.leases.clone(), config)
                .default_backoff()
                .map(|event| match event {
                    Ok(Event::Apply(lease) | Event::InitApply(lease)) => {
                        LeaseSeen::Changed(record_of(&lease).holder().is_none())
                    }
                    Ok(Event::Delete(_)) => LeaseSeen::Changed(true),
                    Ok(_) => LeaseSeen::Other,
                    Err(e) => LeaseSeen::Failed(e.to_string()),
                });
        ctx.add_stream(stream);
    }
}

/// What the Lease watch reports (the watch only speeds up the polling).
enum LeaseSeen {
    /// The Lease changed; `true`: it is free (released or deleted).
    Changed(bool),
    Other,
    Failed(String),
}

impl StreamHandler<LeaseSeen> for LeaderElector {
    fn handle(&mut self, seen: LeaseSeen, ctx: &mut Self::Context) {
        match seen {
            LeaseSeen::Changed(true) if !self.leading => self.tick(ctx),
            LeaseSeen::Failed(e) => debug!(error = %e, "Lease watch failed; polling goes on"),
            _ => {}
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.released {
            self.watch(ctx);
        }
    }
}

/// Get (unless `own`, the leader's last write, stands for it), decide, write.
async fn attempt(
    leases: &Api<Lease>,
    config: &ElectorConfig,
    observed: Option<Observation>,
    own: Option<Lease>,
) -> Result<Attempt, String> {
    let current = match own {
        Some(lease) => Some(lease),
        None => get(leases, &config.lease_name).await?,
    };
    let record = current.as_ref().map(record_of);
    let (observation, unchanged_for) = match &record {
        Some(r) => {
            let (o, age) =
                Observation::unchanged_for(observed.as_ref(), &r.resource_version, Instant::now());
            (Some(o), age)
        }
        None => (None, Duration::ZERO),
    };
    let now = MicroTime(jiff::Timestamp::now());
    let duration_secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let (write, acquired) = match (
        decide(record.as_ref(), &config.identity, unchanged_for),
        current,
    ) {
        (Decision::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            let created =
                tokio::time::timeout(CALL_TIMEOUT, leases.create(&PostParams::default(), &lease))
                    .await
                    .map_err(|_| "CREATE: no answer in time".to_string())?;
            return match created {
                Ok(lease) => Ok(Attempt::Leading {
                    acquired: Some(None),
                    lease: Box::new(lease),
                }),
                Err(e) if retry::status_code(&e) == Some(409) => Ok(Attempt::Conflict),
                Err(e) => Err(format!("CREATE: {}", retry::describe(&e))),
            };
        }
        (Decision::HoldOff { holder, expires_in }, _) => {
            return Ok(Attempt::Standby {
                holder: Some(holder),
                observation,
                expires_in,
            });
        }
        (Decision::Renew, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(duration_secs);
            (lease, None)
        }
        (Decision::Acquire { previous }, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(config.identity.clone());
            spec.lease_duration_seconds = Some(duration_secs);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            (lease, Some(previous))
        }
        // decide() only renews or acquires a Lease that exists.
        (Decision::Renew | Decision::Acquire { .. }, None) => return Ok(Attempt::Conflict),
    };
    match replace(leases, &config.lease_name, &write).await? {
        Some(lease) => Ok(Attempt::Leading {
            acquired,
            lease: Box::new(lease),
        }),
        None => Ok(Attempt::Conflict),
    }
}

/// GET of the Lease, with a timeout.
async fn get(leases: &Api<Lease>, name: &str) -> Result<Option<Lease>, String> {
    tokio::time::timeout(CALL_TIMEOUT, leases.get_opt(name))
        .await
        .map_err(|_| "GET: no answer in time".to_string())?
        .map_err(|e| format!("GET: {}", retry::describe(&e)))
}

/// REPLACE with the resourceVersion read: the Lease written, `Ok(None)` on a conflict
/// (someone wrote first).
async fn replace(leases: &Api<Lease>, name: &str, lease: &Lease) -> Result<Option<Lease>, String> {
    let res = tokio::time::timeout(
        CALL_TIMEOUT,
        leases.replace(name, &PostParams::default(), lease),
    )
    .await
    .map_err(|_| "REPLACE: no answer in time".to_string())?;
    match res {
        Ok(written) => Ok(Some(written)),
        Err(e) if retry::status_code(&e) == Some(409) => Ok(None),
        Err(e) => Err(format!("REPLACE: {}", retry::describe(&e))),
    }
}

/// What [`decide`] needs of a Lease object.
fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.as_ref();
    LeaseRecord {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        duration: Duration::from_secs(
            spec.and_then(|s| s.lease_duration_seconds)
                .and_then(|d| u64::try_from(d).ok())
                .unwrap_or(0),
        ),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

/// Clears the holder (duration 1 s) if this identity holds the Lease: `Ok(false)` if it
/// does not. The first attempt replaces `own` (the last write) directly; a conflict
/// (a renewal was in flight) reads the Lease again.
async fn release(
    leases: &Api<Lease>,
    config: &ElectorConfig,
    mut own: Option<Lease>,
) -> Result<bool, String> {
    for _ in 0..RELEASE_ATTEMPTS {
        let current = match own.take() {
            Some(lease) => Some(lease),
            None => get(leases, &config.lease_name).await?,
        };
        let Some(mut lease) = current else {
            return Ok(false);
        };
        if record_of(&lease).holder() != Some(config.identity.as_str()) {
            return Ok(false);
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if replace(leases, &config.lease_name, &lease).await?.is_some() {
            return Ok(true);
        }
    }
    Err(format!(
        "REPLACE: conflicts on {RELEASE_ATTEMPTS} attempts in a row"
    ))
}

impl Actor for LeaderElector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(
            lease = %self.config.lease_name,
            identity = %self.config.identity,
            lease_duration = ?self.config.lease_duration,
            renew_deadline = ?self.config.renew_deadline,
            retry_period = ?self.config.retry_period,
            "standing by for the Lease"
        );
        self.metrics.set_leader(false);
        // The fence closes by itself at the renew deadline; this notices it even while
        // a renewal hangs, so the process exits promptly.
        ctx.run_interval(self.config.retry_period, |act, ctx| {
            act.lose_if_past_deadline(ctx);
        });
        self.watch(ctx);
        self.tick(ctx);
    }
}

impl Handler<ReleaseLease> for LeaderElector {
    type Result = ResponseFuture<Result<bool, String>>;

    fn handle(&mut self, msg: ReleaseLease, ctx: &mut Self::Context) -> Self::Result {
        self.released = true;
        if let Some(handle) = self.next.take() {
            ctx.cancel_future(handle);
        }
        // Closed before the write: nothing acts once the Lease may be someone else's.
        self.fence.close();
        let was_leading = std::mem::replace(&mut self.leading, false);
        if !was_leading {
            return Box::pin(async { Ok(false) });
        }
        self.metrics.set_leader(false);
        let leases = self.leases.clone();
        let config = self.config.clone();
        let own = self.own.take();
        Box::pin(async move {
            let released = tokio::time::timeout(msg.timeout, release(&leases, &config, own))
                .await
                .unwrap_or_else(|_| Err("no answer in time".to_string()));
            match &released {
                Ok(true) => info!(lease = %config.lease_name, "released the Lease"),
                Ok(false) => info!(lease = %config.lease_name, "the Lease was not ours any more"),
                Err(e) => {
                    warn!(lease = %config.lease_name, error = %e, "could not release the Lease; a standby takes over once it expires")
                }
            }
            released
        })
    }
}
