//! WorkerPodActor: owns one worker pod from create to gone.
//!
//! create -> watch (updates come from the Supervisor, which owns the one shared watch)
//! -> outcome -> result published (through the Supervisor) -> delete, once the event is
//! acknowledged -> gone. Kubernetes calls are retried with capped, jittered backoff; a
//! worker that still cannot make progress stops with an error and the Supervisor
//! restarts it, resuming from the pod's real state and the decision it already reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio::sync::{Semaphore, oneshot};
use tracing::{debug, info, warn};

use crate::actors::supervisor::Supervisor;
use crate::messages::supervisor::{WorkerCreated, WorkerGone, WorkerStopped};
use crate::messages::worker::{Cancel, DeleteAllowed, InjectFailure, PodUpdate, Resync};
use crate::messages::{Outcome, PodObservation, PodPhase, WorkerFinished};
use crate::metrics::Metrics;
use crate::outcome::{self, Decision, Timing};
use crate::pods::WorkerIdentity;
use crate::retry::{self, Backoff, ErrorClass};
use crate::settings::Settings;

/// Attempts of one Kubernetes call before the worker gives up and lets supervision
/// restart it (about 30 s of backoff in all).
const API_ATTEMPTS: u32 = 8;
/// One Kubernetes call may take this long before it counts as a (transient) failure.
const API_TIMEOUT: Duration = Duration::from_secs(15);
/// A deleted pod that has not disappeared after this long is looked up again (the watch
/// may have missed the DELETED event, or the deletion may have been lost).
const DELETE_WATCHDOG: Duration = Duration::from_secs(120);

/// What every worker shares.
pub struct WorkerEnv {
    pub pods: Api<Pod>,
    pub pending_timeout: Duration,
    pub image_pull_grace: Duration,
    pub metrics: Arc<Metrics>,
    /// `kubernetes.max_concurrent_creates` permits, one per create request in flight.
    pub create_slots: Arc<Semaphore>,
}

impl WorkerEnv {
    pub fn new(pods: Api<Pod>, settings: &Settings, metrics: Arc<Metrics>) -> WorkerEnv {
        WorkerEnv {
            pods,
            pending_timeout: settings.worker.pending_timeout,
            image_pull_grace: settings.worker.image_pull_grace,
            metrics,
            create_slots: Arc::new(Semaphore::new(
                settings.kubernetes.max_concurrent_creates as usize,
            )),
        }
    }
}

/// How a worker begins.
pub enum Start {
    /// Create this pod (a new worker of a scale_up). `read_at` is when the event was read.
    /// The Supervisor keeps the same pod until the create settles, for a restart.
    Create { pod: Arc<Pod>, read_at: Instant },
    /// Take over an existing pod: adopted at start, or after a restart.
    Resume(Box<Resume>),
}

/// What a worker that takes over an existing pod starts from.
pub struct Resume {
    /// The watch's latest view of the pod (None: look it up).
    pub observation: Option<PodObservation>,
    /// A result an earlier incarnation already reported, so the decision is never taken
    /// twice (it is published again; publication is idempotent).
    pub reported: Option<WorkerFinished>,
    /// A scale_down cancelled this worker.
    pub cancelled: bool,
}

pub struct WorkerPodActor {
    identity: WorkerIdentity,
    pod_name: String,
    /// Which start of this worker this is; the Supervisor ignores stops of old ones.
    incarnation: u32,
    start: Option<Start>,
    supervisor: Addr<Supervisor>,
    env: Arc<WorkerEnv>,
    /// The event's entry is acknowledged: the pod may be deleted once reported.
    delete_allowed: bool,
    /// When the pod was created (wall clock), for the pending timeout and duration.
    created_at: Option<jiff::Timestamp>,
    /// When the worker started waiting for its pod (monotonic), when `created_at` is unknown.
    started: Instant,
    last: Option<PodObservation>,
    /// Since when the container waits on an image error.
    image_error_since: Option<Instant>,
    /// The outcome, once decided; with the time it was decided.
    finished: Option<WorkerFinished>,
    published: bool,
    publishing: bool,
    delete_requested: bool,
    /// A DELETE is waiting for its answer: the worker must not stop (and drop the
    /// request's connection) even if the watch already saw the pod go.
    delete_in_flight: bool,
    /// The API server accepted our delete request.
    delete_accepted: bool,
    pod_gone: bool,
    /// The pod's create request has settled (created, found, or rejected for good).
    settled: bool,
    cancel_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    timer: Option<SpawnHandle>,
    /// Why this incarnation failed, reported to the Supervisor when it stops.
    failure: Option<String>,
    done: bool,
}

