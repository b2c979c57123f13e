//! Ottoscaler runs Otto CI/CD build agents ("workers") on Kubernetes, one pod per unit of
//! work, driven by scale events on a Redis Stream.
//!
//! ```text
//!  Redis stream ──► RedisReader ──ScaleEvent──► Supervisor ──spawns──► WorkerPodActor ×N
//!   (group, ack       │  ▲ accepted/refused       │  ▲  ▲                │ create / delete
//!    when durable)    │  └────────────────────────┘  │  │ WorkerFinished ▼
//!                     │                  PodWatcher ─┘  │            kube-apiserver
//!                     ▼                  (one watch)    ▼
//!                 dead letters                    ResultsPublisher ──► results stream
//! ```
//!
//! # Layout
//! - [`messages`]: every message between actors, and the `ScaleEvent` model with its
//!   validation.
//! - [`actors`]: one actor per module (reader, supervisor, worker, watch, publisher).
//! - [`pods`]: pod names, templates and pod building (pure); [`pod_view`]: the part of a
//!   pod the watch decodes.
//! - [`lease`]: leader election's decisions and the fence every acting path checks (pure).
//! - [`ledger`]: the Supervisor's books: workers, events, queue, restarts (pure).
//! - [`lifecycle`]: one worker's state machine: inputs in, actions out (pure).
//! - [`outcome`]: outcome rules and scale_down selection (pure).
//! - [`scheduler`]: which waiting scale_up starts next: priorities, tenants, caps (pure).
//! - [`startup`]: queue wait and pod start-up timings (pure).
//! - [`retry`]: backoff with jitter and error classification.
//! - [`settings`]: configuration, loaded once and validated at start.
//! - [`kube_client`]: the Kubernetes client with rate limiting and request metrics.
//! - [`metrics`], [`http`], [`telemetry`]: what operators see.
//! - [`cli`]: the command line; [`app`]: the `run` command wiring it all together.

pub mod actors;
pub mod app;
pub mod cli;
pub mod http;
pub mod kube_client;
pub mod lease;
pub mod ledger;
pub mod lifecycle;
pub mod messages;
pub mod metrics;
pub mod outcome;
pub mod pod_view;
pub mod pods;
pub mod retry;
pub mod scheduler;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod worker_events;
