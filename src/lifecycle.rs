//! One worker's lifecycle as plain data: a state, the inputs that move it (answers of
//! the API server, watch observations, messages, timers) and the actions each step asks
//! for. [`WorkerPodActor`](crate::actors::worker_pod::WorkerPodActor) is a thin shell
//! that performs the actions and feeds their answers back in; every decision is here,
//! and unit-tested without a control plane.
//!
//! ```text
//!            create answered / seen          outcome decided          published
//!  Creating ───────────────────────► Present ───────────────► (Publishing) ───────► (Published)
//!     │ cancel: decide `cancelled`,     │ ▲                                            │ delete allowed
//!     │ keep waiting for the answer     │ └ watch updates, deadlines                   ▼
//!     └──────────────────────────────── ▼ ─────────────────────────────────────► Deleting ─► DeleteAccepted ─► Gone
//! ```
//!
//! Two things move independently and together make the state: where the pod is
//! ([`PodState`]) and where the result is ([`Report`]). A worker is done when its result
//! is published and its pod is gone; it deletes the pod only once the result is
//! published and deletion is allowed (its event acknowledged, or a scale_down chose it).
//! While its create request is in flight it never deletes and never stops: the request
//! may still create the pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::messages::{Outcome, PodObservation, PodPhase, WorkerFinished};
use crate::outcome::{self, Decision, Timing};
use crate::pods::{Recipe, WorkerIdentity};
use crate::startup::{self, StartupSplit};

/// Where the worker's pod is, as far as the worker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// The create request is in flight (or waits to be sent again after a quota refusal):
    /// the pod may or may not come to exist.
    Creating,
    /// Not known: a lookup (GET) is under way.
    Unknown,
    /// The pod exists.
    Present,
    /// Our DELETE is in flight; `seen_gone` once the watch showed the pod go meanwhile.
    Deleting { seen_gone: bool },
    /// The API server accepted our DELETE; waiting for the pod to disappear.
    DeleteAccepted,
    /// The pod is gone, or never existed.
    Gone,
    /// The previous attempt's pod was disrupted: the shell builds the next attempt's pod
    /// ([`Action::StartAttempt`]), then the worker creates it.
    Building,
}

/// Where the worker's result is.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// No outcome yet.
    Undecided,
    /// Decided and handed to the results publisher; not durable yet.
    Publishing(Box<WorkerFinished>),
    /// Durable on the results stream.
    Published(Box<WorkerFinished>),
}

/// How the create request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateAnswer {
    /// 201: the pod exists now.
    Created,
    /// 409: a pod of that name exists (a redelivered event, or a restarted worker).
    AlreadyExists,
    /// Refused for good (422 invalid spec, 403 forbidden...): the pod will never exist.
    Rejected(String),
    /// 403 `exceeded quota`: capacity, not failure; try again later.
    QuotaExceeded(String),
    /// Transient errors until the retries ran out: whether the pod exists is unknown.
    Failed(String),
}

/// How a DELETE ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteAnswer {
    Accepted,
    NotFound,
    Failed(String),
}

/// Everything that moves a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    CreateAnswered(CreateAnswer),
    /// The watch (or a lookup) shows the pod. Shared with the Supervisor's books.
    Observed(Arc<PodObservation>),
    /// The watch (or a lookup) shows the pod is gone.
    Vanished,
    /// The lookup failed after its retries.
    LookupFailed(String),
    /// The watch had a gap without this pod: look it up.
    Resync,
    /// A deadline timer fired.
    Tick,
    /// The results publisher answered.
    PublishAnswered(Result<(), String>),
    /// The wait after a failed publication is over.
    PublishRetry,
    /// The wait after a quota refusal is over.
    CreateRetry,
    /// The event's entry was acknowledged: the pod may be deleted once reported.
    DeleteAllowed,
    /// A scale_down chose this worker.
    Cancel,
    DeleteAnswered(DeleteAnswer),
    /// A deleted pod has not disappeared for a long time.
    DeleteWatchdog,
    /// The next attempt's pod is built (at `built_at`): create it.
    AttemptBuilt {
        built_at: Timestamp,
    },
    /// The next attempt's pod cannot be built (its template is gone, or the disrupted
    /// pod did not say how it was built): `why`, for the pod disrupted by `disruption`
    /// (the [`Action::StartAttempt`]'s reason).
    AttemptImpossible {
        disruption: String,
        why: String,
    },
}

