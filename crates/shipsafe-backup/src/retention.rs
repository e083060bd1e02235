//! Grandfather-father-son retention for `backup prune`.
//!
//! Per environment, keep: the newest `keep_last` backups; the newest backup
//! of each of the `keep_daily` most recent days that have one; the same for
//! `keep_monthly` months; the newest verified backup, always; and any backup
//! a caller protects (e.g. referenced by a deploy that can still be rolled
//! back). Failed attempts are removed. Days and months are UTC.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use shipsafe_config::Retention;

use crate::manifest::Manifest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub env: String,
    pub created_at: String,
    pub keep: bool,
    /// Why it is kept, or why it goes.
    pub reasons: Vec<String>,
}

/// Decides, for every manifest, whether it stays. `protected` ids stay with
/// the given reason.
pub fn plan(
    manifests: &[Manifest],
    policy: Retention,
    protected: &BTreeMap<String, String>,
) -> Vec<Decision> {
    let mut by_env: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
    for m in manifests {
        by_env.entry(m.env.as_str()).or_default().push(m);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_env {
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let complete: Vec<&Manifest> = list.iter().copied().filter(|m| m.is_complete()).collect();
        let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, m) in complete.iter().enumerate() {
            if (i as u32) < policy.keep_last {
                reasons
                    .entry(&m.id)
                    .or_default()
                    .push(format!("one of the last {}", policy.keep_last));
            }
        }
        for (period, len, limit) in [
            ("daily", 10, policy.keep_daily),
            ("monthly", 7, policy.keep_monthly),
        ] {
            let mut seen: HashSet<&str> = HashSet::new();
            for m in &complete {
                let key = m.created_at.get(..len).unwrap_or(&m.created_at);
                if seen.len() as u32 >= limit {
                    break;
                }
                if seen.insert(key) {
                    reasons.entry(&m.id).or_default().push(format!(
                        "newest of {} ({period}, {} of {limit})",
                        key,
                        seen.len()
                    ));
                }
            }
        }
        if let Some(v) = complete.iter().find(|m| m.is_verified()) {
            reasons
                .entry(&v.id)
                .or_default()
                .push("newest verified backup (never deleted)".into());
        }
        for m in &list {
            if let Some(why) = protected.get(&m.id) {
                reasons.entry(&m.id).or_default().push(why.clone());
            }
        }
        for m in list {
            let kept = reasons.remove(m.id.as_str());
            let (keep, why) = match kept {
                Some(r) => (true, r),
                None if !m.is_complete() => (false, vec!["failed attempt, not a backup".into()]),
                None => (false, vec!["outside every retention rule".into()]),
            };
            out.push(Decision {
                id: m.id.clone(),
                env: m.env.clone(),
                created_at: m.created_at.clone(),
                keep,
                reasons: why,
            });
        }
    }
    out
}
