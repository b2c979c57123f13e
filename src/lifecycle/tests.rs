//! The worker state machine, step by step: every outcome of the contract and every
//! message a worker accepts, with the actions each step asks for.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::*;
use crate::messages::{Outcome, PodObservation, PodPhase, Terminated};

const DEADLINES: Deadlines = Deadlines {
    pending_timeout: Duration::from_secs(300),
    image_pull_grace: Duration::from_secs(60),
    max_disruption_retries: 2,
};

fn identity() -> WorkerIdentity {
    WorkerIdentity {
        task_id: "task-1".into(),
        event_id: "1-0".into(),
        index: 0,
    }
}

/// A clock `secs` after the test's start, wall and monotonic alike.
struct Clocks {
    start: Instant,
    wall: Timestamp,
}

impl Clocks {
    fn new() -> Clocks {
        Clocks {
            start: Instant::now(),
            wall: Timestamp::from_second(1_800_000_000).expect("valid"),
        }
    }

    fn at(&self, secs: u64) -> Clock {
        let d = Duration::from_secs(secs);
        Clock {
            now: self.start + d,
            wall: self.wall + jiff::SignedDuration::from_secs(secs as i64),
        }
    }
}

fn obs(phase: PodPhase) -> PodObservation {
    PodObservation {
        phase,
        ..PodObservation::pending(&identity().pod_name())
    }
}

fn terminated(phase: PodPhase, code: i32, reason: &str) -> PodObservation {
    PodObservation {
        terminated: Some(Terminated {
            exit_code: code,
            reason: Some(reason.into()),
        }),
        ..obs(phase)
    }
}

/// A worker whose pod was just created (answered 201) at second 0.
fn created(c: &Clocks) -> Lifecycle {
    let (mut w, actions) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    assert_eq!(actions, vec![Action::Create]);
    let actions = w.step(Input::CreateAnswered(CreateAnswer::Created), c.at(0));
    assert_eq!(
        actions,
        vec![
            Action::Settled(Ok(())),
            Action::ArmTimer(DEADLINES.pending_timeout + Duration::from_millis(5))
        ]
    );
    w
}

/// The result a step asked to publish first, if any.
fn published(actions: &[Action]) -> Option<WorkerFinished> {
    actions.iter().find_map(|a| match a {
        Action::Publish {
            result,
            first: true,
        } => Some((**result).clone()),
        _ => None,
    })
}

/// Publishes, allows deletion, and sees the pod go: the whole tail of a lifecycle.
fn finish_cleanly(w: &mut Lifecycle, c: &Clocks) {
    assert_eq!(w.step(Input::PublishAnswered(Ok(())), c.at(10)), vec![]);
    assert_eq!(w.step(Input::DeleteAllowed, c.at(10)), vec![Action::Delete]);
    assert_eq!(
        w.step(Input::DeleteAnswered(DeleteAnswer::Accepted), c.at(10)),
        vec![Action::ArmDeleteWatchdog]
    );
    assert_eq!(w.step(Input::Vanished, c.at(11)), vec![Action::Done]);
    assert!(w.is_done());
}

#[test]
fn a_succeeded_pod_is_reported_then_deleted_once_acknowledged() {
    let c = Clocks::new();
    let mut w = created(&c);
    let actions = w.step(Input::Observed(obs(PodPhase::Running).into()), c.at(1));
    assert!(start_of(&actions).is_some(), "{actions:?}");
    assert_eq!(actions.last(), Some(&Action::CancelTimer));
    let actions = w.step(
        Input::Observed(terminated(PodPhase::Succeeded, 0, "Completed").into()),
        c.at(5),
    );
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.duration_ms, 5_000);
    assert_eq!(result.pod, identity().pod_name());
    finish_cleanly(&mut w, &c);
}

