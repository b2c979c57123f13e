//! The Supervisor's books without actors: admission, the queue, scale_down on live and
//! queued workers, settling, acknowledgement, restarts and adoption.

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::messages::{PodObservation, PodPhase, ScaleEvent, ScaleKind};
use crate::scheduler::Rules;

type Books = Ledger<u32, &'static str>;

fn up(event_id: &str, task: &str, pod_count: u32) -> ScaleEvent {
    ScaleEvent {
        event_id: event_id.into(),
        kind: ScaleKind::Up { pod_count },
        task_id: task.into(),
        template: "default".into(),
        priority: "normal".into(),
        tenant: task.into(),
        metadata: Default::default(),
        timestamp: None,
        trace: None,
        read_at: Instant::now(),
    }
}

fn down(event_id: &str, task: &str, pod_count: Option<u32>) -> ScaleEvent {
    ScaleEvent {
        kind: ScaleKind::Down { pod_count },
        ..up(event_id, task, 1)
    }
}

fn create() -> WorkerStart {
    WorkerStart::Create {
        pod: Arc::new(Default::default()),
        read_at: Instant::now(),
        built_at: jiff::Timestamp::now(),
        trace: None,
        attempt: 1,
    }
}

fn synced(max: usize) -> Books {
    let mut books = Books::new(max);
    books.relisting();
    assert!(books.list_done().is_empty());
    books
}

/// Admits and starts a scale_up that fits; returns the names of its new workers.
fn start(books: &mut Books, event: ScaleEvent, who: &'static str) -> Vec<String> {
    let Admission::StartUp(event) = books.admit(event, who) else {
        panic!("expected to start now");
    };
    spawn_all(books, &event)
}

fn spawn_all(books: &mut Books, event: &ScaleEvent) -> Vec<String> {
    let ids = books.start_up(event);
    ids.into_iter()
        .map(|id| {
            let name = id.pod_name();
            books.add_worker(id, 0, &create());
            name
        })
        .collect()
}

/// Routes a copy of `obs`, shared as the Supervisor shares it.
fn route(books: &mut Books, obs: &PodObservation) -> Route {
    books.route(&Arc::new(obs.clone()))
}

fn observation(name: &str, phase: PodPhase) -> PodObservation {
    PodObservation {
        phase,
        ..PodObservation::pending(name)
    }
}

#[test]
fn a_scale_up_is_answered_once_every_create_settled() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 3), "a");
    assert_eq!(books.active(), 3);
    assert!(books.settle(&pods[0]).is_none());
    assert!(books.settle(&pods[1]).is_none());
    let (accepted, who) = books.settle(&pods[2]).expect("answered");
    assert_eq!(accepted.pods, pods);
    assert_eq!(who, vec!["a"]);
}

#[test]
fn a_redelivered_scale_up_joins_or_finds_its_workers() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 2), "first");
    assert!(matches!(
        books.admit(up("1-0", "t", 2), "again"),
        Admission::Joined
    ));
    books.settle(&pods[0]);
    let (_, who) = books.settle(&pods[1]).expect("answered");
    assert_eq!(who, vec!["first", "again"]);
    // Delivered once more after it was answered: nothing new to create, answered at once.
    let Admission::StartUp(event) = books.admit(up("1-0", "t", 2), "third") else {
        panic!("starts");
    };
    assert!(books.start_up(&event).is_empty());
    let (accepted, who) = books.complete("1-0").expect("answered at once");
    assert_eq!((accepted.pods.len(), who), (2, vec!["third"]));
    assert_eq!(books.active(), 2);
}

