//! What [`RedisReader`] does with one entry: skip it, ack it again, dead-letter it, or
//! dispatch it to the Supervisor and ack it once accepted.

use actix::prelude::*;
use tracing::{debug, warn};

use super::RedisReader;
use super::entries::{StreamEntry, TRIMMED, delivery_limit_reason, event_fields};
use crate::messages::ScaleEvent;
use crate::messages::supervisor::{EventAccepted, EventAcknowledged};
use crate::telemetry::traces::{self, Kind};

/// The `type` label of events that failed validation (see [`Metrics::event`]).
pub(super) const INVALID: &str = "invalid";
/// Refusal texts remembered for dead-letter reasons; bounded against a refusal storm.
const MAX_REMEMBERED_REFUSALS: usize = 10_000;

impl RedisReader {
    /// Decides each entry: skip (already being handled), ack again, dead-letter, or
    /// dispatch. `deliveries` is known for redelivered entries only.
    pub(super) fn handle_entries(
        &mut self,
        entries: Vec<(StreamEntry, Option<u64>)>,
        ctx: &mut Context<Self>,
    ) {
        for (entry, deliveries) in entries {
            if self.in_flight.contains(&entry.id) {
                continue;
            }
            if self.unacked.contains(&entry.id) {
                self.retry_ack(entry.id, ctx);
                continue;
            }
            let Some(fields) = entry.fields.as_deref() else {
                self.dead_letter(entry, TRIMMED.to_string(), INVALID, ctx);
                continue;
            };
            match ScaleEvent::from_fields(&entry.id, &event_fields(fields), &self.limits) {
                Err(e) => self.dead_letter(entry, e.to_string(), INVALID, ctx),
                Ok(event) => {
                    let limit = deliveries.and_then(|n| {
                        let last = self.refusals.get(&entry.id).map(String::as_str);
                        delivery_limit_reason(n, self.config.max_deliveries, last)
                    });
                    match limit {
                        Some(reason) => self.dead_letter(entry, reason, event.kind.as_str(), ctx),
                        None => self.dispatch(event, ctx),
                    }
                }
            }
        }
    }

