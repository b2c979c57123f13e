//! Supervisor: turns scale events into WorkerPodActors, one per pod, and supervises them.
//!
//! It owns the bookkeeping of what runs (workers per task, capacity, events in flight),
//! receives the one shared pod watch and hands each pod's updates to its worker, adopts
//! pods it finds at start, restarts failed workers with backoff (up to a restart budget),
//! and forwards each worker's result to the results sink. It never talks to Kubernetes
//! itself: the workers do.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::actors::worker_pod::{Resume, Start, WorkerEnv, WorkerPodActor};
use crate::messages::reader::IsEventPending;
use crate::messages::supervisor::{
    EventAccepted, EventAcknowledged, EventRefused, FailWorker, GetStatus, StopIntake,
    SupervisorStatus, WorkerCreated, WorkerGone, WorkerStopped,
};
use crate::messages::worker::{Cancel, DeleteAllowed, InjectFailure, PodUpdate, Resync};
use crate::messages::{
    Outcome, PodObservation, PodPhase, PodWatchEvent, PublishError, ScaleEvent, ScaleKind,
    WorkerFinished,
};
use crate::metrics::Metrics;
use crate::outcome::{CancelCandidate, select_for_scale_down};
use crate::pods::{PodTemplate, WorkerIdentity, build_pod};
use crate::retry::Backoff;

/// Restarts of one worker before its outcome becomes `failed` (restart budget exhausted).
pub const MAX_RESTARTS: u32 = 5;
/// How often the Supervisor asks again whether an adopted event is still pending.
const PENDING_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// After a watch error, readiness stays down until the watch shows an event again, or
/// until no further error came for this long. A watch that keeps failing (API server
/// gone, RBAC refusing `watch`) reports an error at least every 30 s (kube-runtime's
/// backoff cap), so it stays not ready; a recovered but quiet watch is ready again
/// after this hold.
const WATCH_FAILURE_HOLD: std::time::Duration = std::time::Duration::from_secs(75);

type Responder = oneshot::Sender<Result<EventAccepted, EventRefused>>;

/// What the Supervisor needs to run workers.
pub struct SupervisorConfig {
    /// Shared by every worker: the pods API and the worker timeouts.
    pub worker_env: Arc<WorkerEnv>,
    /// Resolved pod templates by name; events were validated against these names.
    pub templates: BTreeMap<String, PodTemplate>,
    /// `limits.max_workers`.
    pub max_workers: usize,
    /// Where results go (the results publisher, or a test collector).
    pub results: Recipient<WorkerFinished>,
    /// Asks whether an adopted pod's event is still pending in the stream; without one
    /// (actor tests without Redis) adopted events count as acknowledged.
    pub pending_checker: Option<Recipient<IsEventPending>>,
    pub metrics: Arc<Metrics>,
}

/// One live worker, as the Supervisor knows it.
struct WorkerEntry {
    identity: WorkerIdentity,
    addr: Addr<WorkerPodActor>,
    incarnation: u32,
    restarts: u32,
    /// The create request settled (or the pod was adopted).
    settled: bool,
    /// The pod to create, kept until the create request settles so that a restarted
    /// worker can send it again.
    unsent: Option<(Arc<Pod>, Instant)>,
    /// The watch's latest view of the pod.
    last: Option<PodObservation>,
    /// The result, once the worker reported it (kept for restarts).
    reported: Option<WorkerFinished>,
    cancelled: bool,
}

/// A scale_up whose pods are not all created yet.
struct EventProgress {
    waiting: HashSet<String>,
    pods: Vec<String>,
    responders: Vec<Responder>,
}

pub struct Supervisor {
    config: SupervisorConfig,
    workers: HashMap<String, WorkerEntry>,
    events: HashMap<String, EventProgress>,
    /// Acknowledged events that still have workers (their pods may be deleted).
    acked: HashSet<String>,
    /// scale_up events waiting for free slots (or for the initial sync), in order.
    queue: VecDeque<(ScaleEvent, Responder)>,
    /// The first pod list is done: adoption is complete and capacity is known.
    synced: bool,
    /// The watch showed an event since its last error.
    watch_up: bool,
    /// When the watch last reported an error.
    last_watch_failure: Option<Instant>,
    /// Pods seen in the current re-list, while one runs.
    relist: Option<HashSet<String>>,
    stopping: bool,
    restarts_total: u64,
}