#[test]
fn a_failed_pod_reports_exit_code_and_reason() {
    let c = Clocks::new();
    let mut w = created(&c);
    let actions = w.step(
        Input::Observed(terminated(PodPhase::Failed, 3, "Error").into()),
        c.at(2),
    );
    let result = published(&actions).expect("published");
    assert_eq!(
        (result.outcome, result.exit_code, result.reason.as_deref()),
        (Outcome::Failed, Some(3), Some("Error"))
    );
    finish_cleanly(&mut w, &c);
}

#[test]
fn a_rejected_create_is_failed_with_the_api_message_and_settles_the_event() {
    let c = Clocks::new();
    let (mut w, _) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    let actions = w.step(
        Input::CreateAnswered(CreateAnswer::Rejected("forbidden: no".into())),
        c.at(0),
    );
    assert_eq!(actions[0], Action::Settled(Err("forbidden: no".into())));
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(
        result.reason.as_deref(),
        Some("pod could not be created: forbidden: no")
    );
    // No pod: done as soon as the result is durable, no DELETE.
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(1)),
        vec![Action::Done]
    );
}

#[test]
fn pending_past_the_timeout_is_timed_out_when_the_timer_fires() {
    let c = Clocks::new();
    let mut w = created(&c);
    assert_eq!(
        w.step(Input::Tick, c.at(100)),
        vec![Action::ArmTimer(
            Duration::from_secs(200) + Duration::from_millis(5)
        )]
    );
    let actions = w.step(Input::Tick, c.at(301));
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert!(
        result
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("pending longer than 5m")),
        "{result:?}"
    );
}

#[test]
fn an_image_error_is_timed_out_after_the_grace() {
    let c = Clocks::new();
    let mut w = created(&c);
    let pulling = PodObservation {
        waiting_reason: Some("ImagePullBackOff".into()),
        ..obs(PodPhase::Pending)
    };
    let actions = w.step(Input::Observed(pulling.clone().into()), c.at(1));
    assert_eq!(
        actions,
        vec![Action::ArmTimer(
            DEADLINES.image_pull_grace + Duration::from_millis(5)
        )]
    );
    let actions = w.step(Input::Tick, c.at(62));
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert!(
        result
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("ImagePullBackOff"))
    );
}

#[test]
fn deadline_exceeded_is_timed_out() {
    let c = Clocks::new();
    let mut w = created(&c);
    let over = PodObservation {
        pod_reason: Some("DeadlineExceeded".into()),
        ..obs(PodPhase::Failed)
    };
    let result = published(&w.step(Input::Observed(over.into()), c.at(3600))).expect("published");
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert_eq!(result.reason.as_deref(), Some("DeadlineExceeded"));
}

#[test]
fn a_pod_that_vanishes_is_lost_and_the_worker_ends_once_reported() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(obs(PodPhase::Running).into()), c.at(1));
    let actions = w.step(Input::Vanished, c.at(2));
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Lost);
    // Vanished without a disruption seen: lost, not retried.
    assert_eq!(result.attempts, 1);
    assert_eq!(
        result.reason.as_deref(),
        Some("pod disappeared without ottoscaler deleting it")
    );
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(2)),
        vec![Action::Done]
    );
}

#[test]
fn a_pod_deleted_by_someone_else_is_lost_even_if_the_kill_failed_it() {
    let c = Clocks::new();
    let mut w = created(&c);
    let killed = PodObservation {
        deleting: true,
        ..terminated(PodPhase::Failed, 137, "Error")
    };
    let result = published(&w.step(Input::Observed(killed.into()), c.at(4))).expect("published");
    assert_eq!(
        (result.outcome, result.exit_code),
        (Outcome::Lost, Some(137))
    );
}