/// What a step asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send the create request (again, after a quota refusal).
    Create,
    /// Feed [`Input::CreateRetry`] after the backoff of this attempt (0-based).
    CreateAfter { attempt: u32 },
    /// Look the pod up with a GET.
    Lookup,
    /// Hand the result to the results publisher; `first` the first time (log it).
    Publish {
        result: Box<WorkerFinished>,
        first: bool,
    },
    /// Feed [`Input::PublishRetry`] after the backoff of this attempt (0-based).
    PublishAfter { attempt: u32 },
    /// Send a DELETE.
    Delete,
    /// Feed [`Input::Tick`] after this long (replacing any armed timer).
    ArmTimer(Duration),
    /// Disarm the deadline timer.
    CancelTimer,
    /// Feed [`Input::DeleteWatchdog`] after the watchdog period.
    ArmDeleteWatchdog,
    /// The create request settled (the pod exists, or never will): the event stops
    /// waiting for this worker.
    Settled(Result<(), String>),
    /// Answer every waiting scale_down.
    AnswerCancels(Result<(), String>),
    /// Reported and gone: tell the Supervisor and stop.
    Done,
    /// Give up this incarnation; supervision restarts the worker.
    Fail(String),
    /// The pod was first seen Running: record its start-up metrics.
    RecordStart(Box<StartRecord>),
    /// The pod of attempt `attempt - 1`, `previous`, was disrupted: build the pod of
    /// `attempt` from `recipe`, tell the Supervisor, and feed [`Input::AttemptBuilt`] (or
    /// [`Input::AttemptImpossible`]). With `delete_previous` nobody is deleting the
    /// previous pod (the kubelet evicted it and left it Failed): delete it.
    StartAttempt {
        attempt: u32,
        previous: String,
        delete_previous: bool,
        reason: String,
        recipe: Option<Box<Recipe>>,
    },
}

/// The clocks a step reads: monotonic for timers, wall for pod timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: Timestamp,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            wall: Timestamp::now(),
        }
    }
}

/// The worker timeouts and retries of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub pending_timeout: Duration,
    pub image_pull_grace: Duration,
    /// `worker.max_disruption_retries`: new attempts after a disruption (0: none).
    pub max_disruption_retries: u32,
}

/// How a restarted or adopted worker resumes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resume {
    /// The watch's latest view of the pod (`None`: look it up).
    pub observation: Option<Arc<PodObservation>>,
    /// A result an earlier incarnation reported: published again (idempotent), never
    /// decided twice.
    pub reported: Option<WorkerFinished>,
    /// A scale_down chose this worker.
    pub cancelled: bool,
    /// The event no longer waits for this worker's create.
    pub settled: bool,
    /// The event's entry is acknowledged.
    pub delete_allowed: bool,
    /// Which attempt's pod it resumes (1-based; 0 counts as 1). The observation's own
    /// attempt wins when there is one.
    pub attempt: u32,
}

impl Resume {
    /// The attempt whose pod it resumes: the observation's when there is one, else
    /// `attempt`; at least 1.
    pub fn pod_attempt(observation: Option<&PodObservation>, attempt: u32) -> u32 {
        observation.map_or(attempt, |o| o.attempt).max(1)
    }
}

/// What a worker learnt when it first saw its pod Running, for the start-up metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRecord {
    /// The pod's `ottoscaler.io/template` annotation.
    pub template: Option<String>,
    /// The pod's `ottoscaler.io/priority` annotation.
    pub priority: Option<String>,
    /// Event entry added (XADD) -> pod first seen Running; `None` when the entry id
    /// gives no usable time.
    pub queue_wait: Option<Duration>,
    /// Created -> scheduled -> container running, from the pod's own timestamps.
    pub split: StartupSplit,
}