#[test]
fn events_wait_in_order_for_capacity_and_the_first_list() {
    let mut books = Books::new(3);
    assert!(matches!(
        books.admit(up("1-0", "a", 2), "a"),
        Admission::Queued
    ));
    assert!(books.next_ready().is_none(), "not synced yet");
    books.relisting();
    books.list_done();
    let Some(Ready::Up(first)) = books.next_ready() else {
        panic!("first goes once synced");
    };
    let pods = spawn_all(&mut books, &first);
    // 1 slot left: a 2-pod event waits, and so does a 1-pod one behind it (order).
    assert!(matches!(
        books.admit(up("2-0", "b", 2), "b"),
        Admission::Queued
    ));
    assert!(matches!(
        books.admit(up("3-0", "c", 1), "c"),
        Admission::Queued
    ));
    assert!(books.next_ready().is_none());
    assert_eq!(books.queued_ups(), 2);
    books.remove(&pods[0]);
    let Some(Ready::Up(second)) = books.next_ready() else {
        panic!("fits now");
    };
    assert_eq!(second.event_id, "2-0");
    spawn_all(&mut books, &second);
    assert!(books.next_ready().is_none(), "no slot for the third");
}

#[test]
fn a_scale_down_before_the_first_list_waits_for_it_in_order() {
    let mut books = Books::new(10);
    assert!(matches!(
        books.admit(up("1-0", "t", 2), "up"),
        Admission::Queued
    ));
    assert!(matches!(
        books.admit(down("2-0", "t", None), "down"),
        Admission::Queued
    ));
    assert!(matches!(
        books.admit(up("3-0", "t", 1), "later up"),
        Admission::Queued
    ));
    books.relisting();
    books.list_done();
    // The scale_down goes first: it takes the scale_up before it while still queued (no
    // pod is ever made for it)...
    let Some(Ready::Down(event, "down")) = books.next_ready() else {
        panic!("the scale_down first");
    };
    let plan = books.scale_down(&event);
    assert!(plan.cancel.is_empty());
    let mut cancelled: Vec<String> = plan.cancel_queued.iter().map(|w| w.pod_name()).collect();
    cancelled.sort();
    let mut expected: Vec<String> = (0..2)
        .map(|i| crate::pods::pod_name("t", "1-0", i))
        .collect();
    expected.sort();
    assert_eq!(cancelled, expected);
    // ...but not the one after it in the stream, which then starts.
    let Some(Ready::Up(later)) = books.next_ready() else {
        panic!("the later scale_up starts");
    };
    assert_eq!(later.event_id, "3-0");
}

#[test]
fn a_scale_down_cancels_queued_workers_first_and_they_are_never_created() {
    let mut books = synced(2);
    let running = start(&mut books, up("1-0", "t", 2), "first");
    for p in &running {
        books.settle(p);
        route(&mut books, &observation(p, PodPhase::Running));
    }
    assert!(matches!(
        books.admit(up("2-0", "t", 3), "queued"),
        Admission::Queued
    ));
    let plan = books.scale_down(&down("3-0", "t", Some(2)));
    assert!(plan.cancel.is_empty(), "the running ones stay: {plan:?}");
    let taken: Vec<u32> = plan.cancel_queued.iter().map(|i| i.index).collect();
    assert_eq!(taken, vec![2, 1]);
    // The cancelled-before-creation workers are started; their results settle the event
    // together with the rest, which is created once capacity frees.
    for id in plan.cancel_queued {
        let name = id.pod_name();
        books.add_worker(id, 0, &WorkerStart::CancelledBeforeCreation);
        assert!(books.settle(&name).is_none());
        books.remove(&name);
    }
    books.remove(&running[0]);
    let Some(Ready::Up(event)) = books.next_ready() else {
        panic!("one pod needed, one slot free");
    };
    let created = spawn_all(&mut books, &event);
    assert_eq!(created, vec![crate::pods::pod_name("t", "2-0", 0)]);
    let (accepted, who) = books.settle(&created[0]).expect("answered");
    assert_eq!(accepted.pods.len(), 3);
    assert_eq!(who, vec!["queued"]);
}

