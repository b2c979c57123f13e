//! The Supervisor's books as plain data: which workers live (indexed by pod, by event
//! and by task, so no message walks every worker), which scale_ups are not durable yet
//! and who waits for them, which events are acknowledged, and the queue of events that
//! wait for capacity or for the first pod list.
//!
//! The [`Supervisor`](crate::actors::supervisor::Supervisor) actor is a shell around it:
//! it spawns and messages workers, and answers senders; every decision about what to
//! start, cancel, restart or adopt is made here, and unit-tested without actors.
//! `H` is how the shell reaches a worker (an actor address), `R` how it answers a
//! waiting sender (a oneshot sender); tests use plain values for both.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use crate::lifecycle::Resume;
use crate::messages::supervisor::EventAccepted;
use crate::messages::{Outcome, PodObservation, PodPhase, ScaleEvent, ScaleKind, WorkerFinished};
use crate::outcome::{CancelCandidate, select_for_scale_down};
use crate::pods::WorkerIdentity;
use crate::scheduler::{self, Candidate, Capacity, FairState, Rules};
use crate::telemetry::TraceParent;

/// Restarts of one worker before its outcome becomes `failed` (restart budget exhausted).
pub const MAX_RESTARTS: u32 = 5;
/// Restarts after which the Supervisor gives a worker up altogether (it cannot even
/// publish or delete): twice the budget, so the `failed` result had its chances.
pub const GIVE_UP_RESTARTS: u32 = 2 * MAX_RESTARTS;

/// How a worker (re)starts.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerStart {
    /// Create this pod; `read_at` is when its event was read, `built_at` when the pod
    /// was built (its `created-at` annotation), `trace` its event span's context when
    /// traces are exported (the worker's span is its child).
    Create {
        pod: Arc<Pod>,
        read_at: Instant,
        built_at: Timestamp,
        trace: Option<TraceParent>,
        /// Which attempt of the worker the pod is (1-based; its name says it too).
        attempt: u32,
    },
    /// Take over the pod as it is.
    Resume(Box<Resume>),
    /// A queued worker a scale_down cancelled: publish `cancelled`, make no pod.
    CancelledBeforeCreation,
}

/// One live worker.
#[derive(Debug)]
pub struct WorkerEntry<H> {
    pub identity: WorkerIdentity,
    pub handle: H,
    /// Which attempt of the worker runs (1-based): its pod's name says it, and the books
    /// know the worker by that name.
    pub attempt: u32,
    /// Which start of the worker runs (stops of older ones are ignored).
    pub incarnation: u32,
    pub restarts: u32,
    /// Its event no longer waits for its create.
    pub settled: bool,
    /// The pod to create, kept until the create settles, for a restart.
    unsent: Option<(Arc<Pod>, Instant, Timestamp, Option<TraceParent>)>,
    /// Its pod was never to be created (cancelled while queued).
    never_created: bool,
    /// The watch's latest view of the pod.
    pub last: Option<Arc<PodObservation>>,
    /// The result, once reported (kept for restarts).
    pub reported: Option<WorkerFinished>,
    /// A scale_down chose it.
    pub cancelled: bool,
    /// Its pod template (the pod's `ottoscaler.io/template` annotation), for metrics;
    /// unknown for a worker cancelled before its pod was built.
    pub template: Option<String>,
    /// Its event's priority class and tenant (the pod's annotations), for metrics.
    pub priority: Option<String>,
    pub tenant: Option<String>,
}

impl<H> WorkerEntry<H> {
    /// Its pod was never to be created: it was cancelled while queued.
    pub fn never_created(&self) -> bool {
        self.never_created
    }

    /// The worker's template: from the pod it builds, else the latest view of its pod.
    pub fn template(&self) -> Option<&str> {
        self.template
            .as_deref()
            .or_else(|| self.last.as_ref().and_then(|o| o.template.as_deref()))
    }
}

/// A scale_up that is not durable yet, and who waits for it.
#[derive(Debug)]
struct Progress<R> {
    /// Workers whose create has not settled.
    waiting: HashSet<String>,
    pods: Vec<String>,
    responders: Vec<R>,
    /// Still in the queue (not every worker was started).
    queued: bool,
    /// Indices a scale_down took while the event was queued: never created.
    cancelled: BTreeSet<u32>,
}

impl<R> Progress<R> {
    fn new(queued: bool) -> Self {
        Progress {
            waiting: HashSet::new(),
            pods: Vec::new(),
            responders: Vec::new(),
            queued,
            cancelled: BTreeSet::new(),
        }
    }
}

/// An event waiting in the queue.
#[derive(Debug)]
enum Waiting<R> {
    /// A scale_up waiting for capacity (or the first list); its responders and the
    /// indices a scale_down took meanwhile are in its [`Progress`].
    Up(ScaleEvent, Queued),
    /// A scale_down waiting for the first pod list.
    Down { event: ScaleEvent, responder: R },
}