impl Supervisor {
    pub fn new(config: SupervisorConfig) -> Self {
        Self {
            config,
            workers: HashMap::new(),
            events: HashMap::new(),
            acked: HashSet::new(),
            queue: VecDeque::new(),
            synced: false,
            watch_up: false,
            last_watch_failure: None,
            relist: None,
            stopping: false,
            restarts_total: 0,
        }
    }

    fn free_slots(&self) -> usize {
        self.config.max_workers.saturating_sub(self.workers.len())
    }

    fn update_gauge(&self) {
        self.config.metrics.set_workers_active(self.workers.len());
    }

    /// Starts queued scale_ups while they fit, in order.
    fn drain_queue(&mut self, ctx: &mut Context<Self>) {
        while self.synced && !self.stopping {
            let Some((event, _)) = self.queue.front() else {
                break;
            };
            if self.new_pods_needed(event) > self.free_slots() {
                break;
            }
            if let Some((event, responder)) = self.queue.pop_front() {
                self.start_scale_up(event, responder, ctx);
            }
        }
    }

    /// Pods of a scale_up that do not exist yet (a redelivered event needs none).
    fn new_pods_needed(&self, event: &ScaleEvent) -> usize {
        let ScaleKind::Up { pod_count } = event.kind else {
            return 0;
        };
        (0..pod_count)
            .filter(|i| {
                let name = crate::pods::pod_name(&event.task_id, &event.event_id, *i);
                !self.workers.contains_key(&name)
            })
            .count()
    }

    fn start_scale_up(&mut self, event: ScaleEvent, responder: Responder, ctx: &mut Context<Self>) {
        let ScaleKind::Up { pod_count } = event.kind else {
            return;
        };
        let Some(template) = self.config.templates.get(&event.template).cloned() else {
            // Validation already checks the name; this guards a config reload race.
            let _ = responder.send(Err(EventRefused::Kubernetes {
                reason: format!("no pod template named {:?}", event.template),
                pods_ok: 0,
                pods_total: pod_count as usize,
            }));
            return;
        };
        let now = jiff::Timestamp::now();
        let mut waiting = HashSet::new();
        let mut pods = Vec::with_capacity(pod_count as usize);
        for index in 0..pod_count {
            let identity = WorkerIdentity {
                task_id: event.task_id.clone(),
                event_id: event.event_id.clone(),
                index,
            };
            let name = identity.pod_name();
            pods.push(name.clone());
            match self.workers.get(&name) {
                Some(entry) if entry.settled => {}
                Some(_) => {
                    waiting.insert(name);
                }
                None => {
                    let pod = build_pod(&template, &identity, &event.metadata, now);
                    let start = Start::Create {
                        pod: Arc::new(pod),
                        read_at: event.read_at,
                    };
                    self.spawn_worker(identity, start, 0, 0, ctx);
                    waiting.insert(name);
                }
            }
        }
        let event_id = event.event_id.clone();
        info!(event_id = %event_id, task_id = %event.task_id, pod_count, new = waiting.len(), "scale_up started");
        let progress = self
            .events
            .entry(event_id.clone())
            .or_insert_with(|| EventProgress {
                waiting: HashSet::new(),
                pods: pods.clone(),
                responders: Vec::new(),
            });
        progress.waiting.extend(waiting);
        progress.responders.push(responder);
        self.complete_event_if_settled(&event_id);
        self.update_gauge();
    }

    fn spawn_worker(
        &mut self,
        identity: WorkerIdentity,
        start: Start,
        incarnation: u32,
        restarts: u32,
        ctx: &mut Context<Self>,
    ) {
        let name = identity.pod_name();
        let delete_allowed = self.acked.contains(&identity.event_id);
        let (last, reported, cancelled, unsent) = match &start {
            Start::Resume(r) => (r.observation.clone(), r.reported.clone(), r.cancelled, None),
            Start::Create { pod, read_at } => (None, None, false, Some((pod.clone(), *read_at))),
        };
        let settled = unsent.is_none();
        let worker = WorkerPodActor::new(
            identity.clone(),
            incarnation,
            start,
            ctx.address(),
            self.config.worker_env.clone(),
            delete_allowed,
        );
        let addr = worker.start();
        self.workers.insert(
            name,
            WorkerEntry {
                identity,
                addr,
                incarnation,
                restarts,
                settled,
                unsent,
                last,
                reported,
                cancelled,
            },
        );
    }