#[test]
fn cancel_of_a_running_worker_reports_cancelled_deletes_and_answers_when_accepted() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(obs(PodPhase::Running).into()), c.at(1));
    let result = published(&w.step(Input::Cancel, c.at(2))).expect("published");
    assert_eq!(result.outcome, Outcome::Cancelled);
    // Deleted only once the result is durable; a scale_down is its own acknowledgement.
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(2)),
        vec![Action::Delete]
    );
    assert_eq!(
        w.step(Input::DeleteAnswered(DeleteAnswer::Accepted), c.at(2)),
        vec![Action::ArmDeleteWatchdog, Action::AnswerCancels(Ok(()))]
    );
    // The kill makes it Failed: it stays cancelled, and is not decided again.
    let killed = PodObservation {
        deleting: true,
        ..terminated(PodPhase::Failed, 137, "Error")
    };
    assert_eq!(
        w.step(Input::Observed(killed.into()), c.at(3)),
        vec![Action::AnswerCancels(Ok(()))]
    );
    assert_eq!(
        w.step(Input::Vanished, c.at(4)),
        vec![Action::AnswerCancels(Ok(())), Action::Done]
    );
}

#[test]
fn cancel_while_creating_waits_for_the_create_answer_then_deletes_the_pod() {
    let c = Clocks::new();
    let (mut w, _) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    let result = published(&w.step(Input::Cancel, c.at(1))).expect("published at once");
    assert_eq!(result.outcome, Outcome::Cancelled);
    // Published, but the POST is still out: no DELETE (it could overtake the POST), no stop.
    assert_eq!(w.step(Input::PublishAnswered(Ok(())), c.at(1)), vec![]);
    assert_eq!(w.pod(), PodState::Creating);
    // The POST did create it: it settles the scale_up and is deleted.
    assert_eq!(
        w.step(Input::CreateAnswered(CreateAnswer::Created), c.at(20)),
        vec![Action::Settled(Ok(())), Action::Delete]
    );
    assert_eq!(
        w.step(Input::DeleteAnswered(DeleteAnswer::Accepted), c.at(20)),
        vec![Action::ArmDeleteWatchdog, Action::AnswerCancels(Ok(()))]
    );
    assert_eq!(
        w.step(Input::Vanished, c.at(21)),
        vec![Action::AnswerCancels(Ok(())), Action::Done]
    );
}

#[test]
fn cancel_while_creating_whose_create_failed_deletes_what_may_exist() {
    let c = Clocks::new();
    let (mut w, _) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    w.step(Input::Cancel, c.at(1));
    w.step(Input::PublishAnswered(Ok(())), c.at(1));
    // The retries ran out: it may exist. Not a failure of the worker: delete it.
    let actions = w.step(
        Input::CreateAnswered(CreateAnswer::Failed("timed out".into())),
        c.at(60),
    );
    assert_eq!(actions, vec![Action::Delete]);
    assert_eq!(
        w.step(Input::DeleteAnswered(DeleteAnswer::NotFound), c.at(60)),
        vec![
            Action::Settled(Ok(())),
            Action::AnswerCancels(Ok(())),
            Action::Done
        ]
    );
}

#[test]
fn a_worker_cancelled_before_creation_publishes_and_settles_without_a_pod() {
    let c = Clocks::new();
    let (mut w, actions) = Lifecycle::cancelled_before_creation(identity(), DEADLINES, c.at(0));
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Cancelled);
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(0)),
        vec![
            Action::Settled(Ok(())),
            Action::AnswerCancels(Ok(())),
            Action::Done
        ]
    );
}

#[test]
fn the_watch_seeing_the_pod_before_the_create_answer_settles_it_once() {
    let c = Clocks::new();
    let (mut w, _) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    let actions = w.step(Input::Observed(obs(PodPhase::Pending).into()), c.at(0));
    assert_eq!(actions[0], Action::Settled(Ok(())));
    // The late 201 changes nothing.
    assert_eq!(
        w.step(Input::CreateAnswered(CreateAnswer::Created), c.at(0)),
        vec![]
    );
}

#[test]
fn a_create_that_keeps_failing_fails_the_incarnation() {
    let c = Clocks::new();
    let (mut w, _) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    assert_eq!(
        w.step(
            Input::CreateAnswered(CreateAnswer::Failed("503".into())),
            c.at(30)
        ),
        vec![Action::Fail("creating the pod failed: 503".into())]
    );
}