    /// Sends a valid event to the Supervisor; concurrent with the rest of the batch
    /// (spawned, not `wait`): a slow scale_up must not hold up the others.
    pub(super) fn dispatch(&mut self, mut event: ScaleEvent, ctx: &mut Context<Self>) {
        let id = event.event_id.clone();
        let kind = event.kind.as_str();
        debug!(event_id = %id, task_id = %event.task_id, kind, "dispatching event");
        self.in_flight.insert(id.clone());
        event.trace = self.start_span(&event);
        let answer = self.events.send(event);
        ctx.spawn(answer.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Ok(accepted)) => act.on_accepted(id, kind, accepted, ctx),
            Ok(Err(refused)) => act.on_refused(id, kind, &refused),
            Err(e) => {
                let reason = format!("the Supervisor did not answer: {e}");
                act.on_refused(id, kind, &reason)
            }
        }));
    }

    /// The effect is durable: acknowledge, then tell the Supervisor it was.
    pub(super) fn on_accepted(
        &mut self,
        id: String,
        kind: &'static str,
        accepted: EventAccepted,
        ctx: &mut Context<Self>,
    ) {
        self.metrics.event(kind, "accepted");
        debug!(event_id = %id, pods = accepted.pods.len(), "event accepted");
        if let Some(span) = self.spans.get_mut(&id) {
            span.set("ottoscaler.pods", accepted.pods.len() as i64);
        }
        self.ack(id, ctx);
    }

    /// Opens the event's span (read -> ack), a child of the producer's `traceparent`
    /// when it sent one, and returns its context for the workers; `None` when traces
    /// are off.
    fn start_span(&mut self, event: &ScaleEvent) -> Option<crate::telemetry::TraceParent> {
        let mut attributes = vec![
            opentelemetry::KeyValue::new("messaging.system", "redis"),
            opentelemetry::KeyValue::new("messaging.operation.type", "process"),
            opentelemetry::KeyValue::new("messaging.destination.name", self.config.stream.clone()),
            opentelemetry::KeyValue::new("messaging.message.id", event.event_id.clone()),
            opentelemetry::KeyValue::new("ottoscaler.event.type", event.kind.as_str()),
            opentelemetry::KeyValue::new("ottoscaler.task_id", event.task_id.clone()),
            opentelemetry::KeyValue::new("ottoscaler.template", event.template.clone()),
        ];
        if let crate::messages::ScaleKind::Up { pod_count } = event.kind {
            attributes.push(opentelemetry::KeyValue::new(
                "ottoscaler.pod_count",
                i64::from(pod_count),
            ));
        }
        let span = traces::start(
            "ottoscaler.event",
            Kind::Consumer,
            event.trace.as_ref(),
            attributes,
        )?;
        let context = span.context();
        // A redelivered entry's earlier span (if any) ends here, replaced.
        self.spans.insert(event.event_id.clone(), span);
        Some(context)
    }

    /// Ends the entry's span, failed with `reason` if given.
    fn end_span(&mut self, id: &str, reason: Option<&str>) {
        if let Some(mut span) = self.spans.remove(id) {
            if let Some(reason) = reason {
                span.fail(reason);
            }
            span.end();
        }
    }

    /// Not done: leave the entry pending (the claim loop redelivers it) and remember why.
    pub(super) fn on_refused(
        &mut self,
        id: String,
        kind: &'static str,
        reason: &dyn std::fmt::Display,
    ) {
        self.metrics.event(kind, "refused");
        let reason = reason.to_string();
        warn!(event_id = %id, %reason, "event refused; it stays pending and is retried");
        self.in_flight.remove(&id);
        self.end_span(&id, Some(&format!("refused: {reason}")));
        self.remember_refusal(id, reason);
        self.check_stopped();
    }

    /// XACK an accepted entry; only after it succeeded may the Supervisor delete the
    /// event's finished pods ([`EventAcknowledged`]). A failed ack keeps it in `unacked`.
    pub(super) fn ack(&mut self, id: String, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            self.in_flight.remove(&id);
            self.unacked.insert(id);
            return;
        };
        self.in_flight.insert(id.clone());
        let generation = self.generation;
        let ack_id = id.clone();
        let fut = async move { client.ack(&ack_id).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.in_flight.remove(&id);
            match res {
                Ok(()) => {
                    act.refusals.remove(&id);
                    act.end_span(&id, None);
                    act.acks.do_send(EventAcknowledged { event_id: id });
                }
                Err(e) => {
                    act.unacked.insert(id.clone());
                    if generation == act.generation {
                        act.on_redis_error(generation, e, ctx);
                    } else if act.client.is_some() {
                        // Failed on a replaced connection: the new one is up already.
                        act.metrics.redis_error();
                        act.retry_ack(id, ctx);
                    }
                }
            }
            act.check_stopped();
        }));
    }

    /// Acks an entry from `unacked` again.
    pub(super) fn retry_ack(&mut self, id: String, ctx: &mut Context<Self>) {
        if self.client.is_some() && self.unacked.remove(&id) {
            debug!(event_id = %id, "acknowledging an accepted event again");
            self.ack(id, ctx);
        }
    }

    /// Copies the entry to the dead-letter stream with `reason` and acks it (one MULTI).
    /// If that fails the entry stays pending and is decided again when it comes back.
    pub(super) fn dead_letter(
        &mut self,
        entry: StreamEntry,
        reason: String,
        kind: &'static str,
        ctx: &mut Context<Self>,
    ) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let id = entry.id.clone();
        self.in_flight.insert(id.clone());
        let generation = self.generation;
        let fut = async move {
            let res = client.dead_letter(&entry, &reason).await;
            (entry, reason, res)
        };
        ctx.spawn(fut.into_actor(self).map(move |(entry, reason, res), act, ctx| {
            act.in_flight.remove(&id);
            match res {
                Ok(()) => {
                    act.metrics.dead_lettered();
                    act.metrics.event(kind, "dead_lettered");
                    act.refusals.remove(&id);
                    warn!(event_id = %id, error = %reason, dead_letter_stream = %act.config.dead_letter_stream, "event dead-lettered");
                    if kind != INVALID {
                        // A valid event given up after max deliveries may have created
                        // some pods: its entry is acknowledged now, so they may go.
                        act.acks.do_send(EventAcknowledged { event_id: id });
                    }
                }
                Err(_) if generation != act.generation && act.client.is_some() => {
                    act.metrics.redis_error();
                    act.dead_letter(entry, reason, kind, ctx);
                }
                Err(e) => act.on_redis_error(generation, e, ctx),
            }
            act.check_stopped();
        }));
    }

    pub(super) fn remember_refusal(&mut self, id: String, reason: String) {
        if self.refusals.len() >= MAX_REMEMBERED_REFUSALS && !self.refusals.contains_key(&id) {
            // Forget an arbitrary one: its dead letter then says "no refusal recorded".
            if let Some(old) = self.refusals.keys().next().cloned() {
                self.refusals.remove(&old);
            }
        }
        self.refusals.insert(id, reason);
    }
}