#[test]
fn a_scale_down_of_every_queued_worker_takes_the_event_out_of_the_queue() {
    let mut books = synced(1);
    let running = start(&mut books, up("1-0", "other", 1), "x");
    assert!(matches!(
        books.admit(up("2-0", "t", 2), "queued"),
        Admission::Queued
    ));
    let plan = books.scale_down(&down("3-0", "t", None));
    assert_eq!(plan.cancel_queued.len(), 2);
    assert_eq!(plan.pods().len(), 2);
    assert_eq!(books.queued_ups(), 0);
    let mut answer = None;
    for id in plan.cancel_queued {
        let name = id.pod_name();
        books.add_worker(id, 0, &WorkerStart::CancelledBeforeCreation);
        answer = books.settle(&name);
    }
    let (_, who) = answer.expect("answered once both cancelled results are durable");
    assert_eq!(who, vec!["queued"]);
    assert_eq!(
        books.active(),
        3,
        "over capacity only by workers that make no pod"
    );
    let _ = running;
}

#[test]
fn a_scale_down_picks_pending_before_running_and_skips_reported_ones() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 3), "a");
    route(&mut books, &observation(&pods[0], PodPhase::Running));
    route(&mut books, &observation(&pods[1], PodPhase::Pending));
    route(&mut books, &observation(&pods[2], PodPhase::Running));
    let done = WorkerFinished {
        task_id: "t".into(),
        event_id: "1-0".into(),
        pod: pods[2].clone(),
        worker_index: 2,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        reason: None,
        duration_ms: 1,
        finished_at: String::new(),
        trace_id: None,
        attempts: 1,
    };
    assert!(books.reported(&done));
    assert!(!books.reported(&done), "only the first report counts");
    let plan = books.scale_down(&down("2-0", "t", Some(1)));
    assert_eq!(plan.cancel, vec![pods[1].clone()]);
    let plan = books.scale_down(&down("3-0", "t", None));
    assert_eq!(
        plan.cancel,
        vec![pods[0].clone()],
        "cancelled and reported ones are skipped"
    );
    assert_eq!(
        books.scale_down(&down("4-0", "other", None)),
        DownPlan::default()
    );
}

#[test]
fn acknowledgement_reaches_the_events_workers_and_is_forgotten_with_them() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 2), "a");
    let mut told = books.acknowledged("1-0");
    told.sort();
    let mut expected = pods.clone();
    expected.sort();
    assert_eq!(told, expected);
    assert!(books.delete_allowed("1-0"));
    books.remove(&pods[0]);
    assert!(books.is_acked("1-0"));
    books.remove(&pods[1]);
    assert!(!books.is_acked("1-0"), "forgotten with its last worker");
    assert!(books.acknowledged("9-0").is_empty());
    assert!(!books.is_acked("9-0"), "no workers: nothing to remember");
}

#[test]
fn a_failing_worker_is_restarted_then_reported_failed_then_given_up_and_never_readopted() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 1), "a");
    let pod = &pods[0];
    let mut incarnation = 0;
    let mut failed = 0;
    for round in 1..=GIVE_UP_RESTARTS {
        match books.stopped(pod, incarnation, Some("boom")) {
            AfterStop::Restart {
                attempt,
                incarnation: next,
                failed: f,
            } => {
                assert_eq!(attempt, round - 1);
                incarnation = next;
                if let Some(result) = f {
                    // As the shell does: the final result settles the worker's event.
                    books.settle(pod);
                    failed += 1;
                    assert_eq!(result.outcome, Outcome::Failed);
                    assert_eq!(
                        result.reason.as_deref(),
                        Some("restart budget exhausted: boom")
                    );
                }
                let (_, start) = books.restart(pod, incarnation).expect("restarts");
                if round <= MAX_RESTARTS {
                    assert!(
                        matches!(start, WorkerStart::Create { .. }),
                        "never created yet"
                    );
                } else {
                    assert!(matches!(start, WorkerStart::Resume(ref r) if r.reported.is_some()));
                }
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(failed, 1, "the failed result is decided once");
    assert_eq!(
        books.stopped(pod, incarnation - 1, Some("old")),
        AfterStop::Nothing
    );
    assert_eq!(
        books.stopped(pod, incarnation, Some("boom")),
        AfterStop::GiveUp
    );
    assert_eq!(books.active(), 0);
    // The watch shows the pod again: it is not adopted with a fresh budget.
    let mut seen = observation(pod, PodPhase::Running);
    seen.task_id = Some("t".into());
    seen.worker_index = Some(0);
    seen.event_id = Some("1-0".into());
    assert!(matches!(route(&mut books, &seen), Route::Ignore(_)));
    books.pod_deleted(pod);
    assert!(matches!(route(&mut books, &seen), Route::Adopt(_)));
}

#[test]
fn a_clean_stop_or_a_stop_while_shutting_down_restarts_nothing() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 1), "a");
    assert_eq!(books.stopped(&pods[0], 0, None), AfterStop::Nothing);
    assert!(books.stop().is_empty());
    assert_eq!(books.stopped(&pods[0], 0, Some("x")), AfterStop::Nothing);
}