#[test]
fn exceeded_quota_waits_and_retries_then_times_out_with_the_quota_message() {
    let c = Clocks::new();
    let (mut w, _) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    let quota =
        || Input::CreateAnswered(CreateAnswer::QuotaExceeded("exceeded quota: pods=2".into()));
    assert_eq!(
        w.step(quota(), c.at(1)),
        vec![Action::CreateAfter { attempt: 0 }]
    );
    assert_eq!(w.step(Input::CreateRetry, c.at(2)), vec![Action::Create]);
    assert_eq!(
        w.step(quota(), c.at(2)),
        vec![Action::CreateAfter { attempt: 1 }]
    );
    assert_eq!(w.step(Input::CreateRetry, c.at(3)), vec![Action::Create]);
    // Quota freed: created after all.
    assert_eq!(
        w.step(Input::CreateAnswered(CreateAnswer::Created), c.at(3))[0],
        Action::Settled(Ok(()))
    );

    let (mut w, _) = Lifecycle::create(identity(), DEADLINES, c.wall, c.at(0));
    let actions = w.step(quota(), c.at(301));
    assert_eq!(
        actions[0],
        Action::Settled(Err("exceeded quota: pods=2".into()))
    );
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert_eq!(
        result.reason.as_deref(),
        Some("pending longer than 5m (exceeded quota: pods=2)")
    );
}

#[test]
fn a_failed_publication_is_retried_with_growing_backoff() {
    let c = Clocks::new();
    let mut w = created(&c);
    let result = published(&w.step(Input::Observed(obs(PodPhase::Succeeded).into()), c.at(1)))
        .expect("published");
    assert_eq!(
        w.step(Input::PublishAnswered(Err("down".into())), c.at(1)),
        vec![Action::PublishAfter { attempt: 0 }]
    );
    assert_eq!(
        w.step(Input::PublishRetry, c.at(2)),
        vec![Action::Publish {
            result: Box::new(result),
            first: false
        }]
    );
    assert_eq!(
        w.step(Input::PublishAnswered(Err("down".into())), c.at(2)),
        vec![Action::PublishAfter { attempt: 1 }]
    );
}

#[test]
fn resync_looks_the_pod_up_and_a_failed_lookup_fails_the_incarnation() {
    let c = Clocks::new();
    let mut w = created(&c);
    assert_eq!(w.step(Input::Resync, c.at(1)), vec![Action::Lookup]);
    assert_eq!(
        w.step(Input::LookupFailed("503".into()), c.at(2)),
        vec![Action::Fail("looking up the pod failed: 503".into())]
    );
}

#[test]
fn a_vanish_during_our_delete_waits_for_the_delete_answer() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(obs(PodPhase::Succeeded).into()), c.at(1));
    w.step(Input::DeleteAllowed, c.at(1));
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(1)),
        vec![Action::Delete]
    );
    assert_eq!(w.step(Input::Vanished, c.at(1)), vec![]);
    assert!(!w.is_done(), "the DELETE is still unanswered");
    assert_eq!(
        w.step(Input::DeleteAnswered(DeleteAnswer::Accepted), c.at(2)),
        vec![Action::Done]
    );
}

#[test]
fn a_failed_delete_fails_the_incarnation_and_answers_scale_downs() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Cancel, c.at(1));
    w.step(Input::PublishAnswered(Ok(())), c.at(1));
    let actions = w.step(
        Input::DeleteAnswered(DeleteAnswer::Failed("503".into())),
        c.at(2),
    );
    assert_eq!(
        actions,
        vec![
            Action::AnswerCancels(Err("deleting the pod failed: 503".into())),
            Action::Fail("deleting the pod failed: 503".into())
        ]
    );
}