/// One worker's state. Build it with [`Lifecycle::create`], [`Lifecycle::resume`] or
/// [`Lifecycle::cancelled_before_creation`], then feed it [`Input`]s with
/// [`Lifecycle::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    identity: WorkerIdentity,
    /// The pod of the current attempt.
    pod_name: String,
    /// The current attempt, 1-based: one more after each disruption.
    attempt: u32,
    deadlines: Deadlines,
    pod: PodState,
    report: Report,
    /// The event is acknowledged, or a scale_down chose the worker.
    delete_allowed: bool,
    cancelled: bool,
    /// The event no longer waits for this worker's create.
    settled: bool,
    /// Ottoscaler asked for the pod's deletion (this or an earlier incarnation).
    deleted_by_us: bool,
    /// When the pod was built or created (its annotation), for timeouts and duration.
    created_at: Option<Timestamp>,
    /// When this worker began, for timeouts while `created_at` is unknown.
    started: Instant,
    last: Option<Arc<PodObservation>>,
    /// Since when the container waits on an image error.
    image_error_since: Option<Instant>,
    publish_attempts: u32,
    quota_attempts: u32,
    /// The timer is armed (so that deciding disarms it).
    timer_armed: bool,
    /// This worker saw its pod before it ran (it created it, or saw it Pending): its
    /// first Running view is a start worth recording. A pod already running when the
    /// worker took it over is not recorded (an earlier incarnation may have).
    saw_before_running: bool,
    /// The start was recorded (at most once per incarnation).
    start_recorded: bool,
    done: bool,
}

impl Lifecycle {
    fn new(identity: WorkerIdentity, deadlines: Deadlines, clock: Clock) -> Lifecycle {
        Lifecycle {
            pod_name: identity.pod_name(),
            attempt: 1,
            identity,
            deadlines,
            pod: PodState::Creating,
            report: Report::Undecided,
            delete_allowed: false,
            cancelled: false,
            settled: false,
            deleted_by_us: false,
            created_at: None,
            started: clock.now,
            last: None,
            image_error_since: None,
            publish_attempts: 0,
            quota_attempts: 0,
            timer_armed: false,
            saw_before_running: false,
            start_recorded: false,
            done: false,
        }
    }

    /// A new worker of a scale_up: create its pod (built at `built_at`).
    pub fn create(
        identity: WorkerIdentity,
        deadlines: Deadlines,
        built_at: Timestamp,
        clock: Clock,
    ) -> (Lifecycle, Vec<Action>) {
        Lifecycle::create_attempt(identity, deadlines, built_at, 1, clock)
    }

    /// Creates the pod of attempt `attempt` (a restarted worker whose later attempt's
    /// create had not settled).
    pub fn create_attempt(
        identity: WorkerIdentity,
        deadlines: Deadlines,
        built_at: Timestamp,
        attempt: u32,
        clock: Clock,
    ) -> (Lifecycle, Vec<Action>) {
        let mut w = Lifecycle::new(identity, deadlines, clock);
        w.set_attempt(attempt);
        w.created_at = Some(built_at);
        w.saw_before_running = true;
        (w, vec![Action::Create])
    }

    /// A worker of a queued scale_up that a scale_down cancelled before its pod was ever
    /// created: its `cancelled` result is published, and no pod is made.
    pub fn cancelled_before_creation(
        identity: WorkerIdentity,
        deadlines: Deadlines,
        clock: Clock,
    ) -> (Lifecycle, Vec<Action>) {
        let mut w = Lifecycle::new(identity, deadlines, clock);
        w.pod = PodState::Gone;
        w.cancelled = true;
        w.delete_allowed = true;
        let mut actions = Vec::new();
        w.finish(cancelled_decision(), clock, &mut actions);
        (w, actions)
    }

    /// Takes over an existing pod (adopted at start, or a restarted worker).
    pub fn resume(
        identity: WorkerIdentity,
        deadlines: Deadlines,
        resume: Resume,
        clock: Clock,
    ) -> (Lifecycle, Vec<Action>) {
        let Resume {
            observation,
            reported,
            cancelled,
            settled,
            delete_allowed,
            attempt,
        } = resume;
        let mut w = Lifecycle::new(identity, deadlines, clock);
        w.set_attempt(Resume::pod_attempt(observation.as_deref(), attempt));
        let mut actions = Vec::new();
        w.settled = settled;
        w.cancelled = cancelled;
        w.delete_allowed = delete_allowed || cancelled;
        if let Some(result) = reported {
            w.report = Report::Publishing(Box::new(result.clone()));
            actions.push(Action::Publish {
                result: Box::new(result),
                first: false,
            });
        }
        // Only ottoscaler deletes pods it reported or cancelled: an earlier incarnation did.
        let decided = !matches!(w.report, Report::Undecided);
        if observation.as_ref().is_some_and(|o| o.deleting) && (decided || cancelled) {
            w.deleted_by_us = true;
        }
        match observation {
            Some(obs) => {
                w.pod = PodState::Present;
                w.settle(Ok(()), &mut actions);
                w.observe(obs, clock, &mut actions);
            }
            None => {
                w.pod = PodState::Unknown;
                actions.push(Action::Lookup);
            }
        }
        if cancelled && matches!(w.report, Report::Undecided) {
            w.finish(cancelled_decision(), clock, &mut actions);
        }
        w.after_step(&mut actions);
        (w, actions)
    }