#[test]
fn pods_are_routed_to_their_worker_or_adopted() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 1), "a");
    assert_eq!(
        route(&mut books, &observation(&pods[0], PodPhase::Pending)),
        Route::Worker { first_view: true }
    );
    assert_eq!(
        route(&mut books, &observation(&pods[0], PodPhase::Running)),
        Route::Worker { first_view: false }
    );
    let stranger = crate::pods::pod_name("u", "5-0", 1);
    let mut obs = observation(&stranger, PodPhase::Running);
    assert!(
        matches!(route(&mut books, &obs), Route::Ignore(_)),
        "no labels"
    );
    obs.task_id = Some("u".into());
    obs.worker_index = Some(1);
    obs.event_id = Some("5-0".into());
    assert!(matches!(route(&mut books, &obs), Route::Adopt(ref id) if id.pod_name() == stranger));
    obs.worker_index = Some(2);
    assert!(
        matches!(route(&mut books, &obs), Route::Ignore(_)),
        "name and labels disagree"
    );
    obs.worker_index = Some(1);
    obs.deleting = true;
    assert!(matches!(route(&mut books, &obs), Route::Ignore(_)));
}

#[test]
fn a_relist_names_settled_workers_it_did_not_show() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 3), "a");
    books.settle(&pods[0]);
    books.settle(&pods[1]);
    books.relisting();
    route(&mut books, &observation(&pods[0], PodPhase::Running));
    assert_eq!(
        books.list_done(),
        vec![pods[1].clone()],
        "unsettled ones are creating"
    );
}

#[test]
fn an_expired_event_hands_back_its_waiters_but_not_while_queued() {
    let mut books = synced(1);
    let pods = start(&mut books, up("1-0", "t", 1), "a");
    assert_eq!(books.expire("1-0"), vec!["a"]);
    assert!(books.expire("1-0").is_empty());
    assert!(matches!(
        books.admit(up("2-0", "t", 1), "q"),
        Admission::Queued
    ));
    assert!(
        books.expire("2-0").is_empty(),
        "waiting for capacity is not a stall"
    );
    // The expired event's workers carry on; a redelivery joins them.
    assert!(matches!(
        books.admit(up("1-0", "t", 1), "again"),
        Admission::Joined
    ));
    let (_, who) = books.settle(&pods[0]).expect("answered");
    assert_eq!(who, vec!["again"]);
}

