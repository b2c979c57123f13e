//! `[scheduling]` and `[priorities.<name>]`: who goes first when capacity is short
//! (docs/contract.md, "Scheduling"). The rule itself is [`crate::scheduler`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::validate::is_dns_subdomain;
use crate::scheduler::{Policy, PolicyKind};

/// The class of events without a `priority` field, unless `scheduling.default_priority`
/// names another; it always exists (built in, overridable).
pub const DEFAULT_PRIORITY: &str = "normal";

/// How waiting scale_ups are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulingPolicy {
    /// Priority classes (with aging), then fair shares across tenants. The default.
    Fair,
    /// Stream order, priorities and tenants ignored.
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulingSettings {
    /// `fair` or `fifo`. Default `fair`.
    pub policy: SchedulingPolicy,
    /// The event field naming its tenant; an event without it is its task's own tenant.
    /// The field stays metadata (`OTTO_META_<KEY>`). Default `tenant`.
    pub tenant_field: String,
    /// Every `aging` an event waits lifts it one priority level, so that nothing starves.
    /// Default `60s`.
    #[serde(with = "humantime_serde")]
    pub aging: Duration,
    /// The class of events without a `priority` field. Default `normal`.
    pub default_priority: String,
    /// Tenants whose fair share is not 1 (`team-a = 2`: twice the others' share).
    pub tenant_weights: BTreeMap<String, u32>,
    /// The tenants with most waiting events and workers get their own metric label;
    /// the rest count as `other`. Default 10.
    pub metrics_tenants: u32,
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        Self {
            policy: SchedulingPolicy::Fair,
            tenant_field: "tenant".into(),
            aging: Duration::from_secs(60),
            default_priority: DEFAULT_PRIORITY.into(),
            tenant_weights: BTreeMap::new(),
            metrics_tenants: 10,
        }
    }
}

/// One priority class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityClassSettings {
    /// Higher weights go first (equal weights share a level). At least 1. Default 1.
    pub weight: u32,
    /// `priorityClassName` set on the pods of this class's events (it wins over the
    /// template's); empty: the template's. Default empty.
    pub priority_class_name: String,
}

impl Default for PriorityClassSettings {
    fn default() -> Self {
        Self {
            weight: 1,
            priority_class_name: String::new(),
        }
    }
}

/// The built-in classes: `normal`, weight 1.
pub fn default_priorities() -> BTreeMap<String, PriorityClassSettings> {
    BTreeMap::from([(
        DEFAULT_PRIORITY.to_string(),
        PriorityClassSettings::default(),
    )])
}

impl SchedulingSettings {
    pub(super) fn validate(
        &self,
        priorities: &BTreeMap<String, PriorityClassSettings>,
    ) -> Result<(), ConfigError> {
        if self.aging.is_zero() {
            return Err(ConfigError::invalid(
                "scheduling.aging",
                "must be longer than 0s",
            ));
        }
        let field = &self.tenant_field;
        let valid_key = !field.is_empty()
            && field.len() <= 64
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key || crate::messages::event::is_known_field(field) {
            return Err(ConfigError::invalid(
                "scheduling.tenant_field",
                format!(
                    "({field:?}) must be a metadata field name (1 to 64 letters, digits or '_') other than the event's own fields"
                ),
            ));
        }
        if !priorities.contains_key(&self.default_priority) {
            return Err(ConfigError::invalid(
                "scheduling.default_priority",
                format!(
                    "({:?}) names no class in [priorities] ({})",
                    self.default_priority,
                    priorities.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if let Some((tenant, _)) = self.tenant_weights.iter().find(|(_, w)| **w == 0) {
            return Err(ConfigError::invalid(
                &format!("scheduling.tenant_weights.{tenant}"),
                "must be at least 1",
            ));
        }
        for (name, class) in priorities {
            let valid_name = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid_name {
                return Err(ConfigError::invalid(
                    &format!("priorities.{name}"),
                    "a class name is 1 to 63 letters, digits, '-', '_' or '.'",
                ));
            }
            if class.weight == 0 {
                return Err(ConfigError::invalid(
                    &format!("priorities.{name}.weight"),
                    "must be at least 1",
                ));
            }
            let pcn = &class.priority_class_name;
            if !pcn.is_empty() && !is_dns_subdomain(pcn) {
                return Err(ConfigError::invalid(
                    &format!("priorities.{name}.priority_class_name"),
                    format!("({pcn:?}) is not a valid PriorityClass name"),
                ));
            }
        }
        Ok(())
    }

    /// The scheduler's policy.
    pub fn policy(&self, priorities: &BTreeMap<String, PriorityClassSettings>) -> Policy {
        let kind = match self.policy {
            SchedulingPolicy::Fair => PolicyKind::Fair,
            SchedulingPolicy::Fifo => PolicyKind::Fifo,
        };
        let classes = priorities
            .iter()
            .map(|(n, c)| (n.clone(), c.weight))
            .collect();
        Policy::new(kind, self.aging, &classes, &self.tenant_weights)
    }
}