#[test]
fn a_pod_not_gone_after_the_watchdog_is_deleted_again() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(obs(PodPhase::Succeeded).into()), c.at(1));
    w.step(Input::DeleteAllowed, c.at(1));
    w.step(Input::PublishAnswered(Ok(())), c.at(1));
    w.step(Input::DeleteAnswered(DeleteAnswer::Accepted), c.at(1));
    assert_eq!(
        w.step(Input::DeleteWatchdog, c.at(121)),
        vec![Action::Delete]
    );
    assert_eq!(
        w.step(Input::DeleteAnswered(DeleteAnswer::NotFound), c.at(121)),
        vec![Action::Done]
    );
}

#[test]
fn a_resumed_worker_republishes_its_earlier_result_and_never_decides_again() {
    let c = Clocks::new();
    let earlier = WorkerFinished {
        task_id: "task-1".into(),
        event_id: "1-0".into(),
        pod: identity().pod_name(),
        worker_index: 0,
        outcome: Outcome::Failed,
        exit_code: Some(1),
        reason: None,
        duration_ms: 10,
        finished_at: c.wall.to_string(),
        trace_id: None,
        attempts: 1,
    };
    let resume = Resume {
        observation: Some(terminated(PodPhase::Succeeded, 0, "Completed").into()),
        reported: Some(earlier.clone()),
        settled: true,
        delete_allowed: true,
        ..Resume::default()
    };
    let (mut w, actions) = Lifecycle::resume(identity(), DEADLINES, resume, c.at(5));
    assert_eq!(
        actions,
        vec![Action::Publish {
            result: Box::new(earlier),
            first: false
        }]
    );
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(5)),
        vec![Action::Delete]
    );
}

#[test]
fn an_adopted_pod_without_a_view_is_looked_up_and_settles_when_seen() {
    let c = Clocks::new();
    let (mut w, actions) = Lifecycle::resume(identity(), DEADLINES, Resume::default(), c.at(0));
    assert_eq!(actions, vec![Action::Lookup]);
    let actions = w.step(Input::Observed(obs(PodPhase::Running).into()), c.at(1));
    assert_eq!(actions, vec![Action::Settled(Ok(()))]);
}

#[test]
fn a_resumed_cancelled_worker_whose_pod_is_being_deleted_waits_for_it_to_go() {
    let c = Clocks::new();
    let deleting = PodObservation {
        deleting: true,
        ..obs(PodPhase::Running)
    };
    let resume = Resume {
        observation: Some(deleting.into()),
        cancelled: true,
        settled: true,
        ..Resume::default()
    };
    let (mut w, actions) = Lifecycle::resume(identity(), DEADLINES, resume, c.at(0));
    let result = published(&actions).expect("published");
    assert_eq!(
        result.outcome,
        Outcome::Cancelled,
        "not lost: we deleted it"
    );
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(0)),
        vec![Action::Delete]
    );
}

#[test]
fn a_done_worker_ignores_everything() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(obs(PodPhase::Succeeded).into()), c.at(1));
    finish_cleanly(&mut w, &c);
    for input in [
        Input::Cancel,
        Input::Resync,
        Input::Tick,
        Input::DeleteAllowed,
        Input::Vanished,
        Input::Observed(obs(PodPhase::Running).into()),
    ] {
        assert_eq!(w.step(input, c.at(20)), vec![]);
    }
}

/// The start record among `actions`, if any.
fn start_of(actions: &[Action]) -> Option<StartRecord> {
    actions.iter().find_map(|a| match a {
        Action::RecordStart(start) => Some((**start).clone()),
        _ => None,
    })
}

/// A worker of an event added (XADD) at the test's second 0.
fn created_for_event_at_start(c: &Clocks) -> Lifecycle {
    let identity = WorkerIdentity {
        event_id: format!("{}-0", c.wall.as_millisecond()),
        ..identity()
    };
    let (mut w, _) = Lifecycle::create(identity, DEADLINES, c.wall, c.at(0));
    w.step(Input::CreateAnswered(CreateAnswer::Created), c.at(0));
    w
}

