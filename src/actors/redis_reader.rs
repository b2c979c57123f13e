//! RedisReader: owns the consumer-group read of the event stream (docs/contract.md sections
//! 1 and 2) and feeds the Supervisor, acknowledging each entry only once its effect is
//! durable or it was dead-lettered.
//!
//! ```text
//!  connect ─► XGROUP CREATE ─► own pending (id 0, paged) ─► new (`>`, BLOCK) ─┐
//!     ▲                                                           ▲          │
//!     └── Redis error: backoff, reconnect ◄───────────────────────┴──────────┘
//!  every claim_idle/2: touch in-flight ids, XAUTOCLAIM idle entries of any consumer
//!  every stats_interval: XINFO GROUPS + XPENDING summary -> the stream gauges
//! ```
//!
//! Each entry is validated ([`ScaleEvent::from_fields`]); an invalid, vanished or
//! too-often-delivered one is dead-lettered and acked in one MULTI. A valid one is sent
//! to the Supervisor; `Ok(EventAccepted)` -> XACK -> [`EventAcknowledged`];
//! `Err(EventRefused)` leaves it pending so the claim loop retries it. Events of a batch
//! are dispatched concurrently and answered independently.
//!
//! Backpressure: nothing is read or claimed while the Supervisor reports no room (free
//! slots plus `limits.max_waiting_events` of read-ahead, which its scheduler chooses
//! among) or `max_in_flight` events await answers; the reader then re-checks every
//! [`BACKPRESSURE_WAIT`]. Events read ahead stay pending and unacknowledged until
//! their pods exist; the claim loop touches them (XCLAIM JUSTID: idle time reset,
//! delivery count unchanged) so no one claims them and waiting costs no delivery.
//!
//! Nothing is ever lost on a Redis failure: what was not acked is still pending, and is
//! read again by the pending-first read after the reconnect (or claimed). Nothing is
//! repeated either: entries still being handled (`in_flight`) are skipped when they come
//! back, and accepted entries whose XACK failed (`unacked`) are acked again, never sent
//! to the Supervisor a second time.
//!
//! # Layout
//! - this file: the actor's state, connection handling, stop, and message handlers;
//! - `reading`: the read loop (pending first, then new) and the claim loop;
//! - `entry`: what happens to one entry (dispatch, ack, dead letter);
//! - `client`: `StreamClient`, the Redis commands, each with a timeout;
//! - `entries`: pure parsing of replies and dead-letter fields;
//! - `config`: [`ReaderConfig`] and the defaults.

mod client;
mod config;
mod entries;
mod entry;
mod reading;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use self::client::{StreamClient, StreamError};
pub use self::config::{
    BACKPRESSURE_WAIT, DEFAULT_BLOCK, DEFAULT_MAX_IN_FLIGHT, DEFAULT_READ_COUNT, ReaderConfig,
};
use self::reading::Cursor;
use crate::http::Health;
use crate::lease::Fence;
use crate::messages::leader::LeadershipAcquired;
use crate::messages::reader::IsEventPending;
use crate::messages::reader::{ReadingStopped, StopReading};
use crate::messages::supervisor::{EventAcknowledged, GetStatus};
use crate::messages::{EventLimits, ScaleEvent};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::telemetry::traces::TraceSpan;