impl WorkerPodActor {
    pub fn new(
        identity: WorkerIdentity,
        incarnation: u32,
        start: Start,
        supervisor: Addr<Supervisor>,
        env: Arc<WorkerEnv>,
        delete_allowed: bool,
    ) -> Self {
        Self {
            pod_name: identity.pod_name(),
            identity,
            incarnation,
            start: Some(start),
            supervisor,
            env,
            delete_allowed,
            created_at: None,
            started: Instant::now(),
            last: None,
            image_error_since: None,
            finished: None,
            published: false,
            publishing: false,
            delete_requested: false,
            delete_in_flight: false,
            delete_accepted: false,
            pod_gone: false,
            settled: false,
            cancel_waiters: Vec::new(),
            timer: None,
            failure: None,
            done: false,
        }
    }

    /// Sends the create request; 409 AlreadyExists adopts the pod that is there.
    fn create(&mut self, pod: Arc<Pod>, read_at: Instant, ctx: &mut Context<Self>) {
        let pods = self.env.pods.clone();
        let worker = self.identity.clone();
        let params = PostParams::default();
        let slots = self.env.create_slots.clone();
        let fut = async move {
            // The wait for a slot is outside the calls' timeouts. The semaphore is never
            // closed; should it be, creating without a slot is still correct.
            let _slot = slots.acquire_owned().await.ok();
            // Boxed: a worker waiting for its slot holds a small future, not the call's.
            Box::pin(call_with_retry(&worker, "create", || {
                pods.create(&params, &pod)
            }))
            .await
        };
        // ctx.spawn, not wait: watch updates and cancels keep flowing during the call.
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let result = match res {
                Ok(_) => {
                    act.env.metrics.pod_created(read_at.elapsed());
                    debug!(pod = %act.pod_name, task_id = %act.identity.task_id, "pod created");
                    Ok(())
                }
                Err(CallError::Api(e)) if retry::status_code(&e) == Some(409) => {
                    info!(pod = %act.pod_name, task_id = %act.identity.task_id, "pod already exists, adopting it");
                    Ok(())
                }
                Err(CallError::Api(e)) if retry::classify(&e) == ErrorClass::Permanent => {
                    Err(retry::describe(&e))
                }
                Err(e) => return act.fail(format!("creating the pod failed: {e}"), ctx),
            };
            act.settled = true;
            act.supervisor.do_send(WorkerCreated {
                pod: act.pod_name.clone(),
                result: result.clone(),
            });
            match result {
                Ok(()) => act.evaluate(ctx),
                Err(reason) => {
                    warn!(pod = %act.pod_name, task_id = %act.identity.task_id, %reason, "pod rejected by the API server");
                    act.pod_gone = true;
                    act.finish(
                        Decision {
                            outcome: Outcome::Failed,
                            exit_code: None,
                            reason: Some(format!("pod could not be created: {reason}")),
                        },
                        ctx,
                    );
                }
            }
        }));
    }

    /// Looks the pod up (after a restart without a watch view, or a watch gap).
    fn resync(&mut self, ctx: &mut Context<Self>) {
        let pods = self.env.pods.clone();
        let worker = self.identity.clone();
        let name = self.pod_name.clone();
        let fut = async move { call_with_retry(&worker, "get", || pods.get_opt(&name)).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(pod) => act.observe(pod.as_ref().map(outcome::observe), ctx),
            Err(e) => act.fail(format!("looking up the pod failed: {e}"), ctx),
        }));
    }

    /// A new view of the pod (None: it is gone).
    fn observe(&mut self, observation: Option<PodObservation>, ctx: &mut Context<Self>) {
        match observation {
            Some(obs) => {
                if self.created_at.is_none() {
                    self.created_at = obs.created_at;
                }
                if outcome::has_image_error(&obs) {
                    self.image_error_since.get_or_insert_with(Instant::now);
                } else {
                    self.image_error_since = None;
                }
                self.settled = true;
                self.last = Some(obs);
                self.evaluate(ctx);
            }
            None => {
                self.pod_gone = true;
                if self.finished.is_none() {
                    let reason = if self.delete_requested {
                        "pod deleted before its outcome was known"
                    } else {
                        "pod disappeared without ottoscaler deleting it"
                    };
                    self.finish(
                        Decision {
                            outcome: Outcome::Lost,
                            exit_code: None,
                            reason: Some(reason.into()),
                        },
                        ctx,
                    );
                }
                self.answer_cancels(Ok(()));
                self.maybe_done(ctx);
            }
        }
    }

    /// Applies the outcome rules to what is known; arms a timer for the next deadline.
    fn evaluate(&mut self, ctx: &mut Context<Self>) {
        if self.finished.is_some() || !self.settled {
            return;
        }
        let pending_for = self.pending_for();
        let timing = Timing {
            pending_for,
            image_error_for: self.image_error_since.map(|s| s.elapsed()),
            pending_timeout: self.env.pending_timeout,
            image_pull_grace: self.env.image_pull_grace,
        };
        let obs = self.last.clone().unwrap_or_else(|| PodObservation {
            name: self.pod_name.clone(),
            task_id: None,
            worker_index: None,
            event_id: None,
            created_at: None,
            phase: PodPhase::Pending,
            pod_reason: None,
            waiting_reason: None,
            terminated: None,
            started_at: None,
            deleting: false,
        });
        // Deleted by someone else: lost, even if the kill made it Failed (exit 137),
        // unless it had already succeeded.
        let deleted_by_others =
            obs.deleting && !self.delete_requested && obs.phase != PodPhase::Succeeded;
        let decision = if deleted_by_others {
            Some(Decision {
                outcome: Outcome::Lost,
                exit_code: obs.terminated.as_ref().map(|t| t.exit_code),
                reason: Some("pod deleted by someone other than ottoscaler".into()),
            })
        } else {
            outcome::decide(&obs, &timing)
        };
        if let Some(decision) = decision {
            return self.finish(decision, ctx);
        }
        // Nothing yet: wake up at the next deadline that could decide it.
        let mut next: Option<Duration> = None;
        if obs.phase == PodPhase::Pending {
            next = Some(self.env.pending_timeout.saturating_sub(pending_for));
        }
        if let Some(waited) = timing.image_error_for {
            let left = self.env.image_pull_grace.saturating_sub(waited);
            next = Some(next.map_or(left, |n| n.min(left)));
        }
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(after) = next {
            // A few ms late rather than early, so the deadline has surely passed.
            let after = after + Duration::from_millis(5);
            self.timer = Some(ctx.run_later(after, |act, ctx| {
                act.timer = None;
                act.evaluate(ctx);
            }));
        }
    }

    fn pending_for(&self) -> Duration {
        match self.created_at {
            Some(created) => {
                let span = jiff::Timestamp::now().duration_since(created);
                Duration::try_from(span).unwrap_or(Duration::ZERO)
            }
            None => self.started.elapsed(),
        }
    }

    /// The outcome is decided: report it (once), then delete when allowed.
    fn finish(&mut self, decision: Decision, ctx: &mut Context<Self>) {
        if self.finished.is_some() {
            return;
        }
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let duration_ms = u64::try_from(self.pending_for().as_millis()).unwrap_or(u64::MAX);
        info!(
            pod = %self.pod_name,
            task_id = %self.identity.task_id,
            outcome = %decision.outcome,
            exit_code = decision.exit_code,
            reason = decision.reason.as_deref(),
            "worker finished"
        );
        self.finished = Some(WorkerFinished {
            task_id: self.identity.task_id.clone(),
            event_id: self.identity.event_id.clone(),
            pod: self.pod_name.clone(),
            worker_index: self.identity.index,
            outcome: decision.outcome,
            exit_code: decision.exit_code,
            reason: decision.reason,
            duration_ms,
            finished_at: jiff::Timestamp::now().to_string(),
        });
        self.publish(0, ctx);
    }

    /// Hands the result to the Supervisor (which publishes it); retries until it is
    /// durable: a result is never dropped.
    fn publish(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        let Some(result) = self.finished.clone() else {
            return;
        };
        self.publishing = true;
        let send = self.supervisor.send(result);
        ctx.spawn(send.into_actor(self).map(move |res, act, ctx| {
            act.publishing = false;
            match res {
                Ok(Ok(())) => {
                    act.published = true;
                    act.maybe_delete(ctx);
                    act.maybe_done(ctx);
                }
                Ok(Err(e)) => {
                    let delay = Backoff::REDIS.delay(attempt);
                    warn!(pod = %act.pod_name, task_id = %act.identity.task_id, error = %e, ?delay, "result not published yet, retrying");
                    ctx.run_later(delay, move |act, ctx| act.publish(attempt + 1, ctx));
                }
                Err(e) => act.fail(format!("the Supervisor did not take the result: {e}"), ctx),
            }
        }));
    }

    /// Deletes the pod once the result is published and the event acknowledged.
    fn maybe_delete(&mut self, ctx: &mut Context<Self>) {
        if !self.published || !self.delete_allowed || self.delete_requested || self.pod_gone {
            return;
        }
        self.delete_requested = true;
        self.delete_in_flight = true;
        let pods = self.env.pods.clone();
        let worker = self.identity.clone();
        let name = self.pod_name.clone();
        let params = DeleteParams::default();
        let fut =
            async move { call_with_retry(&worker, "delete", || pods.delete(&name, &params)).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.delete_in_flight = false;
            act.deletion_answered(res, ctx);
        }));
    }

    /// The DELETE request settled: wait for the pod to go (with a watchdog), or judge
    /// the failure.
    fn deletion_answered<T>(&mut self, res: Result<T, CallError>, ctx: &mut Context<Self>) {
        match res {
            Ok(_) => {
                debug!(pod = %self.pod_name, task_id = %self.identity.task_id, "pod deletion accepted");
                self.delete_accepted = true;
                self.answer_cancels(Ok(()));
                ctx.run_later(DELETE_WATCHDOG, |act, ctx| {
                    if !act.pod_gone {
                        warn!(pod = %act.pod_name, task_id = %act.identity.task_id, "pod still not gone after deletion, looking it up");
                        act.delete_requested = false;
                        act.delete_accepted = false;
                        act.resync(ctx);
                        act.maybe_delete(ctx);
                    }
                });
                // The watch may have seen the pod go before this answer came.
                self.maybe_done(ctx);
            }
            Err(CallError::Api(e)) if retry::status_code(&e) == Some(404) => {
                self.observe(None, ctx)
            }
            Err(e) => {
                let reason = format!("deleting the pod failed: {e}");
                self.answer_cancels(Err(reason.clone()));
                self.fail(reason, ctx);
            }
        }
    }

    fn answer_cancels(&mut self, answer: Result<(), String>) {
        for waiter in self.cancel_waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Reported and gone: tell the Supervisor, then stop.
    fn maybe_done(&mut self, ctx: &mut Context<Self>) {
        if self.done || !self.published || !self.pod_gone || self.delete_in_flight {
            return;
        }
        self.done = true;
        self.supervisor.do_send(WorkerGone {
            pod: self.pod_name.clone(),
        });
        ctx.stop();
    }

    /// Gives up this incarnation; the Supervisor restarts it with backoff.
    fn fail(&mut self, reason: String, ctx: &mut Context<Self>) {
        warn!(pod = %self.pod_name, task_id = %self.identity.task_id, %reason, "worker failed");
        self.failure = Some(reason);
        ctx.stop();
    }
}