/// When and in which order a scale_up joined the queue.
#[derive(Debug, Clone, Copy)]
struct Queued {
    /// Stream order (the entry id), else arrival order.
    order: u64,
    since: Instant,
}

/// Waiting scale_ups and workers, by priority class and tenant, for the metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Census {
    /// (class, tenant) -> scale_up events waiting.
    pub waiting: BTreeMap<(String, String), usize>,
    /// (class, tenant) -> workers alive (unknown for pods adopted without the annotations).
    pub workers: BTreeMap<(String, String), usize>,
}

/// What to do with a scale event that arrived.
#[derive(Debug)]
pub enum Admission<R> {
    /// A scale_up to start now: the shell calls [`Ledger::start_up`] (the responder is kept).
    StartUp(ScaleEvent),
    /// A scale_down to carry out now: the shell calls [`Ledger::scale_down`] and answers.
    ScaleDown(ScaleEvent, R),
    /// It waits in the queue (its responder is kept).
    Queued,
    /// The same scale_up is already under way or queued; the responder joined it.
    Joined,
}

/// The next queued event that can go.
#[derive(Debug)]
pub enum Ready<R> {
    Up(ScaleEvent),
    Down(ScaleEvent, R),
}

/// What a scale_down does.
#[derive(Debug, Default, PartialEq)]
pub struct DownPlan {
    /// Live workers to cancel.
    pub cancel: Vec<String>,
    /// Queued workers to start as cancelled (no pod), then to cancel like the others.
    pub cancel_queued: Vec<WorkerIdentity>,
}

impl DownPlan {
    /// Every pod the scale_down takes, for its answer.
    pub fn pods(&self) -> Vec<String> {
        let mut pods = self.cancel.clone();
        pods.extend(self.cancel_queued.iter().map(WorkerIdentity::pod_name));
        pods
    }
}

/// What to do after a worker stopped.
#[derive(Debug, PartialEq)]
pub enum AfterStop {
    /// A clean stop, an old incarnation, or shutting down: nothing.
    Nothing,
    /// Restart it after the backoff of `attempt`, as incarnation `incarnation`. With
    /// `failed` the restart budget ran out and this is the `failed` result it reports:
    /// the shell then settles the worker ([`Ledger::settle`]), as its result is final.
    Restart {
        attempt: u32,
        incarnation: u32,
        failed: Option<Box<WorkerFinished>>,
    },
    /// It keeps failing even after reporting: forget it, and never adopt its pod again
    /// in this process.
    GiveUp,
}

/// Where a pod the watch shows goes.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// To its live worker; `first_view` when the worker had no view of it yet.
    Worker { first_view: bool },
    /// Adopt it: start a worker that resumes it.
    Adopt(WorkerIdentity),
    /// Not ours to drive (being deleted, given up, lacking labels, shutting down).
    Ignore(&'static str),
    /// An earlier attempt's pod, left behind (not being deleted) while the worker of a
    /// later attempt runs: that worker (known by its pod `worker`) deletes it.
    Stale { worker: String },
}

/// The books. See the module docs.
#[derive(Debug)]
pub struct Ledger<H, R> {
    max_workers: usize,
    workers: HashMap<Arc<str>, WorkerEntry<H>>,
    // The indexes share the pod names of `workers` (Arc<str>): ten thousand workers cost
    // no extra string copies.
    by_event: HashMap<String, HashSet<Arc<str>>>,
    by_task: HashMap<String, HashSet<Arc<str>>>,
    events: HashMap<String, Progress<R>>,
    /// Acknowledged events that still have live workers.
    acked: HashSet<String>,
    queue: VecDeque<Waiting<R>>,
    /// Arrivals so far: the order of events whose id is not a stream id.
    arrivals: u64,
    /// Who goes first when capacity is short, and the caps.
    rules: Rules,
    /// The fair scheduler's memory of what each tenant got.
    fair: FairState,
    /// Pods of workers given up on: the watch must not adopt them again.
    given_up: HashSet<String>,
    /// Pods of earlier attempts of retried workers: never adopted, forgotten once gone.
    superseded: HashSet<String>,
    /// Pods seen in the current re-list, while one runs.
    relist: Option<HashSet<String>>,
    /// Started scale_ups and when each must be durable, oldest first: one timeout for
    /// all, so start order is deadline order, and one timer (the shell's, for the front)
    /// serves them all. Settled ones leave as they reach the front.
    settle_by: VecDeque<(Instant, String)>,
    /// The first pod list is done: adoption is complete and capacity is known.
    pub synced: bool,
    pub stopping: bool,
    pub restarts_total: u64,
}

impl<H: Clone, R> Ledger<H, R> {
    /// Books with the default rules (fair, one class, no caps).
    pub fn new(max_workers: usize) -> Self {
        Self::with_rules(max_workers, Rules::default())
    }

