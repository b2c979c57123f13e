//! WorkerPodActor: owns one worker pod from create to gone.
//!
//! A thin shell around [`Lifecycle`](crate::lifecycle::Lifecycle), which decides
//! everything: this actor feeds it what happens (API answers, watch updates handed on by
//! the Supervisor, messages, timers) and performs the actions it asks for (create, look
//! up, publish through the Supervisor, delete, arm timers). Kubernetes calls are retried
//! with capped, jittered backoff; a worker that still cannot make progress stops with an
//! error and the Supervisor restarts it, resuming from the pod's real state and the
//! decision it already reported.
//!
//! It knows its Supervisor only through [`WorkerLinks`]: recipients of the messages it
//! sends, so a test can stand in for the Supervisor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio::sync::{Semaphore, oneshot};
use tracing::{debug, info, warn};

use crate::lease::Fence;
use crate::ledger::WorkerStart;
use crate::lifecycle::{Action, Clock, CreateAnswer, Deadlines, DeleteAnswer, Input, Lifecycle};
use crate::messages::events::RecordWorkerEvent;
use crate::messages::supervisor::WorkerReport;
use crate::messages::worker::{Cancel, DeleteAllowed, DeleteStale, PodUpdate, Resync};
use crate::messages::{Outcome, WorkerFinished};
use crate::metrics::Metrics;
use crate::outcome;
use crate::pod_view::{self, PodView};
use crate::pods::{PodBuilder, Recipe, WorkerIdentity};
use crate::retry::{self, Backoff, ErrorClass};
use crate::settings::Settings;
use crate::telemetry::traces::{self, Kind, TraceSpan};

/// Attempts of one Kubernetes call before the worker gives up and lets supervision
/// restart it (about 30 s of backoff in all).
const API_ATTEMPTS: u32 = 8;
/// One Kubernetes call may take this long before it counts as a (transient) failure.
const API_TIMEOUT: Duration = Duration::from_secs(15);
/// A deleted pod that has not disappeared after this long is deleted again (the watch
/// may have missed the DELETED event, or the deletion may have been lost).
const DELETE_WATCHDOG: Duration = Duration::from_secs(120);
/// Retries of a create refused for quota: from 200 ms up to 30 s apart, until the
/// pending timeout ends the worker.
const QUOTA_BACKOFF: Backoff = Backoff::RESTART;

/// What every worker shares.
pub struct WorkerEnv {
    /// The worker pods' namespace; answers are read as views (no spec, no managed fields).
    pub pods: Api<PodView>,
    pub deadlines: Deadlines,
    pub metrics: Arc<Metrics>,
    /// `kubernetes.max_concurrent_creates` permits, one per create request in flight.
    pub create_slots: Arc<Semaphore>,
    /// Where the Supervisor sends worker outcomes to become Kubernetes Events; `None`
    /// when `kubernetes.events` is off.
    pub events: Option<Recipient<RecordWorkerEvent>>,
    /// Open while this replica leads: no create or delete is sent while it is closed.
    pub fence: Arc<Fence>,
    /// Builds the pod of a worker's next attempt after a disruption.
    pub builder: Arc<PodBuilder>,
}

impl WorkerEnv {
    pub fn new(pods: Api<Pod>, settings: &Settings, metrics: Arc<Metrics>) -> WorkerEnv {
        WorkerEnv {
            pods: pod_view::views(&pods),
            deadlines: Deadlines {
                pending_timeout: settings.worker.pending_timeout,
                image_pull_grace: settings.worker.image_pull_grace,
                max_disruption_retries: settings.worker.max_disruption_retries,
            },
            metrics,
            create_slots: Arc::new(Semaphore::new(
                settings.kubernetes.max_concurrent_creates as usize,
            )),
            events: None,
            fence: Arc::new(Fence::always_open()),
            builder: Arc::new(PodBuilder::default()),
        }
    }

    /// Builds later attempts' pods with `builder` (the configured templates and priority
    /// classes); without it a disrupted worker cannot be retried and ends `lost`.
    pub fn with_builder(mut self, builder: PodBuilder) -> WorkerEnv {
        self.builder = Arc::new(builder);
        self
    }