    /// The worker's create request settled: its event stops waiting for it.
    fn settle(&mut self, pod: &str) {
        let Some(entry) = self.workers.get_mut(pod) else {
            return;
        };
        entry.settled = true;
        entry.unsent = None;
        let event_id = entry.identity.event_id.clone();
        if let Some(progress) = self.events.get_mut(&event_id) {
            progress.waiting.remove(pod);
        }
        self.complete_event_if_settled(&event_id);
    }

    /// Starts the next incarnation of a failed worker, from what is known now: a pod
    /// that was never created is created again; otherwise the worker resumes from the
    /// watch's latest view and the result it already reported.
    fn restart_worker(
        &mut self,
        identity: &WorkerIdentity,
        incarnation: u32,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.workers.get(&identity.pod_name()) else {
            return;
        };
        // Finished meanwhile, or a newer incarnation already runs.
        if entry.incarnation != incarnation || self.stopping {
            return;
        }
        let start = match (&entry.unsent, entry.settled) {
            (Some((pod, read_at)), false) => Start::Create {
                pod: pod.clone(),
                read_at: *read_at,
            },
            _ => Start::Resume(Box::new(Resume {
                observation: entry.last.clone(),
                reported: entry.reported.clone(),
                cancelled: entry.cancelled,
            })),
        };
        let restarts = entry.restarts;
        self.spawn_worker(identity.clone(), start, incarnation, restarts, ctx);
    }

    fn complete_event_if_settled(&mut self, event_id: &str) {
        let done = self
            .events
            .get(event_id)
            .is_some_and(|p| p.waiting.is_empty());
        if !done {
            return;
        }
        if let Some(progress) = self.events.remove(event_id) {
            debug!(%event_id, pods = progress.pods.len(), "scale_up durable");
            for responder in progress.responders {
                let _ = responder.send(Ok(EventAccepted {
                    event_id: event_id.to_string(),
                    pods: progress.pods.clone(),
                }));
            }
        }
    }

    fn scale_down(
        &mut self,
        event: &ScaleEvent,
        count: Option<u32>,
    ) -> ResponseFuture<Result<EventAccepted, EventRefused>> {
        let candidates = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.identity.task_id == event.task_id && w.reported.is_none() && !w.cancelled
            })
            .map(|(name, w)| CancelCandidate {
                pod: name.clone(),
                pending: w.last.as_ref().is_none_or(|o| o.phase == PodPhase::Pending),
                started_at: w.last.as_ref().and_then(|o| o.started_at),
            })
            .collect();
        let chosen = select_for_scale_down(candidates, count);
        let event_id = event.event_id.clone();
        if chosen.is_empty() {
            info!(%event_id, task_id = %event.task_id, "scale_down: no live workers for the task, nothing to do");
        } else {
            info!(%event_id, task_id = %event.task_id, pods = ?chosen, "scale_down: cancelling workers");
        }
        let mut sends = Vec::with_capacity(chosen.len());
        for name in &chosen {
            if let Some(w) = self.workers.get_mut(name) {
                w.cancelled = true;
                sends.push(w.addr.send(Cancel));
            }
        }
        Box::pin(async move {
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
            match failures.first() {
                None => Ok(EventAccepted {
                    event_id,
                    pods: chosen,
                }),
                Some(first) => Err(EventRefused::Kubernetes {
                    reason: format!("deleting pods failed: {first}"),
                    pods_ok: total - failures.len(),
                    pods_total: total,
                }),
            }
        })
    }

    /// A pod the watch shows: hand it to its worker, or adopt it.
    fn on_pod(&mut self, obs: PodObservation, ctx: &mut Context<Self>) {
        if let Some(entry) = self.workers.get_mut(&obs.name) {
            if entry.last.is_none() {
                // A pod we created, seen for the first time (adopted ones start with a view).
                if let Some(delay) = obs
                    .created_at
                    .and_then(|at| jiff::Timestamp::now().duration_since(at).try_into().ok())
                {
                    self.config.metrics.pod_first_seen(delay);
                }
            }
            entry.last = Some(obs.clone());
            entry.addr.do_send(PodUpdate {
                observation: Some(obs),
            });
            return;
        }
        if obs.deleting || self.stopping {
            // Being deleted and not ours: a worker already reported it and asked for this.
            return;
        }
        let (Some(task_id), Some(index), Some(event_id)) =
            (obs.task_id.clone(), obs.worker_index, obs.event_id.clone())
        else {
            warn!(pod = %obs.name, "pod labelled managed-by=ottoscaler lacks the task-id/worker-index/event-id it needs; leaving it alone");
            return;
        };
        let identity = WorkerIdentity {
            task_id,
            event_id,
            index,
        };
        if identity.pod_name() != obs.name {
            warn!(pod = %obs.name, "pod name does not match its labels; leaving it alone");
            return;
        }
        info!(pod = %obs.name, task_id = %identity.task_id, phase = ?obs.phase, "adopting pod");
        self.check_acknowledged(&identity.event_id, ctx);
        let start = Start::Resume(Box::new(Resume {
            observation: Some(obs),
            reported: None,
            cancelled: false,
        }));
        self.spawn_worker(identity, start, 0, 0, ctx);
        self.update_gauge();
    }

    /// For adopted pods: may they be deleted once reported? Only when their event's entry
    /// is no longer pending (CONTRACT.md section 2).
    fn check_acknowledged(&mut self, event_id: &str, ctx: &mut Context<Self>) {
        if self.acked.contains(event_id) {
            return;
        }
        let Some(checker) = self.config.pending_checker.clone() else {
            self.acked.insert(event_id.to_string());
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
                    let live = act.workers.values().any(|w| w.identity.event_id == event_id);
                    if live {
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
        let mut any = false;
        for w in self.workers.values() {
            if w.identity.event_id == event_id {
                any = true;
                w.addr.do_send(DeleteAllowed);
            }
        }
        if any {
            self.acked.insert(event_id.to_string());
        }
    }

    fn forget_acks_without_workers(&mut self) {
        if self.acked.len() > 1024 {
            let live: HashSet<&String> = self
                .workers
                .values()
                .map(|w| &w.identity.event_id)
                .collect();
            self.acked.retain(|e| live.contains(e));
        }
    }

    fn watch_healthy(&self) -> bool {
        self.watch_up
            || self
                .last_watch_failure
                .is_some_and(|at| at.elapsed() >= WATCH_FAILURE_HOLD)
    }

    fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            ready: self.synced && !self.stopping && self.watch_healthy(),
            synced: self.synced,
            active: self.workers.len(),
            // Queued events wait for slots first: report none free, so the reader
            // stops reading until the queue drains.
            free_slots: if self.queue.is_empty() {
                self.free_slots()
            } else {
                0
            },
            queued_events: self.queue.len(),
            restarts: self.restarts_total,
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The mailbox keeps actix's default capacity: `send`s wait for room (backpressure)
        // and the watch's `do_send`s are never refused.
        let _ = ctx;
        info!(
            max_workers = self.config.max_workers,
            "supervisor started; waiting for the first pod list"
        );
    }
}