#[test]
fn the_first_running_view_records_the_start_once() {
    let c = Clocks::new();
    let mut w = created_for_event_at_start(&c);
    // Views of this worker's own pod (its event is not identity()'s).
    let name = w.pod_name().to_string();
    let own = |phase| PodObservation {
        phase,
        ..PodObservation::pending(&name)
    };
    let actions = w.step(Input::Observed(own(PodPhase::Pending).into()), c.at(1));
    assert_eq!(start_of(&actions), None, "not running yet");
    let running = PodObservation {
        created_at: Some(c.wall),
        scheduled_at: Some(c.wall + jiff::SignedDuration::from_secs(1)),
        container_started_at: Some(c.wall + jiff::SignedDuration::from_secs(3)),
        template: Some("gpu".into()),
        ..own(PodPhase::Running)
    };
    let actions = w.step(Input::Observed(running.clone().into()), c.at(4));
    assert_eq!(
        start_of(&actions),
        Some(StartRecord {
            template: Some("gpu".into()),
            priority: None,
            queue_wait: Some(Duration::from_secs(4)),
            split: StartupSplit {
                scheduling: Some(Duration::from_secs(1)),
                starting: Some(Duration::from_secs(2)),
            },
        })
    );
    // Later views, a resync's lookup, even a Pending flap: never a second record.
    let mut later = w.step(Input::Observed(running.clone().into()), c.at(5));
    later.extend(w.step(Input::Observed(own(PodPhase::Pending).into()), c.at(6)));
    later.extend(w.step(Input::Observed(running.into()), c.at(7)));
    assert_eq!(start_of(&later), None);
}

#[test]
fn a_pod_running_when_taken_over_is_not_recorded_but_one_seen_pending_is() {
    let c = Clocks::new();
    let (mut w, actions) = Lifecycle::resume(
        identity(),
        DEADLINES,
        Resume {
            observation: Some(obs(PodPhase::Running).into()),
            ..Resume::default()
        },
        c.at(0),
    );
    assert_eq!(start_of(&actions), None);
    let actions = w.step(Input::Observed(obs(PodPhase::Running).into()), c.at(1));
    assert_eq!(start_of(&actions), None);

    let (mut w, _) = Lifecycle::resume(
        identity(),
        DEADLINES,
        Resume {
            observation: Some(obs(PodPhase::Pending).into()),
            ..Resume::default()
        },
        c.at(0),
    );
    let actions = w.step(Input::Observed(obs(PodPhase::Running).into()), c.at(2));
    let start = start_of(&actions).expect("recorded");
    // Entry id `1-0`: added at the epoch's first millisecond, long ago.
    assert!(
        start
            .queue_wait
            .is_some_and(|d| d > Duration::from_secs(1_000_000))
    );
    assert_eq!(
        start.split,
        StartupSplit {
            scheduling: None,
            starting: None
        }
    );
}

// Retries after a disruption (eviction, preemption, node loss).

fn recipe() -> Recipe {
    Recipe {
        template: "default".into(),
        metadata: Default::default(),
        priority: Some("default".into()),
        tenant: Some("t".into()),
    }
}

/// The pod of `attempt`, Running and being disrupted (`deleting`: someone deletes it).
fn disrupted(attempt: u32, deleting: bool) -> PodObservation {
    PodObservation {
        attempt,
        deleting,
        disruption: Some(Box::new(crate::messages::watch::Disruption {
            reason: "DisruptionTarget: PreemptionByScheduler: Preempted".into(),
            recipe: Some(recipe()),
        })),
        ..PodObservation {
            phase: PodPhase::Running,
            ..PodObservation::pending(&identity().attempt_pod_name(attempt))
        }
    }
}

fn of_attempt(attempt: u32, phase: PodPhase) -> PodObservation {
    PodObservation {
        attempt,
        phase,
        ..PodObservation::pending(&identity().attempt_pod_name(attempt))
    }
}

/// The StartAttempt a step asked for, if any: (attempt, previous, delete_previous).
fn start_attempt(actions: &[Action]) -> Option<(u32, String, bool)> {
    actions.iter().find_map(|a| match a {
        Action::StartAttempt {
            attempt,
            previous,
            delete_previous,
            recipe: built_from,
            ..
        } => {
            assert_eq!(built_from.as_deref(), Some(&recipe()));
            Some((*attempt, previous.clone(), *delete_previous))
        }
        _ => None,
    })
}