    /// With worker Events recorded through `events` (see
    /// [`event_recorder::start`](crate::actors::event_recorder::start)).
    pub fn with_events(mut self, events: Option<Recipient<RecordWorkerEvent>>) -> WorkerEnv {
        self.events = events;
        self
    }

    /// Creates and deletes only while `fence` is open (leader election).
    pub fn with_fence(mut self, fence: Arc<Fence>) -> WorkerEnv {
        self.fence = fence;
        self
    }
}

/// Where a worker reports to: its Supervisor in production, anything in tests.
pub struct WorkerLinks {
    /// Settled, gone, stopped.
    pub reports: Recipient<WorkerReport>,
    /// The result, answered once it is durable.
    pub results: Recipient<WorkerFinished>,
}

pub struct WorkerPodActor {
    lifecycle: Lifecycle,
    /// Which start of this worker this is; the Supervisor ignores stops of old ones.
    incarnation: u32,
    /// The actions the constructor asked for, performed once started.
    initial: Vec<Action>,
    /// The pod to create, while a create may still be sent.
    pod: Option<Arc<Pod>>,
    /// When the event was read, for `ottoscaler_pod_create_seconds`.
    read_at: Option<Instant>,
    links: Arc<WorkerLinks>,
    env: Arc<WorkerEnv>,
    timer: Option<SpawnHandle>,
    cancel_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// Why this incarnation failed, reported to the Supervisor when it stops.
    failure: Option<String>,
    /// The worker's span (when traces are exported), a child of its event's span, from
    /// create to the deletion accepted; the pod's `TRACEPARENT` is its context.
    span: Option<TraceSpan>,
    /// The trace id written on the result, with the span.
    trace_id: Option<String>,
}

impl WorkerPodActor {
    pub fn new(
        identity: WorkerIdentity,
        incarnation: u32,
        start: WorkerStart,
        delete_allowed: bool,
        links: Arc<WorkerLinks>,
        env: Arc<WorkerEnv>,
    ) -> Self {
        let clock = Clock::now();
        let (mut pod, mut read_at, mut span) = (None, None, None);
        let (mut lifecycle, mut initial) = match start {
            WorkerStart::Create {
                pod: p,
                read_at: r,
                built_at,
                trace,
                attempt,
            } => {
                span = trace.and_then(|parent| start_span(&identity, &parent));
                pod = Some(match &span {
                    Some(span) => {
                        let mut own = Pod::clone(&p);
                        crate::pods::set_env(&mut own, TRACEPARENT, span.context().to_string());
                        Arc::new(own)
                    }
                    None => p,
                });
                read_at = Some(r);
                Lifecycle::create_attempt(identity, env.deadlines, built_at, attempt, clock)
            }
            WorkerStart::Resume(resume) => {
                Lifecycle::resume(identity, env.deadlines, *resume, clock)
            }
            WorkerStart::CancelledBeforeCreation => {
                Lifecycle::cancelled_before_creation(identity, env.deadlines, clock)
            }
        };
        if delete_allowed {
            initial.extend(lifecycle.step(Input::DeleteAllowed, clock));
        }
        Self {
            lifecycle,
            incarnation,
            initial,
            pod,
            read_at,
            links,
            env,
            timer: None,
            cancel_waiters: Vec::new(),
            failure: None,
            trace_id: span
                .as_ref()
                .map(|s: &TraceSpan| s.context().trace_id_hex()),
            span,
        }
    }

    /// Feeds one input to the lifecycle and performs what it asks for.
    fn feed(&mut self, input: Input, ctx: &mut Context<Self>) {
        if self.failure.is_some() {
            return;
        }
        let actions = self.lifecycle.step(input, Clock::now());
        self.perform(actions, ctx);
    }

