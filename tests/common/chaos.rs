//! The reliability suite's shared parts: scale knobs, a random workload, a recorder of
//! every pod the API server ever shows, reading the outcome back from Redis, the end
//! checks (nothing lost, repeated or left behind) and the `RELIABILITY:` figures.
//!
//! Knobs (environment variables, CI-sized defaults): `CHAOS_EVENTS`, `CHAOS_KILLS`,
//! `CHAOS_RESTARTS`, `CHAOS_INPUTS`, `CHAOS_HOSTILE`, `CHAOS_SEED`. `make chaos` sets the
//! large values. `RELIABILITY_REPORT=<file>` appends each figures line to that file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use rand::Rng;
use rand::rngs::StdRng;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use super::ottoscaler::Ottoscaler;

pub const STREAM: &str = "otto:scale:events";
pub const DEAD: &str = "otto:scale:events:dead";
pub const RESULTS: &str = "otto:scale:results";
pub const GROUP: &str = "ottoscaler";

/// A scale knob: the environment variable's number, else the CI default.
pub fn knob(name: &str, ci_default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(ci_default)
}

/// `CHAOS_SEED`, else a random seed; printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: CHAOS_SEED={seed}");
    seed
}

// ---- templates and the workload ----------------------------------------------------

/// A pod template for kubesim: how long its pods run and how they end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub name: &'static str,
    pub run_seconds: &'static str,
    pub exit_code: i32,
}

impl Template {
    pub const fn new(name: &'static str, run_seconds: &'static str, exit_code: i32) -> Self {
        Template {
            name,
            run_seconds,
            exit_code,
        }
    }

    /// The outcome its workers must report.
    pub fn outcome(&self) -> &'static str {
        if self.exit_code == 0 {
            "succeeded"
        } else {
            "failed"
        }
    }
}

/// Pods of 0 to 2 s, and a failing one: the crash and outage tests' mix.
pub const SHORT_TEMPLATES: [Template; 5] = [
    Template::new("t0", "0", 0),
    Template::new("t05", "0.5", 0),
    Template::new("t1", "1", 0),
    Template::new("t2", "2", 0),
    Template::new("fail", "0.3", 3),
];

/// The config file for `templates` (plus `default`, which every config has).
pub fn templates_toml(templates: &[Template]) -> String {
    let mut out = String::from(
        "[templates.default]\nimage = \"busybox:latest\"\n\
         annotations = { \"kubesim.ottoscaler.dev/run-seconds\" = \"1\" }\n",
    );
    for t in templates {
        let _ = write!(
            out,
            "\n[templates.{}]\nimage = \"busybox:latest\"\nannotations = {{ \
             \"kubesim.ottoscaler.dev/run-seconds\" = \"{}\", \
             \"kubesim.ottoscaler.dev/exit-code\" = \"{}\" }}\n",
            t.name, t.run_seconds, t.exit_code
        );
    }
    out
}

/// One scale_up event of the workload, due `at` after the start.
#[derive(Debug, Clone)]
pub struct PlannedEvent {
    pub task_id: String,
    pub pod_count: u32,
    pub template: Template,
    pub at: Duration,
}

impl PlannedEvent {
    pub fn fields(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            ("type", "scale_up".to_string()),
            ("task_id", self.task_id.clone()),
            ("pod_count", self.pod_count.to_string()),
            ("template", self.template.name.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect()
    }
}

/// `n` scale_up events of 1 to `max_pods` pods, spread over `window` with jitter, task
/// ids in several spellings (pod names lowercase and sanitise them).
pub fn plan(
    rng: &mut StdRng,
    n: usize,
    window: Duration,
    templates: &[Template],
    max_pods: u32,
) -> Vec<PlannedEvent> {
    let step = window.as_secs_f64() / n.max(1) as f64;
    (0..n)
        .map(|i| {
            let at = Duration::from_secs_f64(step * i as f64 + rng.random_range(0.0..step));
            let task_id = match i % 3 {
                0 => format!("Build.{i}_Chaos"),
                _ => format!("task-{i}"),
            };
            PlannedEvent {
                task_id,
                pod_count: rng.random_range(1..=max_pods),
                template: templates[rng.random_range(0..templates.len())],
                at,
            }
        })
        .collect()
}

/// `k` random moments in `from..to`, sorted.
pub fn moments(rng: &mut StdRng, k: usize, from: Duration, to: Duration) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..k)
        .map(|_| Duration::from_secs_f64(rng.random_range(from.as_secs_f64()..to.as_secs_f64())))
        .collect();
    out.sort();
    out
}