/// Reads the event stream as one consumer of the group and feeds the Supervisor.
pub struct RedisReader {
    config: Arc<ReaderConfig>,
    events: Recipient<ScaleEvent>,
    acks: Recipient<EventAcknowledged>,
    status: Recipient<GetStatus>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    limits: EventLimits,
    /// The live connections; `None` while (re)connecting.
    client: Option<Arc<StreamClient>>,
    /// Bumped on every connect and every connection loss: a loop step or error from an
    /// older connection is then recognised as stale and ends quietly.
    generation: u64,
    /// Failed connection attempts in a row, for the backoff.
    attempt: u32,
    /// A connect is scheduled or running (at most one at a time).
    connecting: bool,
    /// Entries being handled now: dispatched and unanswered, being acked or
    /// dead-lettered. Skipped when a pending read or a claim returns them again.
    in_flight: HashSet<String>,
    /// Accepted entries whose XACK failed: acked again after the reconnect, never
    /// dispatched again (the Supervisor already did the work).
    unacked: BTreeSet<String>,
    /// The last refusal per entry, for the dead-letter reason after max deliveries.
    refusals: HashMap<String, String>,
    /// A claim round is running.
    claiming: bool,
    /// A stats refresh is running (at most one at a time).
    refreshing_stats: bool,
    /// The running read step (or its backpressure wait), cancelled on stop.
    read_handle: Option<SpawnHandle>,
    /// [`StopReading`] arrived: no more reads or claims.
    stopping: bool,
    /// Who waits for the stop to complete.
    stop_waiters: Vec<oneshot::Sender<ReadingStopped>>,
    /// Open while this replica leads: nothing is read or claimed while it is closed.
    fence: Arc<Fence>,
    /// The take-over of the group (claiming the previous leaders' entries) is running.
    taking_over: bool,
    /// The open event spans (when traces are exported), from dispatch to ack or
    /// refusal; at most one per entry in `in_flight` or `unacked`.
    spans: HashMap<String, TraceSpan>,
}

impl RedisReader {
    /// A reader feeding the Supervisor behind `events` (and `acks`, `status`: the same
    /// Supervisor in production, a recording actor in tests).
    pub fn new(
        config: ReaderConfig,
        events: Recipient<ScaleEvent>,
        acks: Recipient<EventAcknowledged>,
        status: Recipient<GetStatus>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        limits: EventLimits,
    ) -> RedisReader {
        RedisReader {
            config: Arc::new(config),
            events,
            acks,
            status,
            metrics,
            health,
            limits,
            client: None,
            generation: 0,
            attempt: 0,
            connecting: false,
            in_flight: HashSet::new(),
            unacked: BTreeSet::new(),
            refusals: HashMap::new(),
            claiming: false,
            refreshing_stats: false,
            read_handle: None,
            stopping: false,
            stop_waiters: Vec::new(),
            fence: Arc::new(Fence::always_open()),
            taking_over: false,
            spans: HashMap::new(),
        }
    }

    /// Reads only while `fence` is open, and takes the group over (see
    /// [`StreamClient::take_over`]) each time reading starts under election. Without
    /// this the reader reads at once, alone (`ha.enabled = false`, and tests).
    pub fn with_fence(mut self, fence: Arc<Fence>) -> RedisReader {
        self.fence = fence;
        self
    }