    fn perform(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        for action in actions {
            if self.failure.is_some() {
                return;
            }
            match action {
                Action::Create => self.create(ctx),
                Action::CreateAfter { attempt } => {
                    let delay = QUOTA_BACKOFF.delay(attempt);
                    debug!(pod = %self.lifecycle.pod_name(), task_id = %self.lifecycle.identity().task_id, ?delay, "create refused for quota; trying again");
                    ctx.run_later(delay, |act, ctx| act.feed(Input::CreateRetry, ctx));
                }
                Action::Lookup => self.lookup(ctx),
                Action::Publish { result, first } => {
                    if first {
                        info!(
                            pod = %self.lifecycle.pod_name(),
                            task_id = %self.lifecycle.identity().task_id,
                            outcome = %result.outcome,
                            exit_code = result.exit_code,
                            reason = result.reason.as_deref(),
                            "worker finished"
                        );
                    }
                    let mut result = *result;
                    result.trace_id = self.trace_id.clone();
                    if let Some(span) = &mut self.span {
                        describe_outcome(span, &result);
                    }
                    self.publish(result, ctx);
                }
                Action::PublishAfter { attempt } => {
                    let delay = Backoff::REDIS.delay(attempt);
                    warn!(pod = %self.lifecycle.pod_name(), task_id = %self.lifecycle.identity().task_id, ?delay, "result not published yet, retrying");
                    ctx.run_later(delay, |act, ctx| act.feed(Input::PublishRetry, ctx));
                }
                Action::Delete => self.delete(ctx),
                Action::ArmTimer(after) => {
                    self.cancel_timer(ctx);
                    self.timer = Some(ctx.run_later(after, |act, ctx| {
                        act.timer = None;
                        act.feed(Input::Tick, ctx);
                    }));
                }
                Action::CancelTimer => self.cancel_timer(ctx),
                Action::ArmDeleteWatchdog => {
                    ctx.run_later(DELETE_WATCHDOG, |act, ctx| {
                        if !act.lifecycle.is_done() {
                            warn!(pod = %act.lifecycle.pod_name(), task_id = %act.lifecycle.identity().task_id, "pod still not gone after deletion, deleting again");
                        }
                        act.feed(Input::DeleteWatchdog, ctx);
                    });
                }
                Action::Settled(result) => {
                    self.pod = None;
                    self.links.reports.do_send(WorkerReport::Settled {
                        pod: self.lifecycle.pod_name().to_string(),
                        result,
                    });
                }
                Action::AnswerCancels(answer) => self.answer_cancels(answer),
                Action::Done => {
                    self.end_span();
                    self.links.reports.do_send(WorkerReport::Gone {
                        pod: self.lifecycle.pod_name().to_string(),
                    });
                    ctx.stop();
                }
                Action::RecordStart(start) => self.env.metrics.pod_started(
                    start.template.as_deref(),
                    start.priority.as_deref(),
                    start.queue_wait,
                    start.split.scheduling,
                    start.split.starting,
                ),
                Action::Fail(reason) => self.fail(reason, ctx),
                Action::StartAttempt {
                    attempt,
                    previous,
                    delete_previous,
                    reason,
                    recipe,
                } => self.start_attempt(attempt, previous, delete_previous, reason, recipe, ctx),
            }
        }
    }

    /// The pod `previous` was disrupted: builds attempt `attempt`'s pod, tells the
    /// Supervisor (before the create is sent, so the watch's view of the new pod finds
    /// this worker), deletes `previous` when nobody else does, and goes on to create.
    fn start_attempt(
        &mut self,
        attempt: u32,
        previous: String,
        delete_previous: bool,
        reason: String,
        recipe: Option<Box<Recipe>>,
        ctx: &mut Context<Self>,
    ) {
        let built_at = jiff::Timestamp::now();
        let identity = self.lifecycle.identity().clone();
        let built = match recipe {
            Some(recipe) => self
                .env
                .builder
                .attempt(&identity, attempt, &recipe, built_at),
            None => Err("the disrupted pod does not say how it was built".into()),
        };
        let mut pod = match built {
            Ok(pod) => pod,
            Err(why) => {
                warn!(pod = %previous, task_id = %identity.task_id, %reason, %why, "pod disrupted and cannot be retried");
                let disruption = reason;
                return self.feed(Input::AttemptImpossible { disruption, why }, ctx);
            }
        };
        info!(pod = %previous, next = %self.lifecycle.pod_name(), task_id = %identity.task_id, attempt, %reason, "pod disrupted; running the worker again in a new pod");
        if let Some(span) = &self.span {
            crate::pods::set_env(&mut pod, TRACEPARENT, span.context().to_string());
        }
        let pod = Arc::new(pod);
        self.pod = Some(pod.clone());
        // pod_create_seconds measures event read -> first create, not a retry.
        self.read_at = None;
        self.links.reports.do_send(WorkerReport::Retrying {
            previous: previous.clone(),
            attempt,
            pod,
            built_at,
        });
        if delete_previous {
            self.delete_stale(previous, ctx);
        }
        self.feed(Input::AttemptBuilt { built_at }, ctx);
    }