#[test]
fn settle_deadlines_expire_in_order_and_settled_events_leave_the_queue() {
    let mut books = synced(10);
    let t0 = Instant::now();
    let second = std::time::Duration::from_secs(1);
    let first = start(&mut books, up("1-0", "t", 1), "a");
    books.settle_by("1-0", t0 + second);
    start(&mut books, up("2-0", "t", 1), "b");
    books.settle_by("2-0", t0 + 2 * second);
    start(&mut books, up("3-0", "t", 1), "c");
    books.settle_by("3-0", t0 + 3 * second);
    assert_eq!(books.next_settle_deadline(), Some(t0 + second));
    assert!(books.expire_due(t0).is_empty(), "nothing is due yet");

    // 1-0 settles in time: it leaves the front, and the timer is for 2-0 next.
    assert!(books.settle(&first[0]).is_some());
    assert_eq!(books.next_settle_deadline(), Some(t0 + 2 * second));

    // Past 2-0's deadline only: 2-0 expires, 3-0 still has a second.
    let due = books.expire_due(t0 + 2 * second);
    assert_eq!(due, vec![("2-0".to_string(), vec!["b"])]);
    assert_eq!(books.next_settle_deadline(), Some(t0 + 3 * second));
    let due = books.expire_due(t0 + 10 * second);
    assert_eq!(due, vec![("3-0".to_string(), vec!["c"])]);
    assert_eq!(books.next_settle_deadline(), None);
}

#[test]
fn settled_events_do_not_pile_up_behind_the_settle_timeout() {
    let mut books = synced(10_000);
    let t0 = Instant::now();
    let timeout = std::time::Duration::from_secs(600);
    for i in 0..1000 {
        let id = format!("{i}-0");
        let pods = start(&mut books, up(&id, "t", 1), "r");
        books.settle_by(&id, t0 + timeout);
        books.settle(&pods[0]);
    }
    assert!(
        books.settle_by.len() <= 1,
        "{} deadlines kept",
        books.settle_by.len()
    );
    assert_eq!(books.next_settle_deadline(), None);
}

#[test]
fn stopping_refuses_every_queued_event() {
    let mut books = Books::new(10);
    books.admit(up("1-0", "t", 1), "up");
    books.admit(down("2-0", "t", None), "down");
    let mut refused = books.stop();
    refused.sort();
    assert_eq!(refused, vec!["down", "up"]);
    assert_eq!(books.queue_len(), 0);
}

// ---- scheduling: caps, fairness, priorities (the rule itself: crate::scheduler) ----

fn books_with(max: usize, rules: Rules) -> Books {
    let mut books = Books::with_rules(max, rules);
    books.relisting();
    books.list_done();
    books
}