impl Actor for WorkerPodActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.start.take() {
            Some(Start::Create { pod, read_at }) => self.create(pod, read_at, ctx),
            Some(Start::Resume(resume)) => {
                let Resume {
                    observation,
                    reported,
                    cancelled,
                } = *resume;
                self.settled = true;
                if let Some(result) = reported {
                    // Decided by an earlier incarnation: publish again (idempotent) and go on.
                    self.finished = Some(result);
                    self.publish(0, ctx);
                } else if cancelled {
                    self.delete_allowed = true;
                }
                if let Some(obs) = &observation
                    && obs.deleting
                {
                    // Only ottoscaler deletes reported pods; an earlier incarnation did.
                    self.delete_requested = self.finished.is_some() || cancelled;
                }
                match observation {
                    Some(obs) => self.observe(Some(obs), ctx),
                    None => self.resync(ctx),
                }
                if cancelled && self.finished.is_none() {
                    self.finish(cancelled_decision(), ctx);
                }
            }
            None => {}
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.answer_cancels(Err("worker stopped".into()));
        self.supervisor.do_send(WorkerStopped {
            pod: self.pod_name.clone(),
            incarnation: self.incarnation,
            error: (!self.done).then(|| self.failure.clone().unwrap_or_else(|| "stopped".into())),
        });
    }
}