    /// Deletes an earlier attempt's pod, best effort: a failure is logged (the pod is
    /// found again, and deleted, when ottoscaler next lists it).
    fn delete_stale(&mut self, name: String, ctx: &mut Context<Self>) {
        let task_id = self.lifecycle.identity().task_id.clone();
        let call = self.delete_call(name.clone());
        let fut = async move {
            match call.await {
                Ok(_) => debug!(pod = %name, %task_id, "earlier attempt's pod deleted"),
                Err(CallError::Api(e)) if retry::status_code(&e) == Some(404) => {}
                Err(e) => {
                    warn!(pod = %name, %task_id, error = %e, "could not delete an earlier attempt's pod")
                }
            }
        };
        ctx.spawn(fut.into_actor(self));
    }

    fn cancel_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
    }

    /// Sends the create request within one of the shared create slots.
    fn create(&mut self, ctx: &mut Context<Self>) {
        let Some(pod) = self.pod.clone() else {
            return self.fail("no pod to create (restarted without it)".into(), ctx);
        };
        let pods = self.env.pods.clone();
        let slots = self.env.create_slots.clone();
        let fence = self.env.fence.clone();
        let name = self.lifecycle.pod_name().to_string();
        let task_id = self.lifecycle.identity().task_id.clone();
        let params = PostParams::default();
        let fut = async move {
            // The wait for a slot is outside the calls' timeouts. The semaphore is never
            // closed; should it be, creating without a slot is still correct.
            let _slot = slots.acquire_owned().await.ok();
            // Boxed: a worker waiting for its slot holds a small future, not the call's.
            Box::pin(call_with_retry(&fence, &name, &task_id, "create", || {
                pod_view::create(&pods, &params, &pod)
            }))
            .await
        };
        // ctx.spawn, not wait: watch updates and cancels keep flowing during the call.
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let answer = match res {
                Ok(_) => {
                    if let Some(read_at) = act.read_at {
                        act.env.metrics.pod_created(read_at.elapsed());
                    }
                    debug!(pod = %act.lifecycle.pod_name(), task_id = %act.lifecycle.identity().task_id, "pod created");
                    CreateAnswer::Created
                }
                Err(CallError::Api(e)) if retry::status_code(&e) == Some(409) => {
                    info!(pod = %act.lifecycle.pod_name(), task_id = %act.lifecycle.identity().task_id, "pod already exists, adopting it");
                    CreateAnswer::AlreadyExists
                }
                Err(CallError::Api(e)) if retry::is_quota_exceeded(&e) => {
                    CreateAnswer::QuotaExceeded(retry::describe(&e))
                }
                Err(CallError::Api(e)) => {
                    let reason = retry::describe(&e);
                    warn!(pod = %act.lifecycle.pod_name(), task_id = %act.lifecycle.identity().task_id, %reason, "pod rejected by the API server");
                    CreateAnswer::Rejected(reason)
                }
                Err(CallError::Fenced) => return act.fenced("create"),
                Err(e) => CreateAnswer::Failed(e.to_string()),
            };
            act.feed(Input::CreateAnswered(answer), ctx);
        }));
    }

    /// Looks the pod up (after a restart without a watch view, or a watch gap).
    fn lookup(&mut self, ctx: &mut Context<Self>) {
        let pods = self.env.pods.clone();
        let name = self.lifecycle.pod_name().to_string();
        let task_id = self.lifecycle.identity().task_id.clone();
        let fence = self.env.fence.clone();
        let fut = async move {
            call_with_retry(&fence, &name, &task_id, "get", || pods.get_opt(&name)).await
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let input = match res {
                Err(CallError::Fenced) => return act.fenced("get"),
                Ok(Some(pod)) => Input::Observed(Arc::new(outcome::observe(&Pod::from(pod)))),
                Ok(None) => Input::Vanished,
                Err(e) => Input::LookupFailed(e.to_string()),
            };
            act.feed(input, ctx);
        }));
    }

    /// Hands the result to the Supervisor, which publishes it; answered once durable.
    fn publish(&mut self, result: WorkerFinished, ctx: &mut Context<Self>) {
        let send = self.links.results.send(result);
        ctx.spawn(send.into_actor(self).map(|res, act, ctx| match res {
            Ok(answer) => act.feed(
                Input::PublishAnswered(answer.map_err(|e| e.to_string())),
                ctx,
            ),
            Err(e) => act.fail(format!("the Supervisor did not take the result: {e}"), ctx),
        }));
    }

    /// The DELETE of pod `name`, retried and fenced like every call of the worker.
    fn delete_call(
        &self,
        name: String,
    ) -> impl std::future::Future<Output = Result<(), CallError>> + 'static {
        let pods = self.env.pods.clone();
        let task_id = self.lifecycle.identity().task_id.clone();
        let params = DeleteParams::default();
        let fence = self.env.fence.clone();
        async move {
            call_with_retry(&fence, &name, &task_id, "delete", || {
                pods.delete(&name, &params)
            })
            .await
            .map(|_| ())
        }
    }

    fn delete(&mut self, ctx: &mut Context<Self>) {
        let fut = self.delete_call(self.lifecycle.pod_name().to_string());
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let answer = match res {
                Ok(_) => {
                    debug!(pod = %act.lifecycle.pod_name(), task_id = %act.lifecycle.identity().task_id, "pod deletion accepted");
                    act.end_span();
                    DeleteAnswer::Accepted
                }
                Err(CallError::Api(e)) if retry::status_code(&e) == Some(404) => {
                    act.end_span();
                    DeleteAnswer::NotFound
                }
                Err(CallError::Fenced) => return act.fenced("delete"),
                Err(e) => DeleteAnswer::Failed(e.to_string()),
            };
            act.feed(Input::DeleteAnswered(answer), ctx);
        }));
    }

    /// Ends the worker's span (at most once).
    fn end_span(&mut self) {
        if let Some(span) = self.span.take() {
            span.end();
        }
    }

    /// The leadership fence closed before `verb` was sent: nothing is sent, and the
    /// worker waits as it is. The process exits right after the fence closes; the next
    /// leader adopts the pod.
    fn fenced(&mut self, verb: &str) {
        warn!(pod = %self.lifecycle.pod_name(), task_id = %self.lifecycle.identity().task_id, verb, "not the leader any more; not sent");
    }

    fn answer_cancels(&mut self, answer: Result<(), String>) {
        for waiter in self.cancel_waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Gives up this incarnation; the Supervisor restarts it with backoff.
    fn fail(&mut self, reason: String, ctx: &mut Context<Self>) {
        warn!(pod = %self.lifecycle.pod_name(), task_id = %self.lifecycle.identity().task_id, %reason, "worker failed");
        self.failure = Some(reason);
        ctx.stop();
    }
}

