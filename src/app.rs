//! The `run` command: wires settings, clients and actors together, serves HTTP, and
//! shuts down in order on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tracing::{info, warn};

use crate::actors::event_recorder;
use crate::actors::leader::{ElectorConfig, LeaderElector};
use crate::actors::pod_watcher::PodWatcher;
use crate::actors::redis_reader::{ReaderConfig, RedisReader};
use crate::actors::results_publisher::{PublisherConfig, ResultsPublisher};
use crate::actors::supervisor::{Supervisor, SupervisorConfig};
use crate::actors::worker_pod::WorkerEnv;
use crate::http::{self, Health};
use crate::kube_client;
use crate::lease::Fence;
use crate::messages::EventLimits;
use crate::messages::leader::{LeadershipAcquired, ReleaseLease};
use crate::messages::reader::StopReading;
use crate::messages::supervisor::{GetStatus, StopIntake};
use crate::metrics::Metrics;
use crate::pods::{PodBuilder, resolve_templates};
use crate::scheduler::Rules;
use crate::settings::{KubernetesSettings, Settings};

/// How long the Lease release on shutdown may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often readiness follows the Supervisor's view of the pod watch.
const READINESS_PERIOD: Duration = Duration::from_millis(500);

/// Runs ottoscaler until SIGTERM or SIGINT. Must run inside an actix System.
pub async fn run(settings: Settings, kubeconfig: Option<&Path>) -> anyhow::Result<()> {
    // Destructured so that a setting nobody uses is a compile error.
    let Settings {
        shutdown_timeout,
        redis,
        kubernetes,
        limits,
        // Read by WorkerEnv::new, as are kubernetes.max_concurrent_creates and templates.
        worker: _,
        http: http_settings,
        ha,
        // The trace exporter is started (and flushed at exit) by `main`, around this.
        telemetry: _,
        // Read by the Supervisor's scheduling policy and EventLimits::from_settings.
        scheduling: _,
        priorities: _,
        templates: _,
    } = &settings;
    let templates = resolve_templates(&settings)?;
    let metrics = Arc::new(
        Metrics::with_templates(settings.template_names())
            .with_priorities(settings.priorities.keys().map(String::as_str)),
    );
    let health = Arc::new(Health::with_liveness_timeout(
        http_settings.liveness_timeout,
    ));

    let (client, namespace) = kube_client::client(kubernetes, kubeconfig, metrics.clone())
        .await
        .context("connecting to Kubernetes")?;
    let consumer = settings.consumer_name();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        %namespace,
        stream = %redis.stream,
        group = %redis.group,
        %consumer,
        max_workers = limits.max_workers,
        "ottoscaler starting"
    );
    // Without election the fence is always open; with it, only the Lease opens it.
    let fence = Arc::new(if ha.enabled {
        Fence::closed()
    } else {
        Fence::always_open()
    });
    let lease_namespace = if ha.lease_namespace.is_empty() {
        client.default_namespace().to_string()
    } else {
        ha.lease_namespace.clone()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    let server = http::serve(http_settings.addr, health.clone(), metrics.clone())
        .with_context(|| format!("http.addr: cannot listen on {}", http_settings.addr))?;
    let server_handle = server.handle();
    actix_rt::spawn(server);

    let publisher = ResultsPublisher::new(PublisherConfig::from_settings(redis), metrics.clone())
        .with_fence(fence.clone())
        .start();

    // The Supervisor and the reader know each other: the reader sends events, the
    // Supervisor asks the reader whether adopted events are still pending. The
    // Supervisor's context is made first so the reader can be given its address.
    let supervisor_ctx = Context::<Supervisor>::new();
    let supervisor_addr = supervisor_ctx.address();
    let limits_for_events = EventLimits::from_settings(&settings);
    let reader_config = ReaderConfig::from_settings(redis, consumer.clone())
        .with_read_ahead(limits.max_waiting_events as usize);
    let reader_fence = fence.clone();
    let reader_metrics = metrics.clone();
    let reader_health = health.clone();
    let reader_supervisor = supervisor_addr.clone();
    // Supervised: if the reader stops on an unrecoverable error, actix restarts it.
    let reader = actix::Supervisor::start(move |_| {
        RedisReader::new(
            reader_config,
            reader_supervisor.clone().recipient(),
            reader_supervisor.clone().recipient(),
            reader_supervisor.recipient(),
            reader_metrics,
            reader_health,
            limits_for_events,
        )
        .with_fence(reader_fence.clone())
    });
    let rules = Rules::from_settings(&settings);
    let builder = PodBuilder {
        templates: templates.clone(),
        priority_class_names: rules.priority_class_names.clone(),
    };
    let supervisor_config = SupervisorConfig {
        worker_env: Arc::new(
            WorkerEnv::new(pods.clone(), &settings, metrics.clone())
                .with_fence(fence.clone())
                .with_builder(builder)
                .with_events(event_recorder::start(
                    client.clone(),
                    &namespace,
                    &settings,
                    metrics.clone(),
                )),
        ),
        templates,
        max_workers: limits.max_workers as usize,
        settle_timeout: limits.settle_timeout,
        restart_backoff: crate::retry::Backoff::RESTART,
        results: publisher.recipient(),
        pending_checker: Some(reader.clone().recipient()),
        rules,
        metrics: metrics.clone(),
    };
    // A standby Supervisor follows the pod watch but adopts nothing until it leads.
    let supervisor = supervisor_ctx.run(if ha.enabled {
        Supervisor::standby(supervisor_config)
    } else {
        Supervisor::new(supervisor_config)
    });
    let _watcher = PodWatcher::new(pods, supervisor.clone().recipient()).start();
    // Liveness: /healthz fails while either does not answer a ping in time.
    health.watch("supervisor", supervisor.clone().recipient());
    health.watch("reader", reader.clone().recipient());

    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    let elector = if ha.enabled {
        info!(lease = %ha.lease_name, namespace = %lease_namespace, "leader election on");
        let elector = ElectorStart {
            // One Lease request every few seconds: one connection is plenty.
            kubernetes: KubernetesSettings {
                http2_connections: 1,
                ..kubernetes.clone()
            },
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            namespace: lease_namespace,
            config: ElectorConfig::from_settings(ha, consumer.clone()),
            fence: fence.clone(),
            metrics: metrics.clone(),
            followers: vec![supervisor.clone().recipient(), reader.clone().recipient()],
            lost: lost_tx,
        };
        Some(elector.start().await?)
    } else {
        warn!("ha.enabled = false: this replica acts alone; run only one");
        metrics.set_leader(true);
        drop(lost_tx);
        None
    };

    // Kubernetes readiness is the pod watch being up (its list done, no recent error),
    // as the Supervisor sees it; no API requests are spent on probing.
    let readiness = {
        let supervisor = supervisor.clone();
        let health = health.clone();
        actix_rt::spawn(async move {
            loop {
                let ready = supervisor.send(GetStatus).await.is_ok_and(|s| s.ready);
                health.set_kube(ready);
                tokio::time::sleep(READINESS_PERIOD).await;
            }
        })
    };

    // Ends on a signal, or when leadership is lost (then the fence is already closed).
    let lost = tokio::select! {
        () = wait_for_signal() => None,
        why = lost_rx, if elector.is_some() => {
            Some(why.unwrap_or_else(|_| "the leader elector stopped".to_string()))
        }
    };
    if let Some(why) = lost {
        readiness.abort();
        health.set_kube(false);
        server_handle.stop(false).await;
        anyhow::bail!("lost leadership ({why}); exiting so that a fresh standby starts");
    }

    // Shutdown, within `shutdown_timeout` (docs/contract.md section 6):
    // 1. readiness goes down, so no new traffic is routed here;
    // 2. the reader stops reading and waits for in-flight events to be answered and
    //    acknowledged (what is not answered stays pending and is redelivered);
    // 3. the Supervisor takes no more events; workers are left alone, and their pods
    //    keep running for the next instance (or the standby) to adopt;
    // 4. with election, the Lease is released;
    // 5. the HTTP server stops; the process exits 0.
    info!(timeout = ?shutdown_timeout, "shutting down");
    readiness.abort();
    health.set_kube(false);
    let stop_budget = shutdown_timeout.saturating_sub(Duration::from_secs(1));
    match tokio::time::timeout(
        *shutdown_timeout,
        reader.send(StopReading {
            timeout: stop_budget,
        }),
    )
    .await
    {
        Ok(Ok(stopped)) if stopped.unfinished == 0 => info!("reader stopped cleanly"),
        Ok(Ok(stopped)) => warn!(
            unfinished = stopped.unfinished,
            "reader stopped with entries unfinished; they stay pending and are redelivered"
        ),
        Ok(Err(e)) => warn!(error = %e, "reader did not answer the stop"),
        Err(_) => warn!("reader stop timed out"),
    }
    let _ = supervisor.send(StopIntake).await;
    // 4. The fence closes first, then the holder is cleared: the standby takes over at
    //    once rather than after ha.lease_duration.
    if let Some((elector, _)) = &elector {
        let release = elector.send(ReleaseLease {
            timeout: RELEASE_TIMEOUT,
        });
        match tokio::time::timeout(RELEASE_TIMEOUT * 2, release).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "Lease not released"),
            Ok(Err(e)) => warn!(error = %e, "the leader elector did not answer the release"),
            Err(_) => warn!("Lease release timed out"),
        }
    }
    server_handle.stop(true).await;
    if let Some((_, arbiter)) = elector {
        arbiter.stop();
    }
    info!("ottoscaler stopped");
    Ok(())
}