impl Handler<PodUpdate> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, msg: PodUpdate, ctx: &mut Self::Context) {
        self.observe(msg.observation, ctx);
    }
}

impl Handler<Resync> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, _msg: Resync, ctx: &mut Self::Context) {
        self.resync(ctx);
    }
}

impl Handler<DeleteAllowed> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, _msg: DeleteAllowed, ctx: &mut Self::Context) {
        self.delete_allowed = true;
        self.maybe_delete(ctx);
    }
}

impl Handler<Cancel> for WorkerPodActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        if self.pod_gone {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.cancel_waiters.push(tx);
        // A scale_down is its own acknowledgement: the pod may go once reported.
        self.delete_allowed = true;
        if self.finished.is_none() {
            self.finish(cancelled_decision(), ctx);
        } else {
            self.maybe_delete(ctx);
        }
        if self.delete_accepted {
            self.answer_cancels(Ok(()));
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("worker stopped".into())) })
    }
}

impl Handler<InjectFailure> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, msg: InjectFailure, ctx: &mut Self::Context) {
        self.fail(format!("injected failure: {}", msg.reason), ctx);
    }
}

/// The decision for a worker removed by a scale_down.
fn cancelled_decision() -> Decision {
    Decision {
        outcome: Outcome::Cancelled,
        exit_code: None,
        reason: Some("scale_down".into()),
    }
}

