//! Supervisor: turns scale events into WorkerPodActors, one per pod, and supervises them.
//!
//! A shell around the [`Ledger`], which keeps the books and makes the decisions: this
//! actor spawns and messages workers, answers the events' senders, receives the one
//! shared pod watch and hands each pod's updates to its worker, adopts pods it finds at
//! start, restarts failed workers with backoff, and forwards each worker's result to the
//! results sink. It never talks to Kubernetes itself: the workers do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::join_all;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::actors::worker_pod::{WorkerEnv, WorkerLinks, WorkerPodActor};
use crate::ledger::{Admission, AfterStop, Ledger, Ready, Route, WorkerStart};
use crate::lifecycle::Resume;
use crate::messages::events::RecordWorkerEvent;
use crate::messages::leader::LeadershipAcquired;
use crate::messages::reader::IsEventPending;
use crate::messages::supervisor::{
    EventAccepted, EventAcknowledged, EventRefused, GetStatus, StopIntake, SupervisorStatus,
    WorkerReport,
};
use crate::messages::worker::{Cancel, DeleteAllowed, DeleteStale, PodUpdate, Resync};
use crate::messages::{PodObservation, PodWatchEvent, PublishError, ScaleEvent, WorkerFinished};
use crate::metrics::Metrics;
use crate::pods::{PodTemplate, WorkerIdentity, build_pod, place};
use crate::retry::Backoff;
use crate::scheduler::Rules;

pub use crate::ledger::MAX_RESTARTS;

/// How often the Supervisor asks again whether an adopted event is still pending.
const PENDING_RECHECK: Duration = Duration::from_secs(2);
/// After a watch error, readiness stays down until the watch shows an event again, or
/// until no further error came for this long. A watch that keeps failing (API server
/// gone, RBAC refusing `watch`) reports an error at least every 30 s (kube-runtime's
/// backoff cap), so it stays not ready; a recovered but quiet watch is ready again
/// after this hold.
const WATCH_FAILURE_HOLD: Duration = Duration::from_secs(75);

/// How often the gauges of waiting events and workers by priority and tenant are
/// refreshed from the books (cheap: one pass over the queue and the workers).
const SHARES_PERIOD: Duration = Duration::from_secs(2);

type Answer = Result<EventAccepted, EventRefused>;
type Responder = oneshot::Sender<Answer>;

/// What the Supervisor needs to run workers.
pub struct SupervisorConfig {
    /// Shared by every worker: the pods API and the worker timeouts.
    pub worker_env: Arc<WorkerEnv>,
    /// Resolved pod templates by name; events were validated against these names.
    pub templates: BTreeMap<String, PodTemplate>,
    /// `limits.max_workers`.
    pub max_workers: usize,
    /// `limits.settle_timeout`: how long a started event may take to become durable
    /// before its senders are told it stalled (the entry then stays pending).
    pub settle_timeout: Duration,
    /// The backoff between restarts of a failed worker ([`Backoff::RESTART`]; tests
    /// shorten it).
    pub restart_backoff: Backoff,
    /// Where results go (the results publisher, or a test collector).
    pub results: Recipient<WorkerFinished>,
    /// Scheduling: the policy, the caps, the classes' PriorityClasses, the read-ahead.
    pub rules: Rules,
    /// Asks whether an adopted pod's event is still pending in the stream; without one
    /// (actor tests without Redis) adopted events count as acknowledged.
    pub pending_checker: Option<Recipient<IsEventPending>>,
    pub metrics: Arc<Metrics>,
}

pub struct Supervisor {
    config: SupervisorConfig,
    ledger: Ledger<Addr<WorkerPodActor>, Responder>,
    /// How workers reach this actor; made when it starts.
    links: Option<Arc<WorkerLinks>>,
    /// The watch showed an event since its last error.
    watch_up: bool,
    /// When the watch last reported an error.
    last_watch_failure: Option<Instant>,
    /// `Some` while standing by (not the leader): the pods the watch shows, kept in
    /// memory and adopted when this replica becomes the leader. No worker runs and no
    /// event is taken meanwhile.
    standby: Option<BTreeMap<String, PodObservation>>,
    /// The one settle timer, set for the earliest started scale_up's deadline.
    settle_timer: Option<SpawnHandle>,
}

