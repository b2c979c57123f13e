//! PodWatcher: the one shared watch on `managed-by=ottoscaler` pods.
//!
//! kube-runtime's watcher lists, then watches from the list's resourceVersion, and
//! re-lists after a gap (410 Gone, a dropped connection), with backoff. Each event is
//! reduced to a small [`PodObservation`](crate::messages::PodObservation) and sent to
//! the Supervisor, which hands it to the pod's worker. API cost: one list and one open
//! watch, however many workers run. Pods are decoded as a [`PodView`] (no spec, no
//! managed fields): the watch is where most of a worker's JSON arrives.

use actix::prelude::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tracing::{info, warn};

use crate::messages::PodWatchEvent;
use crate::outcome::observe;
use crate::pod_view::{self, PodView};
use crate::pods::MANAGED_BY_SELECTOR;

pub struct PodWatcher {
    pods: Api<PodView>,
    target: Recipient<PodWatchEvent>,
}

impl PodWatcher {
    /// Watches the pods of `pods`' namespace (all namespaces for `Api::all`).
    pub fn new(pods: Api<Pod>, target: Recipient<PodWatchEvent>) -> Self {
        Self {
            pods: pod_view::views(&pods),
            target,
        }
    }

    /// Lists, then watches; the watcher re-lists by itself after a gap.
    fn watch(&self, ctx: &mut Context<Self>) {
        let config = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
        let stream = watcher(self.pods.clone(), config)
            .default_backoff()
            .map(translate);
        ctx.add_stream(stream);
    }
}

/// One watcher event as the message the Supervisor gets.
fn translate(event: Result<Event<PodView>, watcher::Error>) -> PodWatchEvent {
    match event {
        Ok(Event::Init) => PodWatchEvent::Relisting,
        Ok(Event::InitApply(pod)) => PodWatchEvent::Listed(observe(&Pod::from(pod))),
        Ok(Event::InitDone) => PodWatchEvent::ListDone,
        Ok(Event::Apply(pod)) => PodWatchEvent::Applied(observe(&Pod::from(pod))),
        Ok(Event::Delete(pod)) => PodWatchEvent::Deleted {
            name: pod.metadata.name.unwrap_or_default(),
        },
        Err(e) => PodWatchEvent::Failed {
            error: e.to_string(),
        },
    }
}

impl Actor for PodWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(
            selector = MANAGED_BY_SELECTOR,
            "starting the shared pod watch"
        );
        self.watch(ctx);
    }
}

impl StreamHandler<PodWatchEvent> for PodWatcher {
    fn handle(&mut self, event: PodWatchEvent, _ctx: &mut Self::Context) {
        if let PodWatchEvent::Failed { error } = &event {
            warn!(%error, "pod watch error; retrying with backoff");
        }
        self.target.do_send(event);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The watcher stream does not end by itself; if it ever does, watch anew (it
        // starts with a full list, so nothing is missed).
        warn!("pod watch stream ended; starting it again");
        self.target.do_send(PodWatchEvent::Failed {
            error: "watch stream ended".into(),
        });
        self.watch(ctx);
    }
}
