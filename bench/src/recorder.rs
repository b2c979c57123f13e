//! A pod watch of the harness' own on one namespace, recording the wall-clock time at
//! which each pod was first seen, Running, finished, being deleted and gone.
//!
//! It runs on a thread of its own with a current-thread runtime, so kubesim and the
//! ceiling program (on the harness' main runtime) cannot delay its timestamps.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{oneshot, watch};

/// The annotations ottoscaler puts on every worker pod (docs/contract.md section 3).
pub const EVENT_ID: &str = "ottoscaler.io/event-id";
pub const CREATED_AT: &str = "ottoscaler.io/created-at";

/// When the watch saw what, in microseconds since the Unix epoch.
#[derive(Debug, Clone, Default)]
pub struct PodTimes {
    pub event_id: Option<String>,
    /// ottoscaler's `created-at` annotation (set when it builds the pod, before it waits for
    /// a create slot and sends the request).
    pub annotated_created_us: Option<i64>,
    /// First seen (the ADDED event).
    pub seen_us: Option<i64>,
    pub running_us: Option<i64>,
    /// First seen Succeeded or Failed.
    pub finished_us: Option<i64>,
    /// First seen with a deletionTimestamp, or DELETED, whichever came first.
    pub deleting_us: Option<i64>,
    pub gone_us: Option<i64>,
    /// The uids seen under this name: two mean the pod was created a second time after
    /// the first was deleted.
    pub uids: Vec<String>,
}

/// How many pods reached each state; waiters watch these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub seen: usize,
    pub running: usize,
    pub finished: usize,
    pub deleting: usize,
    pub gone: usize,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, PodTimes>,
    /// The first pod seen, whole: the ceiling program creates copies of it.
    sample: Option<Pod>,
    /// Names listed since the watcher's last (re)list started.
    listing: Option<HashSet<String>>,
    counts: Counts,
}

/// The recording watch; stopped when dropped.
pub struct Recorder {
    state: Arc<Mutex<State>>,
    counts: watch::Receiver<Counts>,
    stop: Option<oneshot::Sender<()>>,
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Recorder {
    /// Starts watching `namespace` and returns once the initial list is done.
    pub async fn start(config: kube::Config, namespace: &str) -> Result<Recorder> {
        let state = Arc::new(Mutex::new(State::default()));
        let (counts_tx, counts) = watch::channel(Counts::default());
        let (synced_tx, synced_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel();
        let thread_state = Arc::clone(&state);
        let namespace = namespace.to_string();
        std::thread::Builder::new()
            .name("bench-recorder".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        let _ = synced_tx.send(Err(anyhow!("recorder runtime: {err}")));
                        return;
                    }
                };
                runtime.block_on(record(
                    config,
                    namespace,
                    thread_state,
                    counts_tx,
                    synced_tx,
                    stop_rx,
                ));
            })
            .context("cannot start the recorder thread")?;
        tokio::time::timeout(Duration::from_secs(30), synced_rx)
            .await
            .context("the recorder's watch did not list within 30 s")?
            .context("the recorder thread ended")??;
        Ok(Recorder {
            state,
            counts,
            stop: Some(stop),
        })
    }

    /// Waits until `done(counts)` holds; fails after `timeout`, naming `what`.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Counts) -> bool,
    ) -> Result<Counts> {
        let mut rx = self.counts.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|c| done(c))).await {
            Ok(Ok(counts)) => Ok(*counts),
            Ok(Err(_)) => Err(anyhow!("the recorder stopped while waiting for {what}")),
            Err(_) => Err(anyhow!(
                "no {what} within {timeout:?} (pods: {:?})",
                *self.counts.borrow()
            )),
        }
    }

    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Every pod seen so far.
    pub fn pods(&self) -> HashMap<String, PodTimes> {
        self.lock().pods.clone()
    }

    /// The first pod seen, as the API server returned it.
    pub fn sample(&self) -> Option<Pod> {
        self.lock().sample.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn record(
    config: kube::Config,
    namespace: String,
    state: Arc<Mutex<State>>,
    counts: watch::Sender<Counts>,
    synced: oneshot::Sender<Result<()>>,
    mut stop: oneshot::Receiver<()>,
) {
    let client = match kube::Client::try_from(config) {
        Ok(client) => client,
        Err(err) => {
            let _ = synced.send(Err(anyhow!("recorder client: {err}")));
            return;
        }
    };
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut synced = Some(synced);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            event = stream.next() => match event {
                Some(Ok(event)) => {
                    let now = now_us();
                    let is_init_done = matches!(event, Event::InitDone);
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.apply(event, now);
                    counts.send_replace(s.counts);
                    drop(s);
                    if is_init_done && let Some(tx) = synced.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                Some(Err(err)) => eprintln!("bench: recorder watch error (retrying): {err}"),
                None => return,
            },
        }
    }
}