impl Supervisor {
    pub fn new(config: SupervisorConfig) -> Self {
        let ledger = Ledger::with_rules(config.max_workers, config.rules.clone());
        Self {
            config,
            ledger,
            links: None,
            watch_up: false,
            last_watch_failure: None,
            standby: None,
            settle_timer: None,
        }
    }

    /// A Supervisor of a replica that stands by: it follows the pod watch (so readiness
    /// and the pod list are warm) but adopts and runs nothing until
    /// [`LeadershipAcquired`].
    pub fn standby(config: SupervisorConfig) -> Self {
        Self {
            standby: Some(BTreeMap::new()),
            ..Self::new(config)
        }
    }

    /// While standing by: remember the watch's pods (the ledger only tracks the list).
    /// `true` if the event was consumed here.
    fn stand_by(&mut self, msg: &PodWatchEvent) -> bool {
        let Some(pods) = self.standby.as_mut() else {
            return false;
        };
        match msg {
            PodWatchEvent::Relisting => {
                pods.clear();
                self.ledger.relisting();
            }
            PodWatchEvent::Listed(obs) | PodWatchEvent::Applied(obs) => {
                pods.insert(obs.name.clone(), obs.clone());
            }
            PodWatchEvent::Deleted { name } => {
                pods.remove(name);
            }
            PodWatchEvent::ListDone => {
                if !self.ledger.synced {
                    info!(pods = pods.len(), "initial pod list done; standing by");
                }
                self.ledger.list_done();
                self.watch_up = true;
            }
            PodWatchEvent::Failed { .. } => return false,
        }
        true
    }

    fn update_gauge(&self) {
        self.config.metrics.set_workers_active(self.ledger.active());
    }

    /// Starts a worker actor and returns its address.
    fn spawn(
        &self,
        identity: WorkerIdentity,
        start: WorkerStart,
        incarnation: u32,
        ctx: &mut Context<Self>,
    ) -> Addr<WorkerPodActor> {
        let links = self.links.clone().unwrap_or_else(|| links_to(ctx));
        let delete_allowed = self.ledger.delete_allowed(&identity.event_id);
        WorkerPodActor::new(
            identity,
            incarnation,
            start,
            delete_allowed,
            links,
            self.config.worker_env.clone(),
        )
        .start()
    }

    fn start_worker(
        &mut self,
        identity: WorkerIdentity,
        start: WorkerStart,
        ctx: &mut Context<Self>,
    ) {
        let addr = self.spawn(identity.clone(), start.clone(), 0, ctx);
        self.ledger.add_worker(identity, addr, &start);
    }

    /// Starts the workers of a scale_up that goes now, and bounds the wait for it.
    fn start_up(&mut self, event: ScaleEvent, ctx: &mut Context<Self>) {
        let to_start = self.ledger.start_up(&event);
        let event_id = event.event_id.clone();
        if !to_start.is_empty() {
            let Some(template) = self.config.templates.get(&event.template).cloned() else {
                // Validation already checks the name; this guards a config reload race.
                let reason = format!("no pod template named {:?}", event.template);
                for r in self.ledger.expire(&event_id) {
                    let _ = r.send(Err(EventRefused::Kubernetes {
                        reason: reason.clone(),
                        pods_ok: 0,
                        pods_total: to_start.len(),
                    }));
                }
                return;
            };
            let built_at = jiff::Timestamp::now();
            let priority_class = self
                .config
                .rules
                .priority_class_names
                .get(&event.priority)
                .cloned();
            for identity in &to_start {
                let mut pod = build_pod(&template, identity, &event.metadata, built_at);
                place(
                    &mut pod,
                    &event.priority,
                    &event.tenant,
                    priority_class.as_deref(),
                );
                let start = WorkerStart::Create {
                    pod: Arc::new(pod),
                    read_at: event.read_at,
                    built_at,
                    trace: event.trace,
                    attempt: 1,
                };
                self.start_worker(identity.clone(), start, ctx);
            }
        }
        info!(%event_id, task_id = %event.task_id, new = to_start.len(), "scale_up started");
        self.ledger
            .settle_by(&event_id, Instant::now() + self.config.settle_timeout);
        self.answer_if_settled(&event.event_id);
        self.arm_settle_timer(ctx);
        self.update_gauge();
    }