/// What happens when: send event `i`, or disruption `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Send(usize),
    Disrupt(usize),
}

/// Events and disruptions merged in time order.
pub fn timeline(events: &[PlannedEvent], disruptions: &[Duration]) -> Vec<(Duration, Step)> {
    let mut steps: Vec<(Duration, Step)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.at, Step::Send(i)))
        .chain(
            disruptions
                .iter()
                .enumerate()
                .map(|(k, at)| (*at, Step::Disrupt(k))),
        )
        .collect();
    steps.sort_by_key(|(at, _)| *at);
    steps
}

// ---- Redis, binary-safe --------------------------------------------------------------

/// One stream entry, fields as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// Fields as text (lossy), later ones winning.
    pub fn map(&self) -> BTreeMap<String, String> {
        self.fields
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }
}

/// A Redis client for the test's side (producer and checks) that reconnects after
/// errors, so it rides out Redis restarts.
pub struct RedisClient {
    client: redis::Client,
    con: Option<MultiplexedConnection>,
}

impl RedisClient {
    /// `url` may carry a password (`redis://:secret@127.0.0.1:PORT`).
    pub fn new(url: &str) -> RedisClient {
        RedisClient {
            client: redis::Client::open(url).expect("redis url"),
            con: None,
        }
    }

    async fn con(&mut self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(con) = &self.con {
            return Ok(con.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let con = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.con = Some(con.clone());
        Ok(con)
    }

    /// One command; a failure drops the connection so the next call reconnects.
    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let mut con = self.con().await?;
        let result = cmd.query_async(&mut con).await;
        if result.is_err() {
            self.con = None;
        }
        result
    }

    /// `XADD stream * fields...`, the new id.
    pub async fn xadd(
        &mut self,
        stream: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
    ) -> redis::RedisResult<String> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k.as_slice()).arg(v.as_slice());
        }
        self.query(&cmd).await
    }

    /// [`xadd`](Self::xadd), retried every 100 ms for up to `timeout` (Redis may be
    /// restarting); panics after that.
    pub async fn xadd_retrying(
        &mut self,
        stream: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.xadd(stream, fields).await {
                Ok(id) => return id,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("XADD to {stream} failed for {timeout:?}: {e}"),
            }
        }
    }

    /// Every entry of `stream` (`XRANGE - +`), binary-safe.
    pub async fn entries(&mut self, stream: &str) -> redis::RedisResult<Vec<Entry>> {
        let reply: Value = self
            .query(redis::cmd("XRANGE").arg(stream).arg("-").arg("+"))
            .await?;
        Ok(parse_entries(reply))
    }

    /// Entries of `stream` pending in `group` (all consumers).
    pub async fn pending(&mut self, stream: &str, group: &str) -> redis::RedisResult<u64> {
        let reply: Value = self
            .query(redis::cmd("XPENDING").arg(stream).arg(group))
            .await?;
        Ok(match reply {
            Value::Array(parts) => match parts.first() {
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        })
    }

    /// Entries pending on one consumer of the group.
    pub async fn pending_of(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> redis::RedisResult<u64> {
        let reply: Value = self
            .query(
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(group)
                    .arg("-")
                    .arg("+")
                    .arg(100_000)
                    .arg(consumer),
            )
            .await?;
        Ok(match reply {
            Value::Array(rows) => rows.len() as u64,
            _ => 0,
        })
    }
}

fn bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(n) => n.to_string().into_bytes(),
        Value::VerbatimString { text, .. } => text.into_bytes(),
        _ => Vec::new(),
    }
}

fn parse_entries(reply: Value) -> Vec<Entry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let mut parts = parts.into_iter();
            let id = String::from_utf8_lossy(&bytes(parts.next()?)).into_owned();
            let fields = match parts.next() {
                Some(Value::Array(flat)) => {
                    let mut it = flat.into_iter();
                    let mut out = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        out.push((bytes(k), bytes(v)));
                    }
                    out
                }
                Some(Value::Map(pairs)) => pairs
                    .into_iter()
                    .map(|(k, v)| (bytes(k), bytes(v)))
                    .collect(),
                _ => Vec::new(),
            };
            Some(Entry { id, fields })
        })
        .collect()
}