impl Actor for WorkerPodActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let initial = std::mem::take(&mut self.initial);
        self.perform(initial, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.answer_cancels(Err("worker stopped".into()));
        let done = self.lifecycle.is_done();
        self.links.reports.do_send(WorkerReport::Stopped {
            pod: self.lifecycle.pod_name().to_string(),
            incarnation: self.incarnation,
            error: (!done).then(|| self.failure.clone().unwrap_or_else(|| "stopped".into())),
        });
    }
}

impl Handler<PodUpdate> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, msg: PodUpdate, ctx: &mut Self::Context) {
        let input = match msg {
            PodUpdate::Seen(obs) => Input::Observed(obs),
            PodUpdate::Gone(name) if name == self.lifecycle.pod_name() => Input::Vanished,
            // An earlier attempt's pod went: nothing to do with the current one.
            PodUpdate::Gone(_) => return,
        };
        self.feed(input, ctx);
    }
}

impl Handler<DeleteStale> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteStale, ctx: &mut Self::Context) {
        if msg.pod != self.lifecycle.pod_name() {
            self.delete_stale(msg.pod, ctx);
        }
    }
}

impl Handler<Resync> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, _msg: Resync, ctx: &mut Self::Context) {
        self.feed(Input::Resync, ctx);
    }
}