    pub fn pod(&self) -> PodState {
        self.pod
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn pod_name(&self) -> &str {
        &self.pod_name
    }

    pub fn identity(&self) -> &WorkerIdentity {
        &self.identity
    }

    /// The current attempt, 1-based.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt.max(1);
        self.pod_name = self.identity.attempt_pod_name(self.attempt);
    }

    /// Applies one input; returns what to do. A done worker ignores everything.
    pub fn step(&mut self, input: Input, clock: Clock) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.done {
            return actions;
        }
        match input {
            Input::CreateAnswered(answer) => self.create_answered(answer, clock, &mut actions),
            Input::Observed(obs) if obs.name != self.pod_name => {
                // Another attempt's pod. A later one exists (an earlier incarnation made
                // it): follow it. An earlier one is history.
                if obs.attempt > self.attempt
                    && matches!(self.report, Report::Undecided)
                    && !self.cancelled
                {
                    self.begin_attempt(obs.attempt, clock);
                    // Made and maybe started by an earlier incarnation: not a start to
                    // record unless seen Pending first.
                    self.saw_before_running = false;
                    self.pod = PodState::Present;
                    self.settle(Ok(()), &mut actions);
                    self.observe(obs, clock, &mut actions);
                }
            }
            Input::Observed(obs) => match self.pod {
                // A late view of a pod we know is gone (or are deleting anyway).
                PodState::Gone | PodState::Deleting { seen_gone: true } => {}
                PodState::Creating | PodState::Unknown | PodState::Building => {
                    // Seen: it exists, whatever the create request still says.
                    self.pod = PodState::Present;
                    self.settle(Ok(()), &mut actions);
                    self.observe(obs, clock, &mut actions);
                }
                PodState::Present | PodState::Deleting { .. } | PodState::DeleteAccepted => {
                    self.observe(obs, clock, &mut actions)
                }
            },
            Input::Vanished => match self.pod {
                // Our DELETE is still unanswered: its answer completes the worker (so
                // the request is never dropped half-way).
                PodState::Deleting { .. } => self.pod = PodState::Deleting { seen_gone: true },
                // The disrupted previous attempt's pod went, as expected.
                PodState::Building => {}
                _ => self.gone(clock, &mut actions),
            },
            Input::LookupFailed(reason) => {
                actions.push(Action::Fail(format!("looking up the pod failed: {reason}")))
            }
            Input::Resync => {
                if matches!(self.pod, PodState::Present | PodState::DeleteAccepted) {
                    actions.push(Action::Lookup);
                }
            }
            Input::Tick => {
                self.timer_armed = false;
                self.evaluate(clock, &mut actions);
            }
            Input::PublishAnswered(Ok(())) => {
                if let Report::Publishing(result) = &self.report {
                    self.report = Report::Published(result.clone());
                }
                if self.pod == PodState::Gone {
                    // A worker whose pod never came to exist: its durable result is what
                    // its event waited for.
                    self.settle(Ok(()), &mut actions);
                }
            }
            Input::PublishAnswered(Err(_)) => {
                actions.push(Action::PublishAfter {
                    attempt: self.publish_attempts,
                });
                self.publish_attempts = self.publish_attempts.saturating_add(1);
            }
            Input::PublishRetry => {
                if let Report::Publishing(result) = &self.report {
                    actions.push(Action::Publish {
                        result: result.clone(),
                        first: false,
                    });
                }
            }
            Input::CreateRetry => {
                if self.pod == PodState::Creating {
                    actions.push(Action::Create);
                }
            }
            Input::DeleteAllowed => self.delete_allowed = true,
            Input::Cancel => {
                if self.pod == PodState::Building {
                    // The next attempt's pod was never sent: there is none to delete.
                    self.pod = PodState::Gone;
                    self.settle(Ok(()), &mut actions);
                }
                self.cancelled = true;
                self.delete_allowed = true;
                if matches!(self.report, Report::Undecided) {
                    self.finish(cancelled_decision(), clock, &mut actions);
                }
            }
            Input::DeleteAnswered(answer) => self.delete_answered(answer, clock, &mut actions),
            Input::DeleteWatchdog => {
                if self.pod == PodState::DeleteAccepted {
                    // Still not gone: the deletion may have been lost; ask again (404
                    // means it is gone after all).
                    self.pod = PodState::Deleting { seen_gone: false };
                    actions.push(Action::Delete);
                }
            }
            Input::AttemptBuilt { built_at } => {
                if self.pod == PodState::Building {
                    self.created_at = Some(built_at);
                    self.pod = PodState::Creating;
                    actions.push(Action::Create);
                }
            }
            Input::AttemptImpossible { disruption, why } => {
                if self.pod == PodState::Building {
                    self.pod = PodState::Gone;
                    self.settle(Ok(()), &mut actions);
                    self.finish(
                        Decision {
                            outcome: Outcome::Lost,
                            exit_code: None,
                            reason: Some(format!(
                                "pod disrupted ({disruption}); attempt {} cannot be made: {why}",
                                self.attempt
                            )),
                        },
                        clock,
                        &mut actions,
                    );
                }
            }
        }
        self.after_step(&mut actions);
        actions
    }

    fn create_answered(&mut self, answer: CreateAnswer, clock: Clock, actions: &mut Vec<Action>) {
        if self.pod != PodState::Creating {
            // The watch showed the pod before the answer came: nothing new.
            return;
        }
        match answer {
            CreateAnswer::Created | CreateAnswer::AlreadyExists => {
                self.pod = PodState::Present;
                self.settle(Ok(()), actions);
                self.evaluate(clock, actions);
            }
            CreateAnswer::Rejected(reason) => {
                self.pod = PodState::Gone;
                self.settle(Err(reason.clone()), actions);
                self.finish(
                    Decision {
                        outcome: Outcome::Failed,
                        exit_code: None,
                        reason: Some(format!("pod could not be created: {reason}")),
                    },
                    clock,
                    actions,
                );
            }
            CreateAnswer::QuotaExceeded(message) => {
                let pending_for = self.pending_for(clock);
                if !matches!(self.report, Report::Undecided) {
                    // Cancelled meanwhile: the pod will never be made.
                    self.pod = PodState::Gone;
                    self.settle(Ok(()), actions);
                } else if pending_for >= self.deadlines.pending_timeout {
                    self.pod = PodState::Gone;
                    self.settle(Err(message.clone()), actions);
                    self.finish(
                        Decision {
                            outcome: Outcome::TimedOut,
                            exit_code: None,
                            reason: Some(format!(
                                "pending longer than {} ({message})",
                                humantime::format_duration(self.deadlines.pending_timeout)
                            )),
                        },
                        clock,
                        actions,
                    );
                } else {
                    actions.push(Action::CreateAfter {
                        attempt: self.quota_attempts,
                    });
                    self.quota_attempts = self.quota_attempts.saturating_add(1);
                }
            }
            CreateAnswer::Failed(_) if self.cancelled => {
                // Whether the pod exists is unknown, and it is not wanted: once the
                // result is published it is deleted (404: it never came to be).
                self.pod = PodState::Unknown;
            }
            CreateAnswer::Failed(reason) => {
                actions.push(Action::Fail(format!("creating the pod failed: {reason}")));
            }
        }
    }

    fn delete_answered(&mut self, answer: DeleteAnswer, clock: Clock, actions: &mut Vec<Action>) {
        let PodState::Deleting { seen_gone } = self.pod else {
            return;
        };
        match answer {
            DeleteAnswer::Accepted if seen_gone => self.gone(clock, actions),
            DeleteAnswer::Accepted => {
                self.pod = PodState::DeleteAccepted;
                actions.push(Action::ArmDeleteWatchdog);
            }
            DeleteAnswer::NotFound => self.gone(clock, actions),
            DeleteAnswer::Failed(reason) => {
                let reason = format!("deleting the pod failed: {reason}");
                actions.push(Action::AnswerCancels(Err(reason.clone())));
                actions.push(Action::Fail(reason));
            }
        }
    }

    /// The pod is gone (or never came to be): a worker without an outcome lost it.
    fn gone(&mut self, clock: Clock, actions: &mut Vec<Action>) {
        self.pod = PodState::Gone;
        self.settle(Ok(()), actions);
        if matches!(self.report, Report::Undecided) {
            let reason = if self.deleted_by_us {
                "pod deleted before its outcome was known"
            } else {
                "pod disappeared without ottoscaler deleting it"
            };
            self.finish(
                Decision {
                    outcome: Outcome::Lost,
                    exit_code: self
                        .last
                        .as_ref()
                        .and_then(|o| o.terminated.as_ref())
                        .map(|t| t.exit_code),
                    reason: Some(self.with_disruption(reason)),
                },
                clock,
                actions,
            );
        }
    }

    fn settle(&mut self, result: Result<(), String>, actions: &mut Vec<Action>) {
        if !self.settled {
            self.settled = true;
            actions.push(Action::Settled(result));
        }
    }

    fn observe(&mut self, obs: Arc<PodObservation>, clock: Clock, actions: &mut Vec<Action>) {
        if let Some(at) = obs.created_at {
            self.created_at = Some(at);
        }
        self.note_start(&obs, clock, actions);
        if outcome::has_image_error(&obs) {
            self.image_error_since.get_or_insert(clock.now);
        } else {
            self.image_error_since = None;
        }
        if self.retries_after(&obs) {
            return self.next_attempt(&obs, clock, actions);
        }
        self.last = Some(obs);
        self.evaluate(clock, actions);
    }

    /// Is `obs` a disruption this worker answers with a new attempt? Only before an
    /// outcome is decided, while attempts are left.
    fn retries_after(&self, obs: &PodObservation) -> bool {
        obs.disruption.is_some()
            && matches!(self.report, Report::Undecided)
            && !self.cancelled
            && self.attempt <= self.deadlines.max_disruption_retries
    }

    /// The current attempt's pod is disrupted: move on to the next attempt, whose pod the
    /// shell builds ([`Action::StartAttempt`]).
    fn next_attempt(&mut self, obs: &PodObservation, clock: Clock, actions: &mut Vec<Action>) {
        let previous = self.pod_name.clone();
        let Some(disruption) = obs.disruption.as_deref() else {
            return;
        };
        self.begin_attempt(self.attempt + 1, clock);
        if self.timer_armed {
            self.timer_armed = false;
            actions.push(Action::CancelTimer);
        }
        self.pod = PodState::Building;
        actions.push(Action::StartAttempt {
            attempt: self.attempt,
            previous,
            delete_previous: !obs.deleting,
            reason: disruption.reason.clone(),
            recipe: disruption.recipe.clone().map(Box::new),
        });
    }

    /// Forgets everything about the previous attempt's pod: attempt `attempt` starts.
    fn begin_attempt(&mut self, attempt: u32, clock: Clock) {
        self.set_attempt(attempt);
        self.settled = false;
        self.deleted_by_us = false;
        self.created_at = None;
        self.started = clock.now;
        self.last = None;
        self.image_error_since = None;
        self.quota_attempts = 0;
        self.saw_before_running = true;
        self.start_recorded = false;
    }

    /// `reason`, and why the pod was disrupted when it was (no attempts were left).
    fn with_disruption(&self, reason: &str) -> String {
        match self.last.as_ref().and_then(|o| o.disruption.as_deref()) {
            Some(d) => format!(
                "{reason}; disrupted ({}) on attempt {}, no retries left",
                d.reason, self.attempt
            ),
            None => reason.to_string(),
        }
    }

    /// Records the pod's start the first time it is seen Running after being seen (or
    /// created) before it ran.
    fn note_start(&mut self, obs: &PodObservation, clock: Clock, actions: &mut Vec<Action>) {
        match obs.phase {
            PodPhase::Pending => self.saw_before_running = true,
            PodPhase::Running if self.saw_before_running && !self.start_recorded => {
                self.start_recorded = true;
                actions.push(Action::RecordStart(Box::new(StartRecord {
                    template: obs.template.clone(),
                    priority: obs.priority.clone(),
                    queue_wait: startup::queue_wait(&self.identity.event_id, clock.wall),
                    split: startup::startup_split(obs),
                })));
            }
            _ => {}
        }
    }

    /// Applies the outcome rules to what is known; arms the timer for the next deadline.
    fn evaluate(&mut self, clock: Clock, actions: &mut Vec<Action>) {
        if !matches!(self.report, Report::Undecided)
            || !matches!(self.pod, PodState::Present | PodState::DeleteAccepted)
        {
            return;
        }
        let pending_for = self.pending_for(clock);
        let timing = Timing {
            pending_for,
            image_error_for: self.image_error_since.map(|s| clock.now.duration_since(s)),
            pending_timeout: self.deadlines.pending_timeout,
            image_pull_grace: self.deadlines.image_pull_grace,
        };
        let obs = self
            .last
            .clone()
            .unwrap_or_else(|| Arc::new(PodObservation::pending(&self.pod_name)));
        // Deleted by someone else: lost, even if the kill made it Failed (exit 137),
        // unless it had already succeeded.
        let decision = if obs.deleting && !self.deleted_by_us && obs.phase != PodPhase::Succeeded {
            Some(Decision {
                outcome: Outcome::Lost,
                exit_code: obs.terminated.as_ref().map(|t| t.exit_code),
                reason: Some(self.with_disruption("pod deleted by someone other than ottoscaler")),
            })
        } else {
            outcome::decide(&obs, &timing).map(|mut d| {
                if d.outcome != Outcome::Succeeded && obs.disruption.is_some() {
                    d.reason = Some(self.with_disruption(d.reason.as_deref().unwrap_or("")));
                }
                d
            })
        };
        if let Some(decision) = decision {
            return self.finish(decision, clock, actions);
        }
        // Nothing yet: wake up at the next deadline that could decide it.
        let mut next: Option<Duration> = None;
        if obs.phase == PodPhase::Pending {
            next = Some(self.deadlines.pending_timeout.saturating_sub(pending_for));
        }
        if let Some(waited) = timing.image_error_for {
            let left = self.deadlines.image_pull_grace.saturating_sub(waited);
            next = Some(next.map_or(left, |n| n.min(left)));
        }
        match next {
            // A few ms late rather than early, so the deadline has surely passed.
            Some(after) => {
                self.timer_armed = true;
                actions.push(Action::ArmTimer(after + Duration::from_millis(5)));
            }
            None if self.timer_armed => {
                self.timer_armed = false;
                actions.push(Action::CancelTimer);
            }
            None => {}
        }
    }

    /// How long the pod has existed, or the worker has waited for it.
    fn pending_for(&self, clock: Clock) -> Duration {
        match self.created_at {
            Some(created) => {
                Duration::try_from(clock.wall.duration_since(created)).unwrap_or(Duration::ZERO)
            }
            None => clock.now.duration_since(self.started),
        }
    }

    /// The outcome is decided: report it, once.
    fn finish(&mut self, decision: Decision, clock: Clock, actions: &mut Vec<Action>) {
        if !matches!(self.report, Report::Undecided) {
            return;
        }
        if self.timer_armed {
            self.timer_armed = false;
            actions.push(Action::CancelTimer);
        }
        let duration_ms = u64::try_from(self.pending_for(clock).as_millis()).unwrap_or(u64::MAX);
        let result = Box::new(WorkerFinished {
            task_id: self.identity.task_id.clone(),
            event_id: self.identity.event_id.clone(),
            pod: self.pod_name.clone(),
            worker_index: self.identity.index,
            outcome: decision.outcome,
            exit_code: decision.exit_code,
            reason: decision.reason,
            duration_ms,
            finished_at: clock.wall.to_string(),
            trace_id: None,
            attempts: self.attempt,
        });
        self.report = Report::Publishing(result.clone());
        actions.push(Action::Publish {
            result,
            first: true,
        });
    }

    /// After every step: delete when allowed, answer scale_downs, finish when done.
    fn after_step(&mut self, actions: &mut Vec<Action>) {
        if actions.iter().any(|a| matches!(a, Action::Fail(_))) {
            return;
        }
        let published = matches!(self.report, Report::Published(_));
        if published
            && self.delete_allowed
            && matches!(self.pod, PodState::Present | PodState::Unknown)
        {
            self.pod = PodState::Deleting { seen_gone: false };
            self.deleted_by_us = true;
            actions.push(Action::Delete);
        }
        if self.cancelled
            && published
            && matches!(self.pod, PodState::Gone | PodState::DeleteAccepted)
        {
            actions.push(Action::AnswerCancels(Ok(())));
        }
        if published && self.pod == PodState::Gone {
            self.done = true;
            actions.push(Action::Done);
        }
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

#[cfg(test)]
mod tests;