    pub fn with_rules(max_workers: usize, rules: Rules) -> Self {
        Ledger {
            max_workers,
            arrivals: 0,
            rules,
            fair: FairState::default(),
            workers: HashMap::new(),
            by_event: HashMap::new(),
            by_task: HashMap::new(),
            events: HashMap::new(),
            acked: HashSet::new(),
            queue: VecDeque::new(),
            given_up: HashSet::new(),
            superseded: HashSet::new(),
            relist: None,
            settle_by: VecDeque::new(),
            synced: false,
            stopping: false,
            restarts_total: 0,
        }
    }

    pub fn active(&self) -> usize {
        self.workers.len()
    }

    pub fn free_slots(&self) -> usize {
        self.max_workers.saturating_sub(self.workers.len())
    }

    /// scale_up events waiting in the queue.
    pub fn queued_ups(&self) -> usize {
        self.queue
            .iter()
            .filter(|w| matches!(w, Waiting::Up(..)))
            .count()
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn worker(&self, pod: &str) -> Option<&WorkerEntry<H>> {
        self.workers.get(pod)
    }

    pub fn handle(&self, pod: &str) -> Option<H> {
        self.workers.get(pod).map(|w| w.handle.clone())
    }

    pub fn is_acked(&self, event_id: &str) -> bool {
        self.acked.contains(event_id)
    }

    pub fn has_workers_of(&self, event_id: &str) -> bool {
        self.by_event.get(event_id).is_some_and(|s| !s.is_empty())
    }

    /// Pods of a scale_up that do not exist yet (a redelivered event needs none, and
    /// indices a scale_down took are never created).
    fn new_pods_needed(&self, event: &ScaleEvent) -> usize {
        let ScaleKind::Up { pod_count } = event.kind else {
            return 0;
        };
        let cancelled = self.events.get(&event.event_id).map(|p| &p.cancelled);
        (0..pod_count)
            .filter(|i| cancelled.is_none_or(|c| !c.contains(i)))
            .filter(|i| {
                let name = crate::pods::pod_name(&event.task_id, &event.event_id, *i);
                !self.workers.contains_key(name.as_str())
            })
            .count()
    }

    /// Decides what happens to a scale event that just arrived. A scale_up that fits
    /// goes now; one that does not, or arrives before the first list or behind others,
    /// waits in order. A scale_down goes now once synced (it takes effect on queued
    /// scale_ups of its task too, so stream order holds); before that it waits.
    pub fn admit(&mut self, event: ScaleEvent, responder: R) -> Admission<R> {
        if let ScaleKind::Down { .. } = event.kind {
            if self.synced {
                return Admission::ScaleDown(event, responder);
            }
            self.queue.push_back(Waiting::Down { event, responder });
            return Admission::Queued;
        }
        if let Some(progress) = self.events.get_mut(&event.event_id) {
            progress.responders.push(responder);
            return Admission::Joined;
        }
        let fits = self.synced && self.queued_ups() == 0 && self.fits(&event);
        let mut progress = Progress::new(!fits);
        progress.responders.push(responder);
        self.events.insert(event.event_id.clone(), progress);
        if fits {
            Admission::StartUp(event)
        } else {
            self.arrivals += 1;
            let queued = Queued {
                // Ids that are not stream ids (tests) keep arrival order, after real ones.
                order: scheduler::stream_order(&event.event_id)
                    .unwrap_or(u64::MAX / 2 + self.arrivals),
                since: Instant::now(),
            };
            self.queue.push_back(Waiting::Up(event, queued));
            Admission::Queued
        }
    }

    /// Whether a scale_up can start now: global slots, its template's and task's caps.
    fn fits(&self, event: &ScaleEvent) -> bool {
        let needed = self.new_pods_needed(event);
        if needed > self.free_slots() {
            return false;
        }
        let template_ok = self
            .rules
            .template_caps
            .get(&event.template)
            .is_none_or(|cap| {
                let has = self
                    .workers
                    .values()
                    .filter(|w| w.template() == Some(event.template.as_str()))
                    .count();
                has + needed <= *cap
            });
        let task_ok = self.rules.task_cap.is_none_or(|cap| {
            let has = self.by_task.get(&event.task_id).map_or(0, HashSet::len);
            has + needed <= cap
        });
        template_ok && task_ok
    }

    /// The room the scheduler chooses in: free slots, and what the caps still allow.
    fn capacity(&self) -> Capacity<'_> {
        let mut template_room: HashMap<&str, usize> = self
            .rules
            .template_caps
            .iter()
            .map(|(name, cap)| (name.as_str(), *cap))
            .collect();
        if !template_room.is_empty() {
            for w in self.workers.values() {
                if let Some(room) = w.template().and_then(|t| template_room.get_mut(t)) {
                    *room = room.saturating_sub(1);
                }
            }
        }
        let task_workers = match self.rules.task_cap {
            Some(_) => self
                .by_task
                .iter()
                .map(|(task, pods)| (task.as_str(), pods.len()))
                .collect(),
            None => HashMap::new(),
        };
        Capacity {
            free: self.free_slots(),
            template_room,
            task_cap: self.rules.task_cap,
            task_workers,
        }
    }