/// A create of a pod built from `template` for `event`'s class and tenant.
fn create_placed(template: &str, event: &ScaleEvent) -> WorkerStart {
    let annotations = [
        (crate::pods::ANNOTATION_TEMPLATE, template),
        (crate::pods::ANNOTATION_PRIORITY, event.priority.as_str()),
        (crate::pods::ANNOTATION_TENANT, event.tenant.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut pod = k8s_openapi::api::core::v1::Pod::default();
    pod.metadata.annotations = Some(annotations);
    WorkerStart::Create {
        pod: Arc::new(pod),
        read_at: Instant::now(),
        built_at: jiff::Timestamp::now(),
        trace: None,
        attempt: 1,
    }
}

fn start_placed(books: &mut Books, event: &ScaleEvent) -> Vec<String> {
    books
        .start_up(event)
        .into_iter()
        .map(|id| {
            let name = id.pod_name();
            books.add_worker(id, 0, &create_placed(&event.template, event));
            name
        })
        .collect()
}

fn of(mut event: ScaleEvent, tenant: &str, template: &str) -> ScaleEvent {
    event.tenant = tenant.into();
    event.template = template.into();
    event
}

fn next_up(books: &mut Books) -> Option<ScaleEvent> {
    match books.next_ready() {
        Some(Ready::Up(e)) => Some(e),
        Some(Ready::Down(e, _)) => panic!("unexpected scale_down {}", e.event_id),
        None => None,
    }
}

#[test]
fn a_tenant_behind_a_flood_starts_at_the_next_free_slot() {
    let mut books = books_with(2, Rules::default());
    for n in 1..=2 {
        let e = of(up(&format!("{n}-0"), "a1", 1), "a", "default");
        let Admission::StartUp(e) = books.admit(e, "a") else {
            panic!("fits");
        };
        start_placed(&mut books, &e);
    }
    for n in 3..=20 {
        let e = of(up(&format!("{n}-0"), "a1", 1), "a", "default");
        assert!(matches!(books.admit(e, "a"), Admission::Queued));
    }
    let b = of(up("21-0", "b1", 1), "b", "default");
    assert!(matches!(books.admit(b, "b"), Admission::Queued));
    assert!(next_up(&mut books).is_none(), "full");
    // One worker goes: the next slot is B's, not the 18 of A before it in the stream.
    books.remove(&crate::pods::pod_name("a1", "1-0", 0));
    let next = next_up(&mut books).expect("a slot freed");
    assert_eq!(next.tenant, "b");
    start_placed(&mut books, &next);
    // The census sees A's 18 waiting and each tenant's worker.
    let census = books.census();
    let key = |t: &str| ("normal".to_string(), t.to_string());
    assert_eq!(census.waiting.get(&key("a")), Some(&18));
    assert_eq!(census.workers.get(&key("a")), Some(&1));
    assert_eq!(census.workers.get(&key("b")), Some(&1));
}

#[test]
fn fifo_keeps_stream_order_across_tenants() {
    let rules = Rules {
        policy: crate::scheduler::Policy::single_class(crate::scheduler::PolicyKind::Fifo),
        ..Rules::default()
    };
    let mut books = books_with(1, rules);
    let first = of(up("1-0", "a1", 1), "a", "default");
    let Admission::StartUp(first) = books.admit(first, "a") else {
        panic!("fits");
    };
    start_placed(&mut books, &first);
    for (n, t) in [(2, "a"), (3, "a"), (4, "b")] {
        let e = of(up(&format!("{n}-0"), &format!("{t}1"), 1), t, "default");
        assert!(matches!(books.admit(e, "x"), Admission::Queued));
    }
    books.remove(&crate::pods::pod_name("a1", "1-0", 0));
    assert_eq!(next_up(&mut books).map(|e| e.event_id), Some("2-0".into()));
}

#[test]
fn a_template_at_its_cap_holds_only_its_own_events() {
    let rules = Rules {
        template_caps: [("gpu".to_string(), 1)].into(),
        ..Rules::default()
    };
    let mut books = books_with(10, rules);
    let gpu = of(up("1-0", "t", 1), "t", "gpu");
    let Admission::StartUp(gpu) = books.admit(gpu, "gpu") else {
        panic!("fits its cap");
    };
    let gpu_pods = start_placed(&mut books, &gpu);
    // The second gpu event waits (cap 1) although 9 slots are free...
    assert!(matches!(
        books.admit(of(up("2-0", "t", 1), "t", "gpu"), "gpu2"),
        Admission::Queued
    ));
    assert!(next_up(&mut books).is_none());
    // ...and holds back nobody: a default event of the same tenant starts at once.
    assert!(matches!(
        books.admit(of(up("3-0", "t", 1), "t", "default"), "cpu"),
        Admission::Queued
    ));
    let cpu = next_up(&mut books).expect("not capped");
    assert_eq!(cpu.event_id, "3-0");
    start_placed(&mut books, &cpu);
    books.remove(&gpu_pods[0]);
    assert_eq!(next_up(&mut books).map(|e| e.event_id), Some("2-0".into()));
}

#[test]
fn a_task_at_its_cap_waits_while_other_tasks_start() {
    let rules = Rules {
        task_cap: Some(2),
        ..Rules::default()
    };
    let mut books = books_with(10, rules);
    let Admission::StartUp(first) = books.admit(up("1-0", "busy", 2), "a") else {
        panic!("fits");
    };
    let pods = start_placed(&mut books, &first);
    assert!(matches!(
        books.admit(up("2-0", "busy", 1), "b"),
        Admission::Queued
    ));
    assert!(matches!(
        books.admit(up("3-0", "idle", 1), "c"),
        Admission::Queued
    ));
    assert_eq!(next_up(&mut books).map(|e| e.event_id), Some("3-0".into()));
    assert!(next_up(&mut books).is_none(), "busy is at its cap");
    books.remove(&pods[0]);
    assert_eq!(next_up(&mut books).map(|e| e.event_id), Some("2-0".into()));
}

#[test]
fn a_high_priority_event_starts_before_older_low_ones() {
    let classes = [
        ("low".to_string(), 1),
        ("normal".to_string(), 1),
        ("high".to_string(), 10),
    ]
    .into_iter()
    .collect();
    let rules = Rules {
        policy: crate::scheduler::Policy::new(
            crate::scheduler::PolicyKind::Fair,
            std::time::Duration::from_secs(600),
            &classes,
            &Default::default(),
        ),
        ..Rules::default()
    };
    let mut books = books_with(1, rules);
    let mut low = up("1-0", "l", 1);
    low.priority = "low".into();
    let Admission::StartUp(low) = books.admit(low, "low") else {
        panic!("fits");
    };
    let pods = start_placed(&mut books, &low);
    for n in 2..=5 {
        let mut e = up(&format!("{n}-0"), "l", 1);
        e.priority = "low".into();
        assert!(matches!(books.admit(e, "low"), Admission::Queued));
    }
    let mut high = up("6-0", "h", 1);
    high.priority = "high".into();
    assert!(matches!(books.admit(high, "high"), Admission::Queued));
    books.remove(&pods[0]);
    assert_eq!(next_up(&mut books).map(|e| e.event_id), Some("6-0".into()));
}

// Retries after a disruption: the worker moves to its next attempt's pod.

/// The observation of `worker`'s pod of `attempt`, with the labels adoption reads.
fn attempt_of(worker: &WorkerIdentity, attempt: u32, phase: PodPhase) -> PodObservation {
    PodObservation {
        task_id: Some(worker.task_id.clone()),
        worker_index: Some(worker.index),
        event_id: Some(worker.event_id.clone()),
        attempt,
        ..observation(&worker.attempt_pod_name(attempt), phase)
    }
}

fn attempt_pod(worker: &WorkerIdentity, attempt: u32) -> Arc<k8s_openapi::api::core::v1::Pod> {
    let mut pod = k8s_openapi::api::core::v1::Pod::default();
    pod.metadata.name = Some(worker.attempt_pod_name(attempt));
    Arc::new(pod)
}

fn worker_0(event_id: &str, task: &str) -> WorkerIdentity {
    WorkerIdentity {
        task_id: task.into(),
        event_id: event_id.into(),
        index: 0,
    }
}

#[test]
fn a_retrying_worker_is_known_by_its_new_pod_and_the_old_one_is_never_adopted() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 1), "a");
    let worker = worker_0("1-0", "t");
    assert!(books.settle(&pods[0]).is_some());
    books.acknowledged("1-0");
    books.retrying(&pods[0], 2, attempt_pod(&worker, 2), jiff::Timestamp::now());
    let second = worker.attempt_pod_name(2);
    assert!(books.worker(&pods[0]).is_none());
    let entry = books.worker(&second).expect("known by the new pod");
    assert_eq!(entry.attempt, 2);
    assert!(!entry.settled, "its create is in flight");
    assert_eq!(books.active(), 1, "still one worker");
    assert!(books.delete_allowed("1-0"));
    assert_eq!(books.acknowledged("1-0"), vec![second.clone()]);
    // The disrupted pod's late views, even with every label, are not adopted.
    assert!(matches!(
        route(&mut books, &attempt_of(&worker, 1, PodPhase::Failed)),
        Route::Ignore(_)
    ));
    assert_eq!(
        route(&mut books, &attempt_of(&worker, 2, PodPhase::Pending)),
        Route::Worker { first_view: true }
    );
    // A restart before the create settled sends it again, as attempt 2.
    let Some((_, WorkerStart::Create { attempt, pod, .. })) = books.restart(&second, 0) else {
        panic!("expected a create");
    };
    assert_eq!(attempt, 2);
    assert_eq!(pod.metadata.name.as_deref(), Some(second.as_str()));
    // Scale_down finds it under its new name.
    books.settle(&second);
    let plan = books.scale_down(&down("2-0", "t", None));
    assert_eq!(plan.cancel, vec![second.clone()]);
    assert!(books.remove(&second).is_some());
    assert_eq!(books.active(), 0);
    // Once the old pod is deleted it is forgotten.
    books.pod_deleted(&pods[0]);
    assert!(books.superseded.is_empty());
}