    /// One timer for every started scale_up's settle timeout, set for the earliest
    /// (a timer each would be polled on every message the Supervisor gets: with the
    /// 10 min default, thousands of them).
    fn arm_settle_timer(&mut self, ctx: &mut Context<Self>) {
        if self.settle_timer.is_some() {
            return;
        }
        let Some(at) = self.ledger.next_settle_deadline() else {
            return;
        };
        let delay = at.saturating_duration_since(Instant::now());
        self.settle_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.settle_timer = None;
            let after = act.config.settle_timeout;
            for (event_id, waiting) in act.ledger.expire_due(Instant::now()) {
                warn!(%event_id, ?after, "scale_up not durable in time; its entry stays pending for a later delivery");
                for r in waiting {
                    let _ = r.send(Err(EventRefused::Stalled { after }));
                }
            }
            act.arm_settle_timer(ctx);
        }));
    }

    fn answer_if_settled(&mut self, event_id: &str) {
        if let Some((accepted, responders)) = self.ledger.complete(event_id) {
            answer_all(accepted, responders);
        }
    }

    /// Carries out a scale_down: cancels the chosen live workers and the chosen queued
    /// ones (started as workers that publish `cancelled` and make no pod), and answers
    /// once every one of them is durable and its pod's deletion accepted.
    fn scale_down(&mut self, event: ScaleEvent, responder: Responder, ctx: &mut Context<Self>) {
        let plan = self.ledger.scale_down(&event);
        let pods = plan.pods();
        let event_id = event.event_id.clone();
        if pods.is_empty() {
            info!(%event_id, task_id = %event.task_id, "scale_down: no unfinished workers for the task, nothing to do");
        } else {
            info!(%event_id, task_id = %event.task_id, pods = ?pods, "scale_down: cancelling workers");
        }
        for identity in plan.cancel_queued {
            self.start_worker(identity, WorkerStart::CancelledBeforeCreation, ctx);
        }
        let sends: Vec<_> = pods
            .iter()
            .filter_map(|name| self.ledger.handle(name))
            .map(|addr| addr.send(Cancel))
            .collect();
        self.update_gauge();
        ctx.spawn(
            async move {
                let answers = join_all(sends).await;
                let total = answers.len();
                let failures: Vec<String> = answers
                    .into_iter()
                    .filter_map(|a| match a {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(e) => Some(e.to_string()),
                    })
                    .collect();
                let answer = match failures.first() {
                    None => Ok(EventAccepted { event_id, pods }),
                    Some(first) => Err(EventRefused::Kubernetes {
                        reason: format!("cancelling workers failed: {first}"),
                        pods_ok: total - failures.len(),
                        pods_total: total,
                    }),
                };
                let _ = responder.send(answer);
            }
            .into_actor(self),
        );
    }

    /// Starts queued events while they can go, in order.
    fn drain_queue(&mut self, ctx: &mut Context<Self>) {
        while let Some(ready) = self.ledger.next_ready() {
            match ready {
                Ready::Up(event) => self.start_up(event, ctx),
                Ready::Down(event, responder) => self.scale_down(event, responder, ctx),
            }
        }
    }

    /// A pod the watch shows: hand it to its worker, or adopt it.
    fn on_pod(&mut self, obs: PodObservation, ctx: &mut Context<Self>) {
        let obs = Arc::new(obs);
        match self.ledger.route(&obs) {
            Route::Worker { first_view } => {
                if first_view
                    && let Some(delay) = obs
                        .created_at
                        .and_then(|at| jiff::Timestamp::now().duration_since(at).try_into().ok())
                {
                    // A pod we created, seen for the first time.
                    self.config.metrics.pod_first_seen(delay);
                }
                if let Some(addr) = self.ledger.handle(&obs.name) {
                    addr.do_send(PodUpdate::Seen(obs));
                }
            }
            Route::Adopt(identity) => {
                info!(pod = %obs.name, task_id = %identity.task_id, phase = ?obs.phase, "adopting pod");
                self.check_acknowledged(&identity.event_id, ctx);
                let start = WorkerStart::Resume(Box::new(Resume {
                    observation: Some(obs),
                    settled: true,
                    ..Resume::default()
                }));
                self.start_worker(identity, start, ctx);
                self.update_gauge();
            }
            Route::Stale { worker } => {
                info!(pod = %obs.name, %worker, "an earlier attempt's pod was left behind; its worker deletes it");
                if let Some(addr) = self.ledger.handle(&worker) {
                    addr.do_send(DeleteStale {
                        pod: obs.name.clone(),
                    });
                }
            }
            Route::Ignore(why) => debug!(pod = %obs.name, why, "pod not driven"),
        }
    }

    /// For adopted pods: may they be deleted once reported? Only when their event's entry
    /// is no longer pending.
    fn check_acknowledged(&mut self, event_id: &str, ctx: &mut Context<Self>) {
        if self.ledger.is_acked(event_id) {
            return;
        }
        let Some(checker) = self.config.pending_checker.clone() else {
            self.mark_acknowledged(event_id);
            return;
        };
        let event_id = event_id.to_string();
        let ask = checker.send(IsEventPending {
            event_id: event_id.clone(),
        });
        ctx.spawn(ask.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Ok(false)) => act.mark_acknowledged(&event_id),
            Ok(Ok(true)) => {
                // Another consumer may hold the entry and acknowledge it (or the reader
                // may dead-letter it): no EventAcknowledged reaches us then, so ask again
                // while the event's workers live.
                debug!(%event_id, "adopted event still pending; its pods wait for the acknowledgement");
                ctx.run_later(PENDING_RECHECK, move |act, ctx| {
                    if act.ledger.has_workers_of(&event_id) {
                        act.check_acknowledged(&event_id, ctx);
                    }
                });
            }
            Ok(Err(e)) => {
                warn!(%event_id, error = %e, "could not check whether the event is pending; asking again");
                ctx.run_later(Backoff::REDIS.delay(3), move |act, ctx| {
                    act.check_acknowledged(&event_id, ctx)
                });
            }
            Err(e) => warn!(%event_id, error = %e, "pending check not answered"),
        }));
    }

    fn mark_acknowledged(&mut self, event_id: &str) {
        for pod in self.ledger.acknowledged(event_id) {
            if let Some(addr) = self.ledger.handle(&pod) {
                addr.do_send(DeleteAllowed);
            }
        }
    }

    fn on_stopped(
        &mut self,
        pod: String,
        incarnation: u32,
        error: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let task_id = self
            .ledger
            .worker(&pod)
            .map(|w| w.identity.task_id.clone())
            .unwrap_or_default();
        match self.ledger.stopped(&pod, incarnation, error.as_deref()) {
            AfterStop::Nothing => {}
            AfterStop::GiveUp => {
                error!(%pod, %task_id, error = error.as_deref(), "worker keeps failing even after reporting; giving it up (its pod is left as it is and not adopted again by this process)");
                self.update_gauge();
                self.drain_queue(ctx);
            }
            AfterStop::Restart {
                attempt,
                incarnation,
                failed,
            } => {
                self.config.metrics.worker_restarted();
                if let Some(result) = failed {
                    error!(%pod, %task_id, error = error.as_deref(), "restart budget exhausted; reporting the worker failed");
                    let template = self.ledger.worker(&pod).and_then(|w| w.template());
                    self.config.metrics.worker_finished(
                        result.outcome.as_str(),
                        template,
                        Duration::from_millis(result.duration_ms),
                    );
                    // Its result is final now, so its event no longer waits for its pod.
                    if let Some((accepted, responders)) = self.ledger.settle(&pod) {
                        answer_all(accepted, responders);
                    }
                }
                let delay = self.config.restart_backoff.delay(attempt);
                warn!(%pod, %task_id, error = error.as_deref(), restarts = attempt + 1, ?delay, "restarting worker");
                ctx.run_later(delay, move |act, ctx| {
                    if let Some((identity, start)) = act.ledger.restart(&pod, incarnation) {
                        let addr = act.spawn(identity, start, incarnation, ctx);
                        act.ledger.restarted(&pod, addr);
                    }
                });
            }
        }
    }

    fn watch_healthy(&self) -> bool {
        self.watch_up
            || self
                .last_watch_failure
                .is_some_and(|at| at.elapsed() >= WATCH_FAILURE_HOLD)
    }

    /// The waiting-events and workers gauges by priority and tenant.
    fn update_shares(&self) {
        let census = self.ledger.census();
        self.config.metrics.set_shares(
            &census.waiting,
            &census.workers,
            self.config.rules.metrics_tenants,
        );
    }

    fn status(&self) -> SupervisorStatus {
        let queued = self.ledger.queued_ups();
        let free_now = if queued == 0 {
            self.ledger.free_slots()
        } else {
            0
        };
        SupervisorStatus {
            ready: self.ledger.synced && !self.ledger.stopping && self.watch_healthy(),
            synced: self.ledger.synced,
            active: self.ledger.active(),
            // Queued events wait for slots first: report none free, so the reader
            // stops reading until the queue drains.
            free_slots: if queued == 0 {
                self.ledger.free_slots()
            } else {
                0
            },
            queued_events: queued,
            // What fits now, plus the read-ahead the scheduler chooses among.
            room: free_now + self.config.rules.max_waiting_events.saturating_sub(queued),
            restarts: self.ledger.restarts_total,
        }
    }
}