// ---- the API server's view -----------------------------------------------------------

/// Every pod the API server shows in a namespace from the moment it started: the
/// distinct uids per pod name. A name with two uids was created twice.
///
/// A watch gap (an apiserver restart) is bridged by a re-list: a pod created and
/// deleted entirely inside the gap would not be seen. Gaps are counted, and reconnects
/// are fast (100 ms), so the window stays far shorter than any worker pod's life.
pub struct PodRecorder {
    seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    gaps: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl PodRecorder {
    /// Starts recording and returns once the first list is done.
    pub async fn start(pods: Api<Pod>) -> PodRecorder {
        let seen = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
        let gaps = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = {
            let seen = seen.clone();
            let gaps = gaps.clone();
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut lists = 0;
                let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::Init) => {
                            lists += 1;
                            if lists > 1 {
                                gaps.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Event::InitApply(p) | Event::Apply(p) | Event::Delete(p)) => {
                            if let (Some(name), Some(uid)) = (p.metadata.name, p.metadata.uid) {
                                seen.lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .entry(name)
                                    .or_default()
                                    .insert(uid);
                            }
                        }
                        Ok(Event::InitDone) => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                        // The watcher retries on the next poll: a short fixed pause.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("the pod recorder lists within 30 s")
            .expect("the pod recorder runs");
        PodRecorder { seen, gaps, task }
    }

    /// Distinct uids per pod name.
    pub fn uids(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-lists after the first one (watch gaps).
    pub fn gaps(&self) -> usize {
        self.gaps.load(Ordering::Relaxed)
    }
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Names of the pods in the namespace now (any label).
pub async fn pods_now(pods: &Api<Pod>) -> Result<Vec<String>, kube::Error> {
    Ok(pods
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect())
}

// ---- a run and its end checks ----------------------------------------------------------

/// A scale_up that was added to the stream.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub event: PlannedEvent,
}

/// One reliability scenario: a namespace, a Redis, the recorder, what was sent.
pub struct Run {
    pub name: &'static str,
    pub namespace: String,
    pub client: kube::Client,
    pub pods: Api<Pod>,
    pub redis: RedisClient,
    pub recorder: PodRecorder,
    pub sent: Vec<Sent>,
    pub started: Instant,
}

impl Run {
    /// Starts the recorder on `namespace` (which must be new and empty).
    pub async fn new(
        name: &'static str,
        client: kube::Client,
        namespace: &str,
        redis_url: &str,
    ) -> Run {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let recorder = PodRecorder::start(pods.clone()).await;
        Run {
            name,
            namespace: namespace.to_string(),
            client,
            pods,
            redis: RedisClient::new(redis_url),
            recorder,
            sent: Vec::new(),
            started: Instant::now(),
        }
    }

    /// XADDs the event (retrying while Redis is away) and remembers it.
    pub async fn send(&mut self, event: &PlannedEvent) -> String {
        let id = self
            .redis
            .xadd_retrying(STREAM, &event.fields(), Duration::from_secs(60))
            .await;
        self.sent.push(Sent {
            id: id.clone(),
            event: event.clone(),
        });
        id
    }

    /// Workers sent so far.
    pub fn workers(&self) -> usize {
        self.sent.iter().map(|s| s.event.pod_count as usize).sum()
    }

    /// What Redis and the API server say now, against what was sent.
    pub async fn verdict(&mut self) -> Verdict {
        let mut expected: BTreeMap<(String, u32), (&Sent, String)> = BTreeMap::new();
        for s in &self.sent {
            for i in 0..s.event.pod_count {
                let pod = ::ottoscaler::pods::pod_name(&s.event.task_id, &s.id, i);
                expected.insert((s.id.clone(), i), (s, pod));
            }
        }
        let mut v = Verdict {
            events: self.sent.len(),
            workers: expected.len(),
            ..Verdict::default()
        };
        let results = self.redis.entries(RESULTS).await;
        let pending = self.redis.pending(STREAM, GROUP).await;
        let dead = self.redis.entries(DEAD).await;
        let (results, pending, dead) = match (results, pending, dead) {
            (Ok(r), Ok(p), Ok(d)) => (r, p, d),
            (r, p, d) => {
                v.unreadable = Some(format!(
                    "Redis: results {:?} pending {:?} dead {:?}",
                    r.err(),
                    p.err(),
                    d.err()
                ));
                return v;
            }
        };
        v.results = results.len();
        v.pending = pending;
        v.dead_letters = dead.iter().map(|e| e.map()).collect();
        let mut per_worker: BTreeMap<(String, u32), Vec<BTreeMap<String, String>>> =
            BTreeMap::new();
        for r in results {
            let m = r.map();
            let key = (
                m.get("event_id").cloned().unwrap_or_default(),
                m.get("worker_index")
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(u32::MAX),
            );
            per_worker.entry(key).or_default().push(m);
        }
        for (key, (sent, pod)) in &expected {
            let label = format!("{pod} (event {} worker {})", key.0, key.1);
            match per_worker.get(key).map(Vec::as_slice) {
                None | Some([]) => v.missing.push(label),
                Some([one]) => {
                    let want = sent.event.template.outcome();
                    let outcome = one.get("outcome").map_or("", String::as_str);
                    let code = one.get("exit_code").map_or("", String::as_str);
                    let want_code = sent.event.template.exit_code.to_string();
                    if outcome != want || code != want_code || one.get("pod") != Some(pod) {
                        v.wrong.push(format!(
                            "{label}: outcome {outcome:?} exit_code {code:?} pod {:?}, expected {want:?} {want_code:?} {pod:?} (reason {:?})",
                            one.get("pod"),
                            one.get("reason")
                        ));
                    }
                }
                Some(many) => v.duplicated_results.push(format!(
                    "{label}: {} results: {:?}",
                    many.len(),
                    many.iter().map(|m| m.get("outcome")).collect::<Vec<_>>()
                )),
            }
        }
        for (key, list) in &per_worker {
            if !expected.contains_key(key) {
                v.unexpected_results
                    .push(format!("{key:?}: {} result(s)", list.len()));
            }
        }
        let uids = self.recorder.uids();
        v.pods_created = uids.values().map(BTreeSet::len).sum();
        let expected_pods: BTreeSet<&String> = expected.values().map(|(_, pod)| pod).collect();
        for (name, set) in &uids {
            if !expected_pods.contains(name) {
                v.unexpected_pods.push(name.clone());
            } else if set.len() > 1 {
                v.duplicated_pods
                    .push(format!("{name}: created {} times", set.len()));
            }
        }
        for pod in &expected_pods {
            if !uids.contains_key(*pod) {
                v.never_created.push((*pod).clone());
            }
        }
        match pods_now(&self.pods).await {
            Ok(left) => v.pods_left = left,
            Err(e) => v.unreadable = Some(format!("listing pods: {e}")),
        }
        v.watch_gaps = self.recorder.gaps();
        v
    }

    /// Waits (polling Redis and the API server every 250 ms) until every worker has a
    /// result, nothing is pending and no pod is left, then 1 s more for late
    /// duplicates; or until `timeout`. Panics with the log tail if an ottoscaler exits.
    pub async fn wait_for_end(
        &mut self,
        ottoscalers: &mut [&mut Ottoscaler],
        timeout: Duration,
    ) -> Verdict {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.verdict().await;
            if v.done() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return self.verdict().await;
            }
            for o in ottoscalers.iter_mut() {
                if let Some(status) = o.try_exited() {
                    panic!(
                        "{}: ottoscaler {} exited by itself ({status}):\n{}",
                        self.name,
                        o.consumer(),
                        o.log_tail(8000)
                    );
                }
            }
            if Instant::now() > deadline {
                eprintln!("{}: no end after {timeout:?}", self.name);
                return v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Panics with the verdict, the pods and each ottoscaler's log (its tail, and the
    /// lines about the first problem pods) unless the verdict is clean.
    pub async fn assert_clean(&self, verdict: &Verdict, ottoscalers: &[&Ottoscaler]) {
        if verdict.clean() {
            return;
        }
        let mut text = format!("{}: {verdict:#?}\n", self.name);
        text.push_str(&testenv::pods_summary(self.client.clone(), &self.namespace).await);
        let suspects: Vec<&str> = verdict.suspect_pods();
        for o in ottoscalers {
            let log = o.log();
            let _ = writeln!(
                text,
                "\n--- ottoscaler {} (log {})",
                o.consumer(),
                o.log_path().display()
            );
            for pod in &suspects {
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(pod)).take(20).collect();
                if !lines.is_empty() {
                    let _ = writeln!(text, "lines about {pod}:\n{}", lines.join("\n"));
                }
            }
            let _ = writeln!(text, "log tail:\n{}", o.log_tail(6000));
        }
        panic!("{text}");
    }
}

/// The state of a run, against what was sent.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub events: usize,
    pub workers: usize,
    /// Entries on the results stream.
    pub results: usize,
    /// Workers without a result.
    pub missing: Vec<String>,
    /// Workers with more than one result.
    pub duplicated_results: Vec<String>,
    /// Results for workers that were never asked for.
    pub unexpected_results: Vec<String>,
    /// Results with another outcome, exit code or pod than the template gives.
    pub wrong: Vec<String>,
    /// Distinct pod uids the API server showed.
    pub pods_created: usize,
    /// Pod names created more than once.
    pub duplicated_pods: Vec<String>,
    /// Expected pods the API server never showed.
    pub never_created: Vec<String>,
    /// Pods not belonging to any sent event.
    pub unexpected_pods: Vec<String>,
    /// Pods still there.
    pub pods_left: Vec<String>,
    /// Entries still pending in the group.
    pub pending: u64,
    pub dead_letters: Vec<BTreeMap<String, String>>,
    pub watch_gaps: usize,
    /// Redis or the API server could not be read.
    pub unreadable: Option<String>,
}

impl Verdict {
    /// Every worker reported, nothing pending, no pod left.
    pub fn done(&self) -> bool {
        self.unreadable.is_none()
            && self.missing.is_empty()
            && self.pending == 0
            && self.pods_left.is_empty()
    }

    /// Done, and nothing lost, repeated, unexpected or wrong.
    pub fn clean(&self) -> bool {
        self.done()
            && self.duplicated_results.is_empty()
            && self.unexpected_results.is_empty()
            && self.wrong.is_empty()
            && self.duplicated_pods.is_empty()
            && self.never_created.is_empty()
            && self.unexpected_pods.is_empty()
            && self.dead_letters.is_empty()
    }

    pub fn lost(&self) -> usize {
        self.missing.len()
    }

    pub fn duplicated(&self) -> usize {
        self.duplicated_results.len() + self.duplicated_pods.len()
    }

    pub fn orphaned(&self) -> usize {
        self.pods_left.len()
    }

    /// Pod names of the first few problems, to pick their lines out of the logs.
    fn suspect_pods(&self) -> Vec<&str> {
        self.missing
            .iter()
            .chain(&self.duplicated_results)
            .chain(&self.wrong)
            .chain(&self.duplicated_pods)
            .chain(&self.never_created)
            .chain(&self.pods_left)
            .filter_map(|s| s.split([' ', ':']).next())
            .take(3)
            .collect()
    }
}

// ---- figures ---------------------------------------------------------------------------

/// One `RELIABILITY:` line: printed, and appended to `$RELIABILITY_REPORT` if set.
pub fn report(test: &str, figures: &[(&str, String)]) {
    let mut line = format!("RELIABILITY: test={test}");
    for (k, v) in figures {
        let _ = write!(line, " {k}={v}");
    }
    println!("{line}");
    if let Some(path) = std::env::var_os("RELIABILITY_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The usual figures of a run's verdict.
pub fn verdict_figures(v: &Verdict, seconds: f64) -> Vec<(&'static str, String)> {
    vec![
        ("events", v.events.to_string()),
        ("workers", v.workers.to_string()),
        ("results", v.results.to_string()),
        ("pods_created", v.pods_created.to_string()),
        ("lost", v.lost().to_string()),
        ("duplicated", v.duplicated().to_string()),
        ("orphaned", v.orphaned().to_string()),
        ("wrong", v.wrong.len().to_string()),
        ("pending_left", v.pending.to_string()),
        ("dead_letters", v.dead_letters.len().to_string()),
        ("watch_gaps", v.watch_gaps.to_string()),
        ("seconds", format!("{seconds:.1}")),
    ]
}