#[test]
fn after_a_restart_the_latest_attempt_wins_whatever_order_the_list_shows() {
    let worker = worker_0("1-0", "t");
    // Attempt 1 listed first (left Failed by the kubelet's eviction), then attempt 2.
    let mut books = synced(10);
    let Route::Adopt(id) = route(&mut books, &attempt_of(&worker, 1, PodPhase::Failed)) else {
        panic!("adopted");
    };
    books.add_worker(
        id,
        7,
        &WorkerStart::Resume(Box::new(Resume {
            observation: Some(Arc::new(attempt_of(&worker, 1, PodPhase::Failed))),
            settled: true,
            ..Resume::default()
        })),
    );
    assert_eq!(
        route(&mut books, &attempt_of(&worker, 2, PodPhase::Running)),
        Route::Worker { first_view: true },
        "the worker of attempt 1 follows attempt 2"
    );
    assert_eq!(
        books.worker(&worker.attempt_pod_name(2)).map(|w| w.attempt),
        Some(2)
    );
    assert_eq!(books.handle(&worker.attempt_pod_name(2)), Some(7));
    assert_eq!(books.active(), 1);
    // Its own Retrying (sent before it met attempt 2) changes nothing now.
    books.retrying(
        &worker.pod_name(),
        2,
        attempt_pod(&worker, 2),
        jiff::Timestamp::now(),
    );
    assert!(
        books
            .worker(&worker.attempt_pod_name(2))
            .is_some_and(|w| w.settled)
    );

    // Attempt 2 listed first, then the stale attempt 1: its deletion goes to the worker.
    let mut books = synced(10);
    let Route::Adopt(id) = route(&mut books, &attempt_of(&worker, 2, PodPhase::Running)) else {
        panic!("adopted");
    };
    let resume = Resume {
        observation: Some(Arc::new(attempt_of(&worker, 2, PodPhase::Running))),
        settled: true,
        ..Resume::default()
    };
    books.add_worker(id, 8, &WorkerStart::Resume(Box::new(resume)));
    assert_eq!(
        books.worker(&worker.attempt_pod_name(2)).map(|w| w.attempt),
        Some(2)
    );
    assert_eq!(
        route(&mut books, &attempt_of(&worker, 1, PodPhase::Failed)),
        Route::Stale {
            worker: worker.attempt_pod_name(2)
        }
    );
    // Being deleted already: nothing to do.
    let mut deleting = attempt_of(&worker, 1, PodPhase::Failed);
    deleting.deleting = true;
    assert!(matches!(route(&mut books, &deleting), Route::Ignore(_)));
    assert_eq!(books.active(), 1);
}

#[test]
fn a_relist_forgets_superseded_pods_it_no_longer_shows() {
    let mut books = synced(10);
    let pods = start(&mut books, up("1-0", "t", 1), "a");
    let worker = worker_0("1-0", "t");
    books.settle(&pods[0]);
    books.retrying(&pods[0], 2, attempt_pod(&worker, 2), jiff::Timestamp::now());
    assert!(books.superseded.contains(&pods[0]));
    books.relisting();
    route(&mut books, &attempt_of(&worker, 2, PodPhase::Running));
    books.list_done();
    assert!(books.superseded.is_empty());
}