fn links_to(ctx: &mut Context<Supervisor>) -> Arc<WorkerLinks> {
    let addr = ctx.address();
    Arc::new(WorkerLinks {
        reports: addr.clone().recipient(),
        results: addr.recipient(),
    })
}

fn answer_all(accepted: EventAccepted, responders: Vec<Responder>) {
    debug!(event_id = %accepted.event_id, pods = accepted.pods.len(), "scale_up durable");
    for r in responders {
        let _ = r.send(Ok(accepted.clone()));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The mailbox keeps actix's default capacity: `send`s wait for room (backpressure)
        // and the watch's `do_send`s are never refused.
        self.links = Some(links_to(ctx));
        ctx.run_interval(SHARES_PERIOD, |act, _| act.update_shares());
        info!(
            max_workers = self.config.max_workers,
            "supervisor started; waiting for the first pod list"
        );
    }
}

impl Handler<ScaleEvent> for Supervisor {
    type Result = ResponseFuture<Answer>;

    fn handle(&mut self, event: ScaleEvent, ctx: &mut Self::Context) -> Self::Result {
        if self.ledger.stopping || self.standby.is_some() {
            return Box::pin(async { Err(EventRefused::ShuttingDown) });
        }
        let (tx, rx) = oneshot::channel();
        match self.ledger.admit(event, tx) {
            Admission::StartUp(event) => self.start_up(event, ctx),
            Admission::ScaleDown(event, tx) => self.scale_down(event, tx, ctx),
            Admission::Queued => {
                debug!(
                    queued = self.ledger.queue_len(),
                    "event waits for free slots or the first pod list"
                );
                // It may fit where the events ahead of it are capped.
                self.drain_queue(ctx);
            }
            Admission::Joined => {}
        }
        Box::pin(async move { rx.await.unwrap_or(Err(EventRefused::ShuttingDown)) })
    }
}