    /// Starts the read loop, pending entries first: at once without election; under
    /// election only while leading, after taking the group over.
    fn start_reading(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.taking_over || self.read_handle.is_some() {
            return;
        }
        if self.fence.is_always_open() {
            return self.read_step(Cursor::Pending("0".into()), ctx);
        }
        if !self.fence.is_open() {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        self.taking_over = true;
        let generation = self.generation;
        let fut = async move { client.take_over().await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.taking_over = false;
            if act.generation != generation {
                return;
            }
            match res {
                Ok((claimed, removed)) => {
                    info!(
                        claimed,
                        consumers_removed = removed,
                        "took the consumer group over: every pending entry is this consumer's now"
                    );
                    act.read_step(Cursor::Pending("0".into()), ctx);
                }
                Err(e) => act.on_redis_error(generation, e, ctx),
            }
        }));
    }

    // ---- connection -------------------------------------------------------------

    /// Connects both connections and ensures the group. Spawned (not `wait`): the
    /// mailbox keeps answering `IsEventPending` and Supervisor answers meanwhile.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.connecting = true;
        let config = self.config.clone();
        let fut = async move {
            let client = StreamClient::connect(&config).await?;
            client.ensure_group().await?;
            Ok::<_, StreamError>(client)
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.connecting = false;
            match res {
                Ok(client) => act.on_connected(client, ctx),
                Err(e) => {
                    act.metrics.redis_error();
                    act.health.set_redis(false);
                    warn!(error = %e, attempt = act.attempt, "cannot connect to Redis; retrying");
                    act.schedule_connect(ctx);
                }
            }
        }));
    }

    /// Schedules the next connect after the jittered backoff of the attempts so far.
    fn schedule_connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let delay = Backoff::REDIS.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    /// Connected: ack what could not be acked, then read own pending entries first.
    fn on_connected(&mut self, client: StreamClient, ctx: &mut Context<Self>) {
        self.client = Some(Arc::new(client));
        self.generation += 1;
        self.attempt = 0;
        self.health.set_redis(true);
        info!(stream = %self.config.stream, group = %self.config.group, consumer = %self.config.consumer, "connected to Redis; reading own pending entries first");
        let unacked: Vec<String> = self.unacked.iter().cloned().collect();
        for id in unacked {
            self.retry_ack(id, ctx);
        }
        self.start_reading(ctx);
        // The gauges are known from the first connection on, not one interval later.
        self.refresh_stats(ctx);
        self.check_stopped();
    }

    /// A command failed. If it ran on the current connection, drop the connection and
    /// reconnect with backoff; the pending-first read after it recovers whatever was
    /// delivered but not seen. Errors from an already replaced connection only count.
    fn on_redis_error(&mut self, generation: u64, err: StreamError, ctx: &mut Context<Self>) {
        self.metrics.redis_error();
        if generation != self.generation || self.client.is_none() {
            debug!(error = %err, "error on a replaced Redis connection");
            return;
        }
        warn!(error = %err, "Redis command failed; reconnecting");
        self.health.set_redis(false);
        self.client = None;
        self.generation += 1;
        if let Some(handle) = self.read_handle.take() {
            ctx.cancel_future(handle);
        }
        self.schedule_connect(ctx);
    }

    // ---- stream gauges ----------------------------------------------------------

    /// Refreshes `ottoscaler_stream_lag` and `ottoscaler_oldest_pending_age_seconds`.
    /// Spawned on its own, with a timeout, on the short-command connection: it never
    /// holds up the read loop, and a failure only counts as a Redis error (the read loop
    /// notices a broken connection by itself). While not connected the gauges keep
    /// their last values.
    fn refresh_stats(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.refreshing_stats {
            return;
        }
        self.refreshing_stats = true;
        // The command timeout, not the interval: a refresh slower than a short interval
        // on a busy machine is late, not failed (the flag above keeps refreshes from
        // overlapping).
        let timeout = client::COMMAND_TIMEOUT;
        let fut = async move { tokio::time::timeout(timeout, client.stream_stats()).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            act.refreshing_stats = false;
            match res {
                Ok(Ok((lag, oldest))) => {
                    act.metrics.set_stream_lag(lag);
                    act.metrics
                        .set_oldest_pending_age(crate::startup::pending_age(
                            oldest.as_deref(),
                            jiff::Timestamp::now(),
                        ));
                }
                Ok(Err(e)) => {
                    act.metrics.redis_error();
                    debug!(error = %e, "stream stats not refreshed");
                }
                Err(_) => {
                    act.metrics.redis_error();
                    debug!(?timeout, "stream stats not refreshed: no answer in time");
                }
            }
        }));
    }

    // ---- stop -------------------------------------------------------------------

    /// Completes the stop once nothing is in flight or waiting for its ack.
    fn check_stopped(&mut self) {
        if self.stopping && self.in_flight.is_empty() && self.unacked.is_empty() {
            self.finish_stop();
        }
    }

    /// Answers every [`StopReading`] with what is still unfinished.
    fn finish_stop(&mut self) {
        let unfinished = self.in_flight.len() + self.unacked.len();
        if self.stop_waiters.is_empty() {
            return;
        }
        if unfinished == 0 {
            info!("reader stopped; every dispatched event was answered");
        } else {
            warn!(
                unfinished,
                "reader stop timed out; unfinished entries stay pending and are redelivered"
            );
        }
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(ReadingStopped { unfinished });
        }
    }
}