impl Handler<DeleteAllowed> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, _msg: DeleteAllowed, ctx: &mut Self::Context) {
        self.feed(Input::DeleteAllowed, ctx);
    }
}

impl Handler<Cancel> for WorkerPodActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        // Answered by the lifecycle's AnswerCancels: once the result is durable and the
        // pod's deletion accepted (or it is gone, or never existed).
        self.cancel_waiters.push(tx);
        self.feed(Input::Cancel, ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("worker stopped".into())) })
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::messages::worker::InjectFailure> for WorkerPodActor {
    type Result = ();

    fn handle(&mut self, msg: crate::messages::worker::InjectFailure, ctx: &mut Self::Context) {
        self.fail(format!("injected failure: {}", msg.reason), ctx);
    }
}

/// The environment variable a worker's pod gets its span's context in (W3C `traceparent`).
pub const TRACEPARENT: &str = "TRACEPARENT";

/// Opens a worker's span under its event's span; `None` when traces are off.
fn start_span(
    identity: &WorkerIdentity,
    parent: &crate::telemetry::TraceParent,
) -> Option<TraceSpan> {
    let attributes = vec![
        opentelemetry::KeyValue::new("k8s.pod.name", identity.pod_name()),
        opentelemetry::KeyValue::new("ottoscaler.task_id", identity.task_id.clone()),
        opentelemetry::KeyValue::new("ottoscaler.event_id", identity.event_id.clone()),
        opentelemetry::KeyValue::new("ottoscaler.worker_index", i64::from(identity.index)),
    ];
    traces::start(
        "ottoscaler.worker",
        Kind::Internal,
        Some(parent),
        attributes,
    )
}

/// The result on the worker's span: outcome, exit code and reason; failed unless it
/// succeeded or was cancelled.
fn describe_outcome(span: &mut TraceSpan, result: &WorkerFinished) {
    span.set("ottoscaler.outcome", result.outcome.as_str());
    if let Some(code) = result.exit_code {
        span.set("ottoscaler.exit_code", i64::from(code));
    }
    if let Some(reason) = &result.reason {
        span.set("ottoscaler.reason", reason.clone());
    }
    if !matches!(result.outcome, Outcome::Succeeded | Outcome::Cancelled) {
        span.fail(format!("worker {}", result.outcome));
    }
}

/// Why a Kubernetes call finally failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{}", retry::describe(.0))]
    Api(kube::Error),
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    /// The leadership fence was closed: the call was not sent.
    #[error("not the leader: the call was not sent")]
    Fenced,
}

/// Runs one Kubernetes call with a timeout, retrying transient failures (429, 5xx,
/// timeouts, connection errors) with capped, jittered backoff. Permanent API errors
/// come back at once as `CallError::Api` for the caller to judge (404, 409, 422...).
/// Every attempt checks the leadership fence first: once it is closed nothing more is
/// sent (`CallError::Fenced`), not even a retry.
async fn call_with_retry<T, F, Fut>(
    fence: &Fence,
    pod: &str,
    task_id: &str,
    verb: &str,
    mut op: F,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = String::new();
    for attempt in 0..API_ATTEMPTS {
        if !fence.is_open() {
            return Err(CallError::Fenced);
        }
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
        debug!(%pod, %task_id, verb, error = %last, ?delay, "transient Kubernetes error, retrying");
        tokio::time::sleep(delay).await;
    }
    Err(CallError::Exhausted {
        attempts: API_ATTEMPTS,
        last,
    })
}
