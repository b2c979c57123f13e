//! Which waiting scale_up starts next when capacity frees: a pure function of the waiting
//! work, the capacity left, the priority classes, the tenants' shares and the waits.
//!
//! # The rule (policy `fair`, the default)
//! 1. **Caps.** An event whose template (`templates.<name>.max_workers`) or task
//!    (`limits.max_workers_per_task`) is at its cap is passed over: only workers of that
//!    template or task can make room for it, so it holds nobody else back. The tenant's
//!    later events of other templates and tasks may go meanwhile.
//! 2. **Priority, with aging.** Each priority class sits on a level: classes ordered by
//!    `weight`, highest first (equal weights share a level). Every `scheduling.aging` an
//!    event waits lifts it one level, up to the top: a low-priority event waits at most
//!    `aging` × (levels − 1) before it competes with the highest class.
//! 3. **Fairness across tenants.** On the highest level that has candidates, the tenant
//!    with the smallest start tag goes (start-time fair queueing): each tenant has a
//!    finish tag that grows by `pods / weight` (`scheduling.tenant_weights`, default 1)
//!    with every event it starts, and no tenant's tag is ever below the system's virtual
//!    time (the start tag of the last event started), so a tenant that was idle gets no
//!    banked credit and one that floods gets no more than its share. One account per
//!    tenant spans every class.
//! 4. **Stream order** within a tenant and class: only the oldest event of each
//!    (tenant, class) competes. Between equal tags the tenant with fewer workers alive
//!    goes first, then the older event.
//! 5. **No backfill.** If the chosen event does not fit the global free slots
//!    (`limits.max_workers`), nothing starts until it does: a large event is never starved
//!    by small ones behind it.
//!
//! Policy `fifo` is stream order alone (priorities and tenants ignored), as before
//! scheduling existed; step 1 and 5 still hold.
//!
//! # Starvation freedom
//! An event reaches the top level after at most `aging` × (levels − 1). There, its
//! (tenant, class) queue head is served once every tenant ahead of it by start tag was
//! served; each start raises the served tenant's tag by at least `1 / max weight`, and a
//! newcomer enters at the virtual time, which only grows, so finitely many starts come
//! before it. Within its queue, the events ahead of it are served first, each in the same
//! bounded way. (A capped event waits for its own template's or task's workers to finish,
//! which no other event delays.)

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The fixed-point unit of the fair tags: one pod of a tenant of weight 1.
const UNIT: u64 = 1_000_000;
/// Idle tenants remembered at most (see [`FairState::forget_idle`]).
pub const MAX_TRACKED: usize = 10_000;

/// How waiting scale_ups are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Priority classes with aging, then fair shares across tenants.
    Fair,
    /// Stream order.
    Fifo,
}

/// The scheduling configuration, resolved from `[scheduling]` and `[priorities]`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub kind: PolicyKind,
    /// Waiting this long lifts an event one level.
    pub aging: Duration,
    /// Level of each priority class (0 the lowest).
    levels: HashMap<String, u32>,
    top: u32,
    /// Tenants whose weight is not 1.
    tenant_weights: HashMap<String, u32>,
}

impl Policy {
    /// `classes` maps each priority class to its weight; `tenant_weights` the tenants
    /// whose share is not 1. Weights of 0 count as 1 (validation refuses them).
    pub fn new(
        kind: PolicyKind,
        aging: Duration,
        classes: &BTreeMap<String, u32>,
        tenant_weights: &BTreeMap<String, u32>,
    ) -> Policy {
        let mut weights: Vec<u32> = classes.values().copied().collect();
        weights.sort_unstable();
        weights.dedup();
        let levels = classes
            .iter()
            .map(|(name, w)| {
                let level = weights.binary_search(w).unwrap_or(0);
                (name.clone(), u32::try_from(level).unwrap_or(u32::MAX))
            })
            .collect();
        Policy {
            kind,
            aging,
            levels,
            top: u32::try_from(weights.len().saturating_sub(1)).unwrap_or(u32::MAX),
            tenant_weights: tenant_weights
                .iter()
                .map(|(t, w)| (t.clone(), (*w).max(1)))
                .collect(),
        }
    }

    /// One class of weight 1: every event is equal but for its tenant.
    pub fn single_class(kind: PolicyKind) -> Policy {
        let classes = BTreeMap::from([("normal".to_string(), 1)]);
        Policy::new(kind, Duration::from_secs(60), &classes, &BTreeMap::new())
    }