    /// The queue position of the scale_up the scheduler starts next, if any may start.
    fn pick_up(&self) -> Option<usize> {
        let now = Instant::now();
        let mut tenant_workers: HashMap<&str, usize> = HashMap::new();
        if self.rules.policy.kind == scheduler::PolicyKind::Fair {
            for w in self.workers.values() {
                if let Some(t) = w.tenant.as_deref() {
                    *tenant_workers.entry(t).or_insert(0) += 1;
                }
            }
        }
        let (positions, candidates): (Vec<usize>, Vec<Candidate<'_>>) = self
            .queue
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                Waiting::Up(event, queued) => Some((
                    i,
                    Candidate {
                        order: queued.order,
                        tenant: &event.tenant,
                        class: &event.priority,
                        task: &event.task_id,
                        template: &event.template,
                        pods: self.new_pods_needed(event),
                        tenant_workers: tenant_workers
                            .get(event.tenant.as_str())
                            .copied()
                            .unwrap_or(0),
                        waited: now.saturating_duration_since(queued.since),
                    },
                )),
                Waiting::Down { .. } => None,
            })
            .unzip();
        let capacity = self.capacity();
        scheduler::pick(&self.rules.policy, &self.fair, &candidates, &capacity)
            .and_then(|i| positions.get(i).copied())
    }

    /// Waiting scale_ups and live workers by priority class and tenant.
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for w in &self.queue {
            if let Waiting::Up(event, _) = w {
                *census
                    .waiting
                    .entry((event.priority.clone(), event.tenant.clone()))
                    .or_insert(0) += 1;
            }
        }
        for w in self.workers.values() {
            let key = (
                w.priority.clone().unwrap_or_else(|| "unknown".into()),
                w.tenant.clone().unwrap_or_else(|| "unknown".into()),
            );
            *census.workers.entry(key).or_insert(0) += 1;
        }
        census
    }

    /// The next queued event that can go now: a scale_down waiting for the first list
    /// (in order), else the scale_up the scheduler picks ([`crate::scheduler`]).
    pub fn next_ready(&mut self) -> Option<Ready<R>> {
        if !self.synced || self.stopping {
            return None;
        }
        let down = self
            .queue
            .iter()
            .position(|w| matches!(w, Waiting::Down { .. }));
        let i = down.or_else(|| self.pick_up())?;
        match self.queue.remove(i)? {
            Waiting::Down { event, responder } => Some(Ready::Down(event, responder)),
            Waiting::Up(event, _) => {
                if let Some(p) = self.events.get_mut(&event.event_id) {
                    p.queued = false;
                }
                Some(Ready::Up(event))
            }
        }
    }

    /// The workers a scale_up that goes now must start (those that do not exist yet),
    /// and records the event as waiting for every one of its pods not yet settled.
    /// The shell spawns each and calls [`Ledger::add_worker`].
    pub fn start_up(&mut self, event: &ScaleEvent) -> Vec<WorkerIdentity> {
        let ScaleKind::Up { pod_count } = event.kind else {
            return Vec::new();
        };
        let progress = self
            .events
            .entry(event.event_id.clone())
            .or_insert_with(|| Progress::new(false));
        progress.queued = false;
        let cancelled = progress.cancelled.clone();
        let mut to_start = Vec::new();
        let mut waiting = HashSet::new();
        let mut pods = Vec::with_capacity(pod_count as usize);
        for index in 0..pod_count {
            let identity = WorkerIdentity {
                task_id: event.task_id.clone(),
                event_id: event.event_id.clone(),
                index,
            };
            let name = identity.pod_name();
            match self.workers.get(name.as_str()) {
                _ if cancelled.contains(&index) => {}
                Some(w) if w.settled => {}
                Some(_) => {
                    waiting.insert(name.clone());
                }
                None => {
                    waiting.insert(name.clone());
                    to_start.push(identity);
                }
            }
            pods.push(name);
        }
        if let Some(progress) = self.events.get_mut(&event.event_id) {
            progress.pods = pods;
            progress.waiting.extend(waiting);
        }
        if !to_start.is_empty() {
            self.charge(&event.tenant, to_start.len());
        }
        to_start
    }

    /// The fair scheduler's accounting of a start.
    fn charge(&mut self, tenant: &str, pods: usize) {
        self.fair.started(&self.rules.policy, tenant, pods);
        let waiting: HashSet<&str> = self
            .queue
            .iter()
            .filter_map(|w| match w {
                Waiting::Up(e, _) => Some(e.tenant.as_str()),
                Waiting::Down { .. } => None,
            })
            .collect();
        if waiting.is_empty() {
            self.fair.idle();
        } else {
            self.fair.forget_idle(|t| waiting.contains(t));
        }
    }

    /// Records a worker the shell just started.
    pub fn add_worker(&mut self, identity: WorkerIdentity, handle: H, start: &WorkerStart) {
        let attempt = match start {
            WorkerStart::Create { attempt, .. } => *attempt,
            WorkerStart::Resume(r) => Resume::pod_attempt(r.observation.as_deref(), r.attempt),
            WorkerStart::CancelledBeforeCreation => 1,
        }
        .max(1);
        let name: Arc<str> = Arc::from(identity.attempt_pod_name(attempt));
        let (settled, unsent, never_created, last, cancelled) = match start {
            WorkerStart::Create {
                pod,
                read_at,
                built_at,
                trace,
                ..
            } => (
                false,
                Some((pod.clone(), *read_at, *built_at, *trace)),
                false,
                None,
                false,
            ),
            WorkerStart::Resume(r) => (r.settled, None, false, r.observation.clone(), r.cancelled),
            WorkerStart::CancelledBeforeCreation => (false, None, true, None, true),
        };
        // From the pod it builds, else the latest view of its pod.
        let (template, priority, tenant) = match start {
            WorkerStart::Create { pod, .. } => {
                let annotation = |key: &str| {
                    pod.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(key))
                        .cloned()
                };
                (
                    annotation(crate::pods::ANNOTATION_TEMPLATE),
                    annotation(crate::pods::ANNOTATION_PRIORITY),
                    annotation(crate::pods::ANNOTATION_TENANT),
                )
            }
            WorkerStart::Resume(r) => {
                let obs = r.observation.as_ref();
                (
                    None,
                    obs.and_then(|o| o.priority.clone()),
                    obs.and_then(|o| o.tenant.clone()),
                )
            }
            WorkerStart::CancelledBeforeCreation => (None, None, None),
        };
        self.by_event
            .entry(identity.event_id.clone())
            .or_default()
            .insert(name.clone());
        self.by_task
            .entry(identity.task_id.clone())
            .or_default()
            .insert(name.clone());
        self.workers.insert(
            name,
            WorkerEntry {
                identity,
                handle,
                attempt,
                incarnation: 0,
                restarts: 0,
                settled,
                unsent,
                never_created,
                last,
                reported: None,
                cancelled,
                template,
                priority,
                tenant,
            },
        );
    }

    /// Whether a new worker of `event_id` may delete its pod once reported.
    pub fn delete_allowed(&self, event_id: &str) -> bool {
        self.acked.contains(event_id)
    }

    /// The worker's create settled (or its cancelled result is durable): its event
    /// stops waiting for it. Returns the event's answer and who waits for it, once every
    /// pod of the event settled.
    pub fn settle(&mut self, pod: &str) -> Option<(EventAccepted, Vec<R>)> {
        let entry = self.workers.get_mut(pod)?;
        entry.settled = true;
        entry.unsent = None;
        let event_id = entry.identity.event_id.clone();
        if let Some(progress) = self.events.get_mut(&event_id) {
            progress.waiting.remove(pod);
        }
        self.complete(&event_id)
    }

    /// Answers the event if nothing of it waits any more.
    pub fn complete(&mut self, event_id: &str) -> Option<(EventAccepted, Vec<R>)> {
        let done = self
            .events
            .get(event_id)
            .is_some_and(|p| !p.queued && p.waiting.is_empty());
        if !done {
            return None;
        }
        let progress = self.events.remove(event_id)?;
        Some((
            EventAccepted {
                event_id: event_id.to_string(),
                pods: progress.pods,
            },
            progress.responders,
        ))
    }

    /// The settle timeout of a started event passed: hands back who still waits (the
    /// shell refuses them; the entry stays pending). The workers carry on.
    pub fn expire(&mut self, event_id: &str) -> Vec<R> {
        match self.events.get_mut(event_id) {
            Some(p) if !p.queued => std::mem::take(&mut p.responders),
            _ => Vec::new(),
        }
    }

    /// A scale_up started: unless settled first, it expires at `deadline` (calls come
    /// in deadline order: now plus the one settle timeout).
    pub fn settle_by(&mut self, event_id: &str, deadline: Instant) {
        self.drop_settled_deadlines();
        self.settle_by.push_back((deadline, event_id.to_string()));
    }

    /// The events whose deadline passed by `now` and who still waits for each (see
    /// [`Ledger::expire`]); events nobody waits for any more are left out.
    pub fn expire_due(&mut self, now: Instant) -> Vec<(String, Vec<R>)> {
        let mut expired = Vec::new();
        while self.settle_by.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, event_id)) = self.settle_by.pop_front() {
                let waiting = self.expire(&event_id);
                if !waiting.is_empty() {
                    expired.push((event_id, waiting));
                }
            }
        }
        expired
    }

    /// When the next started, unsettled scale_up expires: what the shell's one timer is
    /// set for.
    pub fn next_settle_deadline(&mut self) -> Option<Instant> {
        self.drop_settled_deadlines();
        self.settle_by.front().map(|(at, _)| *at)
    }

    /// Drops deadlines at the front whose event settled (or left the books) already:
    /// the queue holds about the events in flight, not every event of the timeout.
    fn drop_settled_deadlines(&mut self) {
        while self
            .settle_by
            .front()
            .is_some_and(|(_, id)| !self.events.contains_key(id))
        {
            self.settle_by.pop_front();
        }
    }

    /// A scale_down: cancels up to `count` unfinished workers of its task (all without
    /// a count): queued ones first (most recent event first; they never ran), then
    /// Pending ones, then the most recently started.
    pub fn scale_down(&mut self, event: &ScaleEvent) -> DownPlan {
        let ScaleKind::Down { pod_count } = event.kind else {
            return DownPlan::default();
        };
        let mut left = pod_count.map_or(usize::MAX, |c| c as usize);
        let mut plan = DownPlan::default();
        // Only scale_ups before it in the stream: a later one is not its to cancel (a
        // scale_down that waited for the first list may have later scale_ups behind it).
        let down_order = scheduler::stream_order(&event.event_id).unwrap_or(u64::MAX);
        // Queued scale_ups of the task, newest first: they never ran.
        let queued: Vec<(usize, String, u32)> = self
            .queue
            .iter()
            .enumerate()
            .rev()
            .filter_map(|(i, w)| match w {
                Waiting::Up(up, q) if up.task_id == event.task_id && q.order < down_order => {
                    match up.kind {
                        ScaleKind::Up { pod_count } => Some((i, up.event_id.clone(), pod_count)),
                        ScaleKind::Down { .. } => None,
                    }
                }
                _ => None,
            })
            .collect();
        let mut emptied = Vec::new();
        for (i, event_id, pod_count) in queued {
            let Some(progress) = self.events.get_mut(&event_id) else {
                continue;
            };
            for index in (0..pod_count).rev() {
                if left == 0 {
                    break;
                }
                if progress.cancelled.insert(index) {
                    left -= 1;
                    let identity = WorkerIdentity {
                        task_id: event.task_id.clone(),
                        event_id: event_id.clone(),
                        index,
                    };
                    // Its answer waits for the cancelled result (the worker the shell
                    // starts for it).
                    progress.waiting.insert(identity.pod_name());
                    progress.pods.push(identity.pod_name());
                    plan.cancel_queued.push(identity);
                }
            }
            if progress.cancelled.len() == pod_count as usize {
                // Nothing of it is left to start: it leaves the queue.
                progress.queued = false;
                emptied.push(i);
            }
        }
        // Highest index first, so removals do not shift the ones still to remove.
        emptied.sort_unstable_by(|a, b| b.cmp(a));
        for i in emptied {
            self.queue.remove(i);
        }
        if left > 0 {
            let candidates = self
                .by_task
                .get(&event.task_id)
                .into_iter()
                .flatten()
                .filter_map(|name| self.workers.get(name).map(|w| (name, w)))
                .filter(|(_, w)| w.reported.is_none() && !w.cancelled)
                .map(|(name, w)| CancelCandidate {
                    pod: name.to_string(),
                    pending: w.last.as_ref().is_none_or(|o| o.phase == PodPhase::Pending),
                    started_at: w.last.as_ref().and_then(|o| o.started_at),
                })
                .collect();
            let count = u32::try_from(left).ok();
            plan.cancel = select_for_scale_down(candidates, count);
        }
        for name in &plan.cancel {
            if let Some(w) = self.workers.get_mut(name.as_str()) {
                w.cancelled = true;
            }
        }
        plan
    }

    /// A worker reported its result. Returns whether it is its first report (for the
    /// metrics).
    pub fn reported(&mut self, result: &WorkerFinished) -> bool {
        match self.workers.get_mut(result.pod.as_str()) {
            Some(w) if w.reported.is_none() => {
                w.reported = Some(result.clone());
                true
            }
            _ => false,
        }
    }

    /// A worker is done (reported and its pod gone): forget it. Its event is forgotten
    /// as acknowledged once it has no live worker left.
    pub fn remove(&mut self, pod: &str) -> Option<WorkerEntry<H>> {
        let entry = self.workers.remove(pod)?;
        let event_id = &entry.identity.event_id;
        if let Some(set) = self.by_event.get_mut(event_id) {
            set.remove(pod);
            if set.is_empty() {
                self.by_event.remove(event_id);
                self.acked.remove(event_id);
            }
        }
        if let Some(set) = self.by_task.get_mut(&entry.identity.task_id) {
            set.remove(pod);
            if set.is_empty() {
                self.by_task.remove(&entry.identity.task_id);
            }
        }
        Some(entry)
    }

    /// The event's entry was acknowledged: its live workers may delete their pods.
    /// Returns them.
    pub fn acknowledged(&mut self, event_id: &str) -> Vec<String> {
        let pods: Vec<String> = self
            .by_event
            .get(event_id)
            .map(|s| s.iter().map(|name| name.to_string()).collect())
            .unwrap_or_default();
        if !pods.is_empty() {
            self.acked.insert(event_id.to_string());
        }
        pods
    }

    /// A worker stopped; `error` unless it stopped because it was done.
    pub fn stopped(&mut self, pod: &str, incarnation: u32, error: Option<&str>) -> AfterStop {
        let Some(error) = error else {
            return AfterStop::Nothing;
        };
        if self.stopping {
            return AfterStop::Nothing;
        }
        let Some(entry) = self.workers.get_mut(pod) else {
            return AfterStop::Nothing;
        };
        if entry.incarnation != incarnation {
            return AfterStop::Nothing;
        }
        entry.restarts += 1;
        entry.incarnation += 1;
        self.restarts_total += 1;
        let (restarts, incarnation) = (entry.restarts, entry.incarnation);
        if restarts > GIVE_UP_RESTARTS {
            self.remove(pod);
            self.given_up.insert(pod.to_string());
            return AfterStop::GiveUp;
        }
        let mut failed = None;
        if restarts > MAX_RESTARTS && entry.reported.is_none() {
            let entry_attempts = entry.attempt;
            let identity = &entry.identity;
            let result = WorkerFinished {
                task_id: identity.task_id.clone(),
                event_id: identity.event_id.clone(),
                pod: pod.to_string(),
                worker_index: identity.index,
                outcome: Outcome::Failed,
                exit_code: None,
                reason: Some(format!("restart budget exhausted: {error}")),
                duration_ms: 0,
                finished_at: jiff::Timestamp::now().to_string(),
                trace_id: None,
                attempts: entry_attempts,
            };
            entry.reported = Some(result.clone());
            failed = Some(Box::new(result));
        }
        AfterStop::Restart {
            attempt: restarts.saturating_sub(1),
            incarnation,
            failed,
        }
    }

    /// How incarnation `incarnation` of a worker starts, from what is known now: a pod
    /// never created (and not cancelled) is created again; otherwise it resumes from the
    /// watch's latest view and the result already reported. `None` if the worker is
    /// gone or a newer incarnation runs.
    pub fn restart(&self, pod: &str, incarnation: u32) -> Option<(WorkerIdentity, WorkerStart)> {
        let entry = self.workers.get(pod)?;
        if entry.incarnation != incarnation || self.stopping {
            return None;
        }
        let start = match (&entry.unsent, entry.settled) {
            _ if entry.never_created && entry.reported.is_none() => {
                WorkerStart::CancelledBeforeCreation
            }
            (Some((pod, read_at, built_at, trace)), false) if !entry.cancelled => {
                WorkerStart::Create {
                    pod: pod.clone(),
                    read_at: *read_at,
                    built_at: *built_at,
                    trace: *trace,
                    attempt: entry.attempt,
                }
            }
            _ => WorkerStart::Resume(Box::new(Resume {
                observation: entry.last.clone(),
                reported: entry.reported.clone(),
                cancelled: entry.cancelled,
                settled: entry.settled,
                delete_allowed: self.acked.contains(&entry.identity.event_id),
                attempt: entry.attempt,
            })),
        };
        Some((entry.identity.clone(), start))
    }

    /// Records a restarted worker's new handle.
    pub fn restarted(&mut self, pod: &str, handle: H) {
        if let Some(w) = self.workers.get_mut(pod) {
            w.handle = handle;
        }
    }

    /// The worker of `previous` moves on to attempt `attempt`, whose pod `create` (built
    /// at `built_at`) it creates next: the books know it by the new pod's name from now
    /// on, keep the pod for a restart until its create settles, and never adopt
    /// `previous` again. Nothing if the worker already moved (the watch showed the new
    /// pod first: [`Ledger::route`]).
    pub fn retrying(
        &mut self,
        previous: &str,
        attempt: u32,
        create: Arc<Pod>,
        built_at: Timestamp,
    ) {
        let Some(name) = create.metadata.name.clone() else {
            return;
        };
        if self.workers.contains_key(previous) {
            self.rekey(previous, &name);
        }
        if let Some(w) = self.workers.get_mut(name.as_str())
            && w.attempt <= attempt
        {
            w.attempt = attempt;
            if w.last.is_none() {
                // Not seen yet: the create may still be sent (again, after a restart).
                // The worker's span stays with its actor: a restart makes no new one.
                w.unsent = Some((create, Instant::now(), built_at, None));
                w.settled = false;
            }
        }
    }

    /// The worker known as `from` is known as `to` from now on (its next attempt's pod);
    /// `from` is superseded.
    fn rekey(&mut self, from: &str, to: &str) {
        let Some(mut entry) = self.workers.remove(from) else {
            return;
        };
        let name: Arc<str> = Arc::from(to);
        entry.last = None;
        entry.unsent = None;
        for set in [
            self.by_event.get_mut(&entry.identity.event_id),
            self.by_task.get_mut(&entry.identity.task_id),
        ]
        .into_iter()
        .flatten()
        {
            set.remove(from);
            set.insert(name.clone());
        }
        self.superseded.insert(from.to_string());
        self.workers.insert(name, entry);
    }

    /// The live worker of another attempt of `identity`'s worker than `attempt`, if any:
    /// its pod name.
    fn other_attempt(&self, identity: &WorkerIdentity, attempt: u32) -> Option<(u32, Arc<str>)> {
        let last = attempt.max(1) + self.rules.max_disruption_retries + 1;
        (1..=last).filter(|a| *a != attempt).find_map(|a| {
            let name = identity.attempt_pod_name(a);
            self.workers
                .get_key_value(name.as_str())
                .map(|(k, _)| (a, k.clone()))
        })
    }

    /// A pod the watch shows: where it goes.
    pub fn route(&mut self, obs: &Arc<PodObservation>) -> Route {
        if let Some(seen) = self.relist.as_mut() {
            seen.insert(obs.name.clone());
        }
        if let Some(w) = self.workers.get_mut(obs.name.as_str()) {
            let first_view = w.last.is_none();
            w.last = Some(Arc::clone(obs));
            return Route::Worker { first_view };
        }
        if self.given_up.contains(&obs.name) {
            return Route::Ignore("given up after failing repeatedly");
        }
        if self.superseded.contains(&obs.name) {
            return Route::Ignore("an earlier attempt of a retried worker");
        }
        if obs.deleting {
            // Being deleted and not ours: a worker already reported it and asked for this.
            return Route::Ignore("being deleted");
        }
        if self.stopping {
            return Route::Ignore("shutting down");
        }
        let (Some(task_id), Some(index), Some(event_id)) =
            (obs.task_id.clone(), obs.worker_index, obs.event_id.clone())
        else {
            return Route::Ignore("lacks the task-id, worker-index or event-id it needs");
        };
        let identity = WorkerIdentity {
            task_id,
            event_id,
            index,
        };
        if identity.attempt_pod_name(obs.attempt) != obs.name {
            return Route::Ignore("its name does not match its labels");
        }
        match self.other_attempt(&identity, obs.attempt) {
            // A later attempt runs: this pod is history (left Failed by an eviction while
            // ottoscaler was restarting: the later attempt's worker deletes it).
            Some((other, worker)) if other > obs.attempt => {
                self.superseded.insert(obs.name.clone());
                Route::Stale {
                    worker: worker.to_string(),
                }
            }
            // The worker of an earlier attempt has not met this pod yet (it listed
            // before it, or its own create of it is in flight): it follows this pod.
            Some((_, worker)) => {
                self.rekey(&worker, &obs.name);
                if let Some(w) = self.workers.get_mut(obs.name.as_str()) {
                    w.attempt = obs.attempt;
                    w.last = Some(Arc::clone(obs));
                }
                Route::Worker { first_view: true }
            }
            None => Route::Adopt(identity),
        }
    }

    /// A pod was deleted: a given-up or superseded one may be forgotten.
    pub fn pod_deleted(&mut self, pod: &str) {
        self.given_up.remove(pod);
        self.superseded.remove(pod);
    }

    /// The watch starts a re-list.
    pub fn relisting(&mut self) {
        self.relist = Some(HashSet::new());
    }

    /// The re-list is done: the settled workers whose pod it did not show, which must
    /// confirm with a lookup whether it is gone. The first list also syncs the books.
    pub fn list_done(&mut self) -> Vec<String> {
        let seen = self.relist.take().unwrap_or_default();
        self.synced = true;
        // Superseded pods the list no longer shows are gone (their deletion may have
        // fallen into the gap).
        self.superseded.retain(|name| seen.contains(name));
        self.workers
            .iter()
            .filter(|(name, w)| w.settled && !w.never_created && !seen.contains(name.as_ref()))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Stops taking events: hands back every queued responder (to refuse them).
    pub fn stop(&mut self) -> Vec<R> {
        self.stopping = true;
        let mut refused = Vec::new();
        for waiting in self.queue.drain(..) {
            match waiting {
                Waiting::Down { responder, .. } => refused.push(responder),
                Waiting::Up(event, _) => {
                    if let Some(p) = self.events.remove(&event.event_id) {
                        refused.extend(p.responders);
                    }
                }
            }
        }
        refused
    }
}

#[cfg(test)]
mod tests;