impl Handler<ScaleEvent> for Supervisor {
    type Result = ResponseFuture<Result<EventAccepted, EventRefused>>;

    fn handle(&mut self, event: ScaleEvent, ctx: &mut Self::Context) -> Self::Result {
        if self.stopping {
            return Box::pin(async { Err(EventRefused::ShuttingDown) });
        }
        match event.kind {
            ScaleKind::Down { pod_count } if self.synced => self.scale_down(&event, pod_count),
            _ => {
                let (tx, rx) = oneshot::channel();
                let fits = self.synced
                    && self.queue.is_empty()
                    && self.new_pods_needed(&event) <= self.free_slots();
                if fits {
                    self.start_scale_up(event, tx, ctx);
                } else {
                    debug!(event_id = %event.event_id, queued = self.queue.len() + 1, "event waits for free slots");
                    self.queue.push_back((event, tx));
                }
                Box::pin(async move { rx.await.unwrap_or(Err(EventRefused::ShuttingDown)) })
            }
        }
    }
}

impl Handler<EventAcknowledged> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: EventAcknowledged, _ctx: &mut Self::Context) {
        self.mark_acknowledged(&msg.event_id);
        self.forget_acks_without_workers();
    }
}

impl Handler<WorkerCreated> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerCreated, _ctx: &mut Self::Context) {
        self.settle(&msg.pod);
    }
}

impl Handler<WorkerFinished> for Supervisor {
    type Result = ResponseFuture<Result<(), PublishError>>;

    fn handle(&mut self, msg: WorkerFinished, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(entry) = self.workers.get_mut(&msg.pod)
            && entry.reported.is_none()
        {
            entry.reported = Some(msg.clone());
            self.config.metrics.worker_finished(
                msg.outcome.as_str(),
                std::time::Duration::from_millis(msg.duration_ms),
            );
        }
        let send = self.config.results.send(msg);
        Box::pin(async move {
            send.await
                .map_err(|e| PublishError(format!("results sink unavailable: {e}")))?
        })
    }
}