impl Actor for RedisReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(stream = %self.config.stream, consumer = %self.config.consumer, "redis reader started");
        ctx.run_interval(self.config.claim_period(), |act, ctx| act.claim_round(ctx));
        ctx.run_interval(self.config.stats_interval, |act, ctx| {
            act.refresh_stats(ctx)
        });
        self.connect(ctx);
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.health.set_redis(false);
        Running::Stop
    }
}

/// Restarted by `actix::Supervisor` after it stopped: the spawned futures (reads,
/// dispatches, acks) were dropped with the old context, so everything they tracked is
/// reset. What they had read is still pending in Redis and comes back through the
/// pending-first read after the reconnect. `unacked` survives: those entries are done.
impl Supervised for RedisReader {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        warn!("redis reader restarting");
        self.client = None;
        self.generation += 1;
        self.connecting = false;
        self.claiming = false;
        self.taking_over = false;
        self.refreshing_stats = false;
        self.in_flight.clear();
        // The dropped dispatches' spans end now; their entries get new ones when read again.
        let unacked = &self.unacked;
        self.spans.retain(|id, _| unacked.contains(id));
        self.read_handle = None;
        self.stop_waiters.clear();
    }
}

impl Handler<IsEventPending> for RedisReader {
    type Result = ResponseActFuture<Self, Result<bool, String>>;

    fn handle(&mut self, msg: IsEventPending, _ctx: &mut Self::Context) -> Self::Result {
        let Some(client) = self.client.clone() else {
            return Box::pin(actix::fut::ready(Err("not connected to Redis".to_string())));
        };
        let generation = self.generation;
        let fut = async move { client.is_pending(&msg.event_id).await };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            res.map_err(|e| {
                let text = e.to_string();
                act.on_redis_error(generation, e, ctx);
                text
            })
        }))
    }
}

impl Handler<LeadershipAcquired> for RedisReader {
    type Result = ();

    fn handle(&mut self, msg: LeadershipAcquired, ctx: &mut Self::Context) {
        info!(
            previous = msg.previous.as_deref(),
            connected = self.client.is_some(),
            "leading: reading starts"
        );
        // Not connected: the connect starts reading.
        self.start_reading(ctx);
    }
}

impl Handler<StopReading> for RedisReader {
    type Result = ResponseFuture<ReadingStopped>;

    fn handle(&mut self, msg: StopReading, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        if !self.stopping {
            info!(in_flight = self.in_flight.len(), timeout = ?msg.timeout, "reader stops reading; waiting for in-flight events");
            self.stopping = true;
            if let Some(handle) = self.read_handle.take() {
                ctx.cancel_future(handle);
            }
            ctx.run_later(msg.timeout, |act, _| act.finish_stop());
        }
        self.check_stopped();
        Box::pin(async move {
            // The sender is dropped only if the actor restarted meanwhile; nothing of the
            // old incarnation is in flight then.
            rx.await.unwrap_or(ReadingStopped { unfinished: 0 })
        })
    }
}

impl Handler<crate::messages::health::Ping> for RedisReader {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::health::Ping, _ctx: &mut Self::Context) {}
}

/// Blocks this actor's mailbox (not the thread) for the wedge's duration.
#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::messages::health::Wedge> for RedisReader {
    type Result = ();

    fn handle(&mut self, msg: crate::messages::health::Wedge, ctx: &mut Self::Context) {
        ctx.wait(actix::fut::wrap_future(tokio::time::sleep(msg.for_)));
    }
}