/// Why a Kubernetes call finally failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{}", retry::describe(.0))]
    Api(kube::Error),
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
}

/// Runs one Kubernetes call with a timeout, retrying transient failures (429, 5xx,
/// timeouts, connection errors) with capped, jittered backoff. Permanent API errors
/// come back at once as `CallError::Api` for the caller to judge (404, 409, 422...).
async fn call_with_retry<T, F, Fut>(
    worker: &WorkerIdentity,
    verb: &str,
    mut op: F,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = String::new();
    for attempt in 0..API_ATTEMPTS {
        match tokio::time::timeout(API_TIMEOUT, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if retry::classify(&e) == ErrorClass::Permanent => {
                return Err(CallError::Api(e));
            }
            Ok(Err(e)) => last = retry::describe(&e),
            Err(_) => last = format!("no answer within {API_TIMEOUT:?}"),
        }
        if attempt + 1 == API_ATTEMPTS {
            break;
        }
        let delay = Backoff::KUBE.delay(attempt);
        debug!(pod = %worker.pod_name(), task_id = %worker.task_id, verb, error = %last, ?delay, "transient Kubernetes error, retrying");
        tokio::time::sleep(delay).await;
    }
    Err(CallError::Exhausted {
        attempts: API_ATTEMPTS,
        last,
    })
}