impl Handler<EventAcknowledged> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: EventAcknowledged, _ctx: &mut Self::Context) {
        self.mark_acknowledged(&msg.event_id);
    }
}

impl Handler<WorkerReport> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerReport, ctx: &mut Self::Context) {
        match msg {
            WorkerReport::Settled { pod, .. } => {
                if let Some((accepted, responders)) = self.ledger.settle(&pod) {
                    answer_all(accepted, responders);
                }
            }
            WorkerReport::Gone { pod } => {
                if let Some(entry) = self.ledger.remove(&pod) {
                    debug!(%pod, task_id = %entry.identity.task_id, "worker done");
                }
                self.update_gauge();
                self.drain_queue(ctx);
            }
            WorkerReport::Stopped {
                pod,
                incarnation,
                error,
            } => self.on_stopped(pod, incarnation, error, ctx),
            WorkerReport::Retrying {
                previous,
                attempt,
                pod,
                built_at,
            } => {
                self.config.metrics.worker_retried();
                self.ledger.retrying(&previous, attempt, pod, built_at);
            }
        }
    }
}

impl Handler<WorkerFinished> for Supervisor {
    type Result = ResponseFuture<Result<(), PublishError>>;

    fn handle(&mut self, msg: WorkerFinished, _ctx: &mut Self::Context) -> Self::Result {
        if self.ledger.reported(&msg) {
            let worker = self.ledger.worker(&msg.pod);
            self.config.metrics.worker_finished(
                msg.outcome.as_str(),
                worker.and_then(|w| w.template()),
                Duration::from_millis(msg.duration_ms),
            );
            // Best effort, never waited for: the results stream is the durable record.
            // A worker cancelled while queued has no pod to put an Event on.
            let uid = worker
                .and_then(|w| w.last.as_ref())
                .and_then(|o| o.uid.clone());
            let no_pod = worker.is_some_and(|w| w.never_created());
            if let (Some(events), false) = (&self.config.worker_env.events, no_pod) {
                events.do_send(RecordWorkerEvent {
                    result: msg.clone(),
                    uid,
                });
            }
        }
        let send = self.config.results.send(msg);
        Box::pin(async move {
            send.await
                .map_err(|e| PublishError(format!("results sink unavailable: {e}")))?
        })
    }
}