/// Builds and creates the pod of the attempt the worker moved to, at second `at`.
fn build_and_create(w: &mut Lifecycle, c: &Clocks, at: u64) {
    assert_eq!(w.pod(), PodState::Building);
    let actions = w.step(
        Input::AttemptBuilt {
            built_at: c.at(at).wall,
        },
        c.at(at),
    );
    assert_eq!(actions, vec![Action::Create]);
    let actions = w.step(Input::CreateAnswered(CreateAnswer::Created), c.at(at));
    assert_eq!(
        actions.first(),
        Some(&Action::Settled(Ok(()))),
        "{actions:?}"
    );
}

#[test]
fn a_disrupted_pod_runs_again_in_a_new_pod_and_the_result_counts_the_attempts() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(obs(PodPhase::Running).into()), c.at(1));
    let actions = w.step(Input::Observed(disrupted(1, true).into()), c.at(2));
    assert_eq!(
        start_attempt(&actions),
        Some((2, identity().pod_name(), false)),
        "{actions:?}"
    );
    assert_eq!(published(&actions), None);
    assert_eq!(w.attempt(), 2);
    assert_eq!(w.pod_name(), identity().attempt_pod_name(2));
    assert_ne!(w.pod_name(), identity().pod_name());
    // The preempted pod goes; late views of it change nothing.
    assert_eq!(w.step(Input::Vanished, c.at(2)), vec![]);
    assert_eq!(
        w.step(Input::Observed(disrupted(1, true).into()), c.at(2)),
        vec![]
    );
    build_and_create(&mut w, &c, 3);
    let actions = w.step(
        Input::Observed(
            PodObservation {
                terminated: Some(Terminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                }),
                ..of_attempt(2, PodPhase::Succeeded)
            }
            .into(),
        ),
        c.at(8),
    );
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.attempts, 2);
    assert_eq!(result.pod, identity().attempt_pod_name(2));
    // The duration is the last attempt's: built at 3 s, done at 8 s.
    assert_eq!(result.duration_ms, 5_000);
    assert_eq!(w.step(Input::PublishAnswered(Ok(())), c.at(9)), vec![]);
    assert_eq!(w.step(Input::DeleteAllowed, c.at(9)), vec![Action::Delete]);
}

#[test]
fn an_evicted_pod_left_failed_is_deleted_by_the_worker_that_retries_it() {
    let c = Clocks::new();
    let mut w = created(&c);
    let evicted = PodObservation {
        phase: PodPhase::Failed,
        pod_reason: Some("Evicted".into()),
        ..disrupted(1, false)
    };
    let actions = w.step(Input::Observed(evicted.into()), c.at(2));
    assert_eq!(
        start_attempt(&actions),
        Some((2, identity().pod_name(), true)),
        "{actions:?}"
    );
    // Not `failed`: the eviction was no fault of the build.
    assert_eq!(published(&actions), None);
}

#[test]
fn after_the_last_retry_a_disruption_ends_the_worker_with_its_outcome_and_the_reason() {
    let c = Clocks::new();
    let mut w = created(&c);
    for attempt in 1..=2 {
        let actions = w.step(Input::Observed(disrupted(attempt, true).into()), c.at(2));
        assert_eq!(
            start_attempt(&actions).map(|a| a.0),
            Some(attempt + 1),
            "{actions:?}"
        );
        build_and_create(&mut w, &c, 3);
    }
    // Attempt 3 of 3 (2 retries): disrupted again, then gone.
    let actions = w.step(Input::Observed(disrupted(3, true).into()), c.at(4));
    assert_eq!(start_attempt(&actions), None, "{actions:?}");
    let result = published(&actions).expect("lost at once: deleted by someone else");
    assert_eq!(result.outcome, Outcome::Lost);
    assert_eq!(result.attempts, 3);
    let reason = result.reason.expect("reason");
    assert!(
        reason.contains("PreemptionByScheduler") && reason.contains("no retries left"),
        "{reason}"
    );
}