    /// The level of a class; an unknown class (validation refuses them) is the lowest.
    pub fn level(&self, class: &str) -> u32 {
        self.levels.get(class).copied().unwrap_or(0)
    }

    /// The level an event of `class` competes on after waiting `waited`.
    pub fn effective_level(&self, class: &str, waited: Duration) -> u32 {
        let lifts = if self.aging.is_zero() {
            u128::from(self.top)
        } else {
            waited.as_nanos() / self.aging.as_nanos()
        };
        let lifts = u32::try_from(lifts).unwrap_or(u32::MAX);
        self.level(class).saturating_add(lifts).min(self.top)
    }

    fn tenant_weight(&self, tenant: &str) -> u64 {
        u64::from(self.tenant_weights.get(tenant).copied().unwrap_or(1))
    }
}

/// Everything the Supervisor needs to schedule: the policy, the caps, what each class
/// puts on its pods, and the read-ahead.
#[derive(Debug, Clone)]
pub struct Rules {
    pub policy: Policy,
    /// `templates.<name>.max_workers` of the capped templates.
    pub template_caps: HashMap<String, usize>,
    /// `limits.max_workers_per_task`, if set.
    pub task_cap: Option<usize>,
    /// `priorities.<name>.priority_class_name` of the classes that set one.
    pub priority_class_names: HashMap<String, String>,
    /// `limits.max_waiting_events`: scale_ups read ahead of capacity at most.
    pub max_waiting_events: usize,
    /// `scheduling.metrics_tenants`.
    pub metrics_tenants: usize,
    /// `worker.max_disruption_retries`: how many later attempts of a worker the books
    /// look for when they meet one of its pods.
    pub max_disruption_retries: u32,
}

impl Default for Rules {
    /// Fair, one class, no caps, the default read-ahead.
    fn default() -> Self {
        Rules {
            policy: Policy::single_class(PolicyKind::Fair),
            template_caps: HashMap::new(),
            task_cap: None,
            priority_class_names: HashMap::new(),
            max_waiting_events: 1000,
            metrics_tenants: 10,
            max_disruption_retries: 2,
        }
    }
}

impl Rules {
    pub fn from_settings(settings: &crate::settings::Settings) -> Rules {
        Rules {
            policy: settings.scheduling.policy(&settings.priorities),
            template_caps: settings
                .templates
                .iter()
                .filter(|(_, t)| t.max_workers > 0)
                .map(|(n, t)| (n.clone(), t.max_workers as usize))
                .collect(),
            task_cap: Some(settings.limits.max_workers_per_task as usize).filter(|c| *c > 0),
            priority_class_names: settings
                .priorities
                .iter()
                .filter(|(_, p)| !p.priority_class_name.is_empty())
                .map(|(n, p)| (n.clone(), p.priority_class_name.clone()))
                .collect(),
            max_waiting_events: settings.limits.max_waiting_events as usize,
            metrics_tenants: settings.scheduling.metrics_tenants as usize,
            max_disruption_retries: settings.worker.max_disruption_retries,
        }
    }
}

/// The stream order of an entry id (`<ms>-<seq>`), or `None` if it is not one.
pub fn stream_order(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    ms.checked_mul(1_000_000)?.checked_add(seq.min(999_999))
}

/// One waiting scale_up, as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Stream order: smaller goes first among equals.
    pub order: u64,
    pub tenant: &'a str,
    pub class: &'a str,
    pub task: &'a str,
    pub template: &'a str,
    /// Pods it would start now.
    pub pods: usize,
    /// Workers its tenant has alive now: between equal tags, the tenant holding fewer
    /// goes first (so a tenant whose burst took every slot before anyone else waited
    /// does not also win the first tie).
    pub tenant_workers: usize,
    /// How long it has waited.
    pub waited: Duration,
}

/// The room left: global free slots, and what each capped template and the per-task cap
/// still allow.
#[derive(Debug, Clone, Default)]
pub struct Capacity<'a> {
    pub free: usize,
    /// Room left per capped template (templates without a cap are absent).
    pub template_room: HashMap<&'a str, usize>,
    /// `limits.max_workers_per_task`, if set...
    pub task_cap: Option<usize>,
    /// ...and the workers each task has now (absent: none).
    pub task_workers: HashMap<&'a str, usize>,
}