impl Handler<PodWatchEvent> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: PodWatchEvent, ctx: &mut Self::Context) {
        // Any event but a failure shows the watch works again (after an error the
        // watcher may resume from its resourceVersion without a new list).
        if self.ledger.synced && !matches!(msg, PodWatchEvent::Failed { .. }) {
            self.watch_up = true;
        }
        if self.stand_by(&msg) {
            return;
        }
        match msg {
            PodWatchEvent::Relisting => self.ledger.relisting(),
            PodWatchEvent::Listed(obs) | PodWatchEvent::Applied(obs) => self.on_pod(obs, ctx),
            PodWatchEvent::ListDone => {
                let first = !self.ledger.synced;
                // Workers whose pod the list did not show may have missed its deletion
                // during the gap: they confirm with a GET (only after a gap, so rare).
                for pod in self.ledger.list_done() {
                    if let Some(addr) = self.ledger.handle(&pod) {
                        addr.do_send(Resync);
                    }
                }
                self.watch_up = true;
                if first {
                    info!(
                        adopted = self.ledger.active(),
                        "initial pod list done; taking events"
                    );
                }
                self.update_gauge();
                self.drain_queue(ctx);
            }
            PodWatchEvent::Deleted { name } => {
                self.ledger.pod_deleted(&name);
                if let Some(addr) = self.ledger.handle(&name) {
                    addr.do_send(PodUpdate::Gone(name));
                }
            }
            PodWatchEvent::Failed { error } => {
                if self.watch_up {
                    warn!(%error, "pod watch failed; it retries with backoff");
                }
                self.watch_up = false;
                self.last_watch_failure = Some(Instant::now());
            }
        }
    }
}

impl Handler<LeadershipAcquired> for Supervisor {
    type Result = ();

    /// Adopts every pod kept while standing by, from memory: no list, no lookup.
    fn handle(&mut self, msg: LeadershipAcquired, ctx: &mut Self::Context) {
        let Some(pods) = self.standby.take() else {
            return;
        };
        info!(
            previous = msg.previous.as_deref(),
            pods = pods.len(),
            synced = self.ledger.synced,
            "leading: adopting the pods seen while standing by"
        );
        for obs in pods.into_values() {
            self.on_pod(obs, ctx);
        }
        self.update_gauge();
        self.drain_queue(ctx);
    }
}

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<StopIntake> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: StopIntake, _ctx: &mut Self::Context) {
        for responder in self.ledger.stop() {
            let _ = responder.send(Err(EventRefused::ShuttingDown));
        }
        info!(
            active = self.ledger.active(),
            "supervisor takes no more events; worker pods are left for the next instance"
        );
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::messages::supervisor::FailWorker> for Supervisor {
    type Result = bool;

    fn handle(
        &mut self,
        msg: crate::messages::supervisor::FailWorker,
        _ctx: &mut Self::Context,
    ) -> bool {
        // Not while a restart is pending: the old incarnation is gone.
        let Some(addr) = self.ledger.handle(&msg.pod).filter(Addr::connected) else {
            return false;
        };
        addr.do_send(crate::messages::worker::InjectFailure { reason: msg.reason });
        true
    }
}

impl Handler<crate::messages::health::Ping> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::health::Ping, _ctx: &mut Self::Context) {}
}

/// Blocks this actor's mailbox (not the thread) for the wedge's duration.
#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::messages::health::Wedge> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: crate::messages::health::Wedge, ctx: &mut Self::Context) {
        ctx.wait(actix::fut::wrap_future(tokio::time::sleep(msg.for_)));
    }
}