#[test]
fn with_retries_off_a_disrupted_pod_is_lost_as_before() {
    let c = Clocks::new();
    let deadlines = Deadlines {
        max_disruption_retries: 0,
        ..DEADLINES
    };
    let (mut w, _) = Lifecycle::create(identity(), deadlines, c.wall, c.at(0));
    w.step(Input::CreateAnswered(CreateAnswer::Created), c.at(0));
    let actions = w.step(Input::Observed(disrupted(1, true).into()), c.at(2));
    assert_eq!(start_attempt(&actions), None);
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Lost);
    assert_eq!(result.attempts, 1);
}

#[test]
fn a_next_attempt_that_cannot_be_built_ends_lost_naming_why() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(disrupted(1, true).into()), c.at(2));
    let actions = w.step(
        Input::AttemptImpossible {
            disruption: "DisruptionTarget: PreemptionByScheduler: Preempted".into(),
            why: "its pod template \"gpu\" is no longer configured".into(),
        },
        c.at(2),
    );
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Lost);
    assert_eq!(result.attempts, 2);
    let reason = result.reason.expect("reason");
    assert!(
        reason.contains("PreemptionByScheduler") && reason.contains("\"gpu\""),
        "{reason}"
    );
    // No pod of attempt 2 exists: once published, the worker is done.
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(3)),
        vec![Action::Done]
    );
    // A build that comes late creates nothing.
    assert_eq!(
        w.step(
            Input::AttemptBuilt {
                built_at: c.at(3).wall
            },
            c.at(3)
        ),
        vec![]
    );
}

#[test]
fn a_scale_down_while_the_next_attempt_is_built_cancels_without_a_pod() {
    let c = Clocks::new();
    let mut w = created(&c);
    w.step(Input::Observed(disrupted(1, true).into()), c.at(2));
    let actions = w.step(Input::Cancel, c.at(2));
    let result = published(&actions).expect("published");
    assert_eq!(result.outcome, Outcome::Cancelled);
    assert_eq!(
        w.step(
            Input::AttemptBuilt {
                built_at: c.at(2).wall
            },
            c.at(2)
        ),
        vec![]
    );
    assert_eq!(
        w.step(Input::PublishAnswered(Ok(())), c.at(3)),
        vec![Action::AnswerCancels(Ok(())), Action::Done]
    );
}

#[test]
fn a_worker_meeting_a_later_attempt_of_itself_follows_it() {
    let c = Clocks::new();
    // Adopted at attempt 1 after a restart; an earlier incarnation had made attempt 2.
    let (mut w, _) = Lifecycle::resume(
        identity(),
        DEADLINES,
        Resume {
            observation: Some(obs(PodPhase::Running).into()),
            settled: true,
            ..Resume::default()
        },
        c.at(0),
    );
    let actions = w.step(
        Input::Observed(of_attempt(2, PodPhase::Running).into()),
        c.at(1),
    );
    assert_eq!(w.attempt(), 2);
    assert_eq!(w.pod_name(), identity().attempt_pod_name(2));
    assert_eq!(w.pod(), PodState::Present);
    assert_eq!(actions, vec![Action::Settled(Ok(()))]);
    // The earlier attempt is history now.
    assert_eq!(
        w.step(Input::Observed(obs(PodPhase::Failed).into()), c.at(2)),
        vec![]
    );
}

#[test]
fn a_worker_resumed_at_a_later_attempt_looks_up_that_attempts_pod() {
    let c = Clocks::new();
    let (w, actions) = Lifecycle::resume(
        identity(),
        DEADLINES,
        Resume {
            attempt: 3,
            settled: true,
            ..Resume::default()
        },
        c.at(0),
    );
    assert_eq!(actions, vec![Action::Lookup]);
    assert_eq!(w.pod_name(), identity().attempt_pod_name(3));
}