impl Capacity<'_> {
    /// Whether `c` is held back by its template's or its task's cap (not by the global
    /// free slots).
    fn capped(&self, c: &Candidate<'_>) -> bool {
        let template_full = self
            .template_room
            .get(c.template)
            .is_some_and(|room| c.pods > *room);
        let task_full = self.task_cap.is_some_and(|cap| {
            let has = self.task_workers.get(c.task).copied().unwrap_or(0);
            has.saturating_add(c.pods) > cap
        });
        template_full || task_full
    }
}

/// What the scheduler remembers between decisions: each tenant's finish tag and the
/// virtual time. Cleared whenever nothing waits, so it never outgrows the tenants that
/// waited recently.
#[derive(Debug, Clone, Default)]
pub struct FairState {
    finish: HashMap<String, u64>,
    virtual_time: u64,
}

impl FairState {
    /// The tag `tenant` would start at now.
    pub fn start_tag(&self, tenant: &str) -> u64 {
        self.finish
            .get(tenant)
            .copied()
            .unwrap_or(0)
            .max(self.virtual_time)
    }

    /// `tenant` started an event of `pods` pods.
    pub fn started(&mut self, policy: &Policy, tenant: &str, pods: usize) {
        let start = self.start_tag(tenant);
        let cost = u64::try_from(pods.max(1))
            .unwrap_or(u64::MAX)
            .saturating_mul(UNIT)
            / policy.tenant_weight(tenant);
        self.virtual_time = start;
        self.finish
            .insert(tenant.to_string(), start.saturating_add(cost));
        // Tags at or below the virtual time carry no information any more.
        let now = self.virtual_time;
        self.finish.retain(|_, f| *f > now);
    }

    /// Beyond [`MAX_TRACKED`] tenants, forgets those with nothing waiting, whatever they
    /// owe, so the state stays bounded in a long busy period with a new tenant per event
    /// (the default tenant is the task). Below it nothing is forgotten early: a tenant
    /// whose one-pod events each start as they come must keep its tag, or it would start
    /// afresh every time and outrun a backlogged tenant forever.
    pub fn forget_idle(&mut self, waits: impl Fn(&str) -> bool) {
        if self.finish.len() > MAX_TRACKED {
            self.finish.retain(|t, _| waits(t));
        }
    }

    /// Nothing waits: history no longer matters.
    pub fn idle(&mut self) {
        self.finish.clear();
        self.virtual_time = 0;
    }

    /// Tenants with a tag above the virtual time (for tests and bounds).
    pub fn tracked(&self) -> usize {
        self.finish.len()
    }
}

/// The index (into `waiting`, in any order) of the event to start now, or `None` if
/// none may start (nothing waits, all are capped, or the chosen one does not fit the free
/// slots yet).
pub fn pick(
    policy: &Policy,
    state: &FairState,
    waiting: &[Candidate<'_>],
    capacity: &Capacity<'_>,
) -> Option<usize> {
    let open = waiting
        .iter()
        .enumerate()
        .filter(|(_, c)| !capacity.capped(c));
    let chosen = match policy.kind {
        PolicyKind::Fifo => open.min_by_key(|(_, c)| c.order).map(|(i, _)| i),
        PolicyKind::Fair => {
            // The oldest open event of each (tenant, class) is its queue's head.
            let mut heads: HashMap<(&str, &str), (usize, u64)> = HashMap::new();
            for (i, c) in open {
                let head = heads.entry((c.tenant, c.class)).or_insert((i, c.order));
                if c.order < head.1 {
                    *head = (i, c.order);
                }
            }
            heads
                .into_values()
                .map(|(i, _)| {
                    let c = &waiting[i];
                    let level = policy.effective_level(c.class, c.waited);
                    // Higher level first: inverted, so the smallest rank wins throughout.
                    let rank = (
                        u32::MAX - level,
                        state.start_tag(c.tenant),
                        c.tenant_workers,
                        c.order,
                    );
                    (i, rank)
                })
                .min_by_key(|(_, rank)| *rank)
                .map(|(i, _)| i)
        }
    }?;
    (waiting[chosen].pods <= capacity.free).then_some(chosen)
}

#[cfg(test)]
mod tests;