/// What the [`LeaderElector`] is started with.
struct ElectorStart {
    kubernetes: KubernetesSettings,
    kubeconfig: Option<PathBuf>,
    namespace: String,
    config: ElectorConfig,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    followers: Vec<Recipient<LeadershipAcquired>>,
    lost: tokio::sync::oneshot::Sender<String>,
}

impl ElectorStart {
    /// Starts the elector on an arbiter (thread) of its own, with a Kubernetes client
    /// made there, so its connection and its renewals run on that thread: a main thread
    /// busy with a take-over's burst of events and pods cannot delay a renewal past the
    /// renew deadline.
    async fn start(self) -> anyhow::Result<(Addr<LeaderElector>, Arbiter)> {
        let arbiter = Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = arbiter.spawn(async move {
            let made = kube_client::client(
                &self.kubernetes,
                self.kubeconfig.as_deref(),
                self.metrics.clone(),
            )
            .await
            .map(|(client, _)| {
                LeaderElector::new(
                    Api::namespaced(client, &self.namespace),
                    self.config,
                    self.fence,
                    self.metrics,
                    self.followers,
                    self.lost,
                )
                .start()
            });
            let _ = tx.send(made);
        });
        anyhow::ensure!(started, "cannot start the leader elector's thread");
        let addr = rx
            .await
            .context("the leader elector's thread stopped")?
            .context("connecting the leader elector to Kubernetes")?;
        Ok((addr, arbiter))
    }
}

/// Resolves on SIGTERM (Kubernetes' stop) or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops ottoscaler");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