impl State {
    fn apply(&mut self, event: Event<Pod>, now: i64) {
        match event {
            Event::Init => self.listing = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let (Some(listing), Some(name)) = (&mut self.listing, &pod.metadata.name) {
                    listing.insert(name.clone());
                }
                self.seen(&pod, now);
            }
            Event::InitDone => {
                // Pods that vanished while the watch was away are gone now.
                if let Some(listed) = self.listing.take() {
                    let missing: Vec<String> = self
                        .pods
                        .iter()
                        .filter(|(name, t)| t.gone_us.is_none() && !listed.contains(*name))
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in missing {
                        self.gone(&name, now);
                    }
                }
            }
            Event::Apply(pod) => self.seen(&pod, now),
            Event::Delete(pod) => {
                self.seen(&pod, now);
                if let Some(name) = &pod.metadata.name {
                    self.gone(name, now);
                }
            }
        }
    }

    fn seen(&mut self, pod: &Pod, now: i64) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        if self.sample.is_none() {
            self.sample = Some(pod.clone());
        }
        let counts = &mut self.counts;
        let times = self.pods.entry(name).or_insert_with(|| {
            counts.seen += 1;
            let annotations = pod.metadata.annotations.as_ref();
            PodTimes {
                event_id: annotations.and_then(|a| a.get(EVENT_ID)).cloned(),
                annotated_created_us: annotations
                    .and_then(|a| a.get(CREATED_AT))
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_microsecond()),
                seen_us: Some(now),
                ..PodTimes::default()
            }
        });
        if let Some(uid) = &pod.metadata.uid
            && !times.uids.contains(uid)
        {
            times.uids.push(uid.clone());
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Running" | "Succeeded" | "Failed")) && times.running_us.is_none() {
            times.running_us = Some(now);
            counts.running += 1;
        }
        if matches!(phase, Some("Succeeded" | "Failed")) && times.finished_us.is_none() {
            times.finished_us = Some(now);
            counts.finished += 1;
        }
        if pod.metadata.deletion_timestamp.is_some() && times.deleting_us.is_none() {
            times.deleting_us = Some(now);
            counts.deleting += 1;
        }
    }

    fn gone(&mut self, name: &str, now: i64) {
        let Some(times) = self.pods.get_mut(name) else {
            return;
        };
        if times.deleting_us.is_none() {
            times.deleting_us = Some(now);
            self.counts.deleting += 1;
        }
        if times.gone_us.is_none() {
            times.gone_us = Some(now);
            self.counts.gone += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::ObjectMeta;

    fn pod(name: &str, phase: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    [
                        (EVENT_ID.to_string(), "1700000000000-0".to_string()),
                        (
                            CREATED_AT.to_string(),
                            "2023-11-14T22:13:20.0015Z".to_string(),
                        ),
                    ]
                    .into(),
                ),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn each_state_is_timed_once_in_order() {
        let mut s = State::default();
        s.apply(Event::Apply(pod("a", "Pending", false)), 10);
        s.apply(Event::Apply(pod("a", "Running", false)), 20);
        s.apply(Event::Apply(pod("a", "Succeeded", false)), 30);
        s.apply(Event::Apply(pod("a", "Succeeded", false)), 35);
        s.apply(Event::Delete(pod("a", "Succeeded", true)), 40);
        let t = &s.pods["a"];
        assert_eq!(t.event_id.as_deref(), Some("1700000000000-0"));
        assert_eq!(t.annotated_created_us, Some(1_700_000_000_001_500));
        assert_eq!(
            (
                t.seen_us,
                t.running_us,
                t.finished_us,
                t.deleting_us,
                t.gone_us
            ),
            (Some(10), Some(20), Some(30), Some(40), Some(40))
        );
        assert_eq!(
            s.counts,
            Counts {
                seen: 1,
                running: 1,
                finished: 1,
                deleting: 1,
                gone: 1
            }
        );
        assert!(s.sample.is_some());
    }

    #[test]
    fn a_name_created_twice_keeps_both_uids() {
        let with_uid = |uid: &str| {
            let mut p = pod("a", "Running", false);
            p.metadata.uid = Some(uid.into());
            p
        };
        let mut s = State::default();
        s.apply(Event::Apply(with_uid("u1")), 10);
        s.apply(Event::Apply(with_uid("u1")), 11);
        s.apply(Event::Delete(with_uid("u1")), 20);
        s.apply(Event::Apply(with_uid("u2")), 30);
        assert_eq!(s.pods["a"].uids, vec!["u1".to_string(), "u2".to_string()]);
        assert_eq!(s.counts.seen, 1);
    }

    #[test]
    fn a_pod_missing_from_a_relist_is_gone() {
        let mut s = State::default();
        s.apply(Event::Apply(pod("a", "Running", false)), 10);
        s.apply(Event::Apply(pod("b", "Running", false)), 10);
        s.apply(Event::Init, 50);
        s.apply(Event::InitApply(pod("b", "Running", false)), 50);
        s.apply(Event::InitDone, 60);
        assert_eq!(s.pods["a"].gone_us, Some(60));
        assert_eq!(s.pods["b"].gone_us, None);
        assert_eq!(s.counts.gone, 1);
    }
}