impl Handler<WorkerGone> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerGone, ctx: &mut Self::Context) {
        if let Some(entry) = self.workers.remove(&msg.pod) {
            debug!(pod = %msg.pod, task_id = %entry.identity.task_id, "worker done");
        }
        self.update_gauge();
        self.forget_acks_without_workers();
        self.drain_queue(ctx);
    }
}

impl Handler<WorkerStopped> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerStopped, ctx: &mut Self::Context) {
        let Some(error) = msg.error else {
            return;
        };
        if self.stopping {
            return;
        }
        let Some(entry) = self.workers.get_mut(&msg.pod) else {
            return;
        };
        if entry.incarnation != msg.incarnation {
            return;
        }
        entry.restarts += 1;
        entry.incarnation += 1;
        let (restarts, incarnation) = (entry.restarts, entry.incarnation);
        let identity = entry.identity.clone();
        self.restarts_total += 1;
        self.config.metrics.worker_restarted();
        if restarts > MAX_RESTARTS * 2 {
            error!(pod = %msg.pod, task_id = %identity.task_id, %error, "worker keeps failing; leaving its pod for the next start to adopt");
            self.workers.remove(&msg.pod);
            self.update_gauge();
            self.drain_queue(ctx);
            return;
        }
        if restarts > MAX_RESTARTS && entry.reported.is_none() {
            error!(pod = %msg.pod, task_id = %identity.task_id, %error, restarts, "restart budget exhausted; reporting the worker failed");
            entry.reported = Some(WorkerFinished {
                task_id: identity.task_id.clone(),
                event_id: identity.event_id.clone(),
                pod: msg.pod.clone(),
                worker_index: identity.index,
                outcome: Outcome::Failed,
                exit_code: None,
                reason: Some(format!("restart budget exhausted: {error}")),
                duration_ms: 0,
                finished_at: jiff::Timestamp::now().to_string(),
            });
            // Its result is final now, so its event no longer waits for its pod.
            self.settle(&msg.pod);
        }
        let delay = Backoff::RESTART.delay(restarts.saturating_sub(1));
        warn!(pod = %msg.pod, task_id = %identity.task_id, %error, restarts, ?delay, "restarting worker");
        ctx.run_later(delay, move |act, ctx| {
            act.restart_worker(&identity, incarnation, ctx)
        });
    }
}

impl Handler<PodWatchEvent> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: PodWatchEvent, ctx: &mut Self::Context) {
        // Any event but a failure shows the watch works again (after an error the
        // watcher may resume from its resourceVersion without a new list).
        if self.synced && !matches!(msg, PodWatchEvent::Failed { .. }) {
            self.watch_up = true;
        }
        match msg {
            PodWatchEvent::Relisting => self.relist = Some(HashSet::new()),
            PodWatchEvent::Listed(obs) => {
                if let Some(seen) = self.relist.as_mut() {
                    seen.insert(obs.name.clone());
                }
                self.on_pod(obs, ctx);
            }
            PodWatchEvent::ListDone => {
                let seen = self.relist.take().unwrap_or_default();
                // Workers whose pod the list did not show may have missed its deletion
                // during the gap: they confirm with a GET (only after a gap, so rare).
                for (name, w) in &self.workers {
                    if w.settled && !seen.contains(name) {
                        w.addr.do_send(Resync);
                    }
                }
                self.watch_up = true;
                if !self.synced {
                    self.synced = true;
                    info!(
                        adopted = self.workers.len(),
                        "initial pod list done; taking events"
                    );
                }
                self.update_gauge();
                self.drain_queue(ctx);
            }
            PodWatchEvent::Applied(obs) => self.on_pod(obs, ctx),
            PodWatchEvent::Deleted { name } => {
                if let Some(entry) = self.workers.get(&name) {
                    entry.addr.do_send(PodUpdate { observation: None });
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

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<StopIntake> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: StopIntake, _ctx: &mut Self::Context) {
        self.stopping = true;
        for (_, responder) in self.queue.drain(..) {
            let _ = responder.send(Err(EventRefused::ShuttingDown));
        }
        info!(
            active = self.workers.len(),
            "supervisor takes no more events; worker pods are left for the next instance"
        );
    }
}

impl Handler<FailWorker> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: FailWorker, _ctx: &mut Self::Context) -> bool {
        let Some(w) = self.workers.get(&msg.pod) else {
            return false;
        };
        w.addr.do_send(InjectFailure { reason: msg.reason });
        true
    }
}
