//! Retention: when a draining release is retired, and which shell a new
//! session gets while a canary runs. Pure functions over plain data; the
//! server's reaper and gateway feed them the clock and presence.

use crate::{Lifecycle, ReleaseId};

/// Thresholds of the reaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Newest releases (besides the current) kept for rollback.
    pub keep_last: usize,
    /// A release drains at least this long before it may be retired.
    pub min_drain_secs: i64,
    /// ... and then once it has had no clients for this long.
    pub idle_secs: i64,
    /// Older than this, a draining release is retired whatever its clients.
    pub max_age_secs: i64,
}

/// One release as the reaper sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Its id.
    pub id: &'a ReleaseId,
    /// Registration order.
    pub seq: i64,
    /// Lifecycle state.
    pub state: Lifecycle,
    /// Unix seconds of registration.
    pub created_at: i64,
    /// When it last stopped being current.
    pub drained_at: Option<i64>,
    /// When a client of it was last seen (open stream counts as now).
    pub last_seen: Option<i64>,
    /// Clients now (open streams plus recent ids).
    pub live: usize,
}

/// Why a release is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Drained long enough and idle long enough.
    Drained,
    /// Past the maximum age.
    TooOld,
}

impl Reason {
    /// For history and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Drained => "drained: no clients",
            Reason::TooOld => "past the maximum age",
        }
    }
}

/// The releases to retire now. Never the current release, the canary, or
/// the `keep_last` newest releases that have drained (kept for rollback).
pub fn to_retire<'a>(
    releases: &[Candidate<'a>],
    current: Option<&ReleaseId>,
    canary: Option<&ReleaseId>,
    policy: Policy,
    now: i64,
) -> Vec<(&'a ReleaseId, Reason)> {
    let mut draining: Vec<&Candidate<'a>> = releases
        .iter()
        .filter(|r| r.state == Lifecycle::Draining)
        .filter(|r| Some(r.id) != current && Some(r.id) != canary)
        .collect();
    draining.sort_by_key(|r| std::cmp::Reverse(r.seq));
    draining
        .into_iter()
        .skip(policy.keep_last)
        .filter_map(|r| {
            if now - r.created_at >= policy.max_age_secs {
                return Some((r.id, Reason::TooOld));
            }
            let drained_at = r.drained_at.unwrap_or(r.created_at);
            if r.live > 0 || now - drained_at < policy.min_drain_secs {
                return None;
            }
            let quiet_since = r.last_seen.map_or(drained_at, |s| s.max(drained_at));
            (now - quiet_since >= policy.idle_secs).then_some((r.id, Reason::Drained))
        })
        .collect()
}

/// Which release's shell a navigation gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellChoice {
    /// The current release.
    Current,
    /// The canary.
    Canary,
}

/// Chooses the shell while a canary runs: a session already on the canary
/// (its pin cookie) stays on it, a session on the current release stays there,
/// and any other session (new, or upgrading from an older release) joins the
/// canary with probability `percent` %, decided by `roll` in `[0, 1)`.
pub fn choose_shell(
    pin: Option<&str>,
    current: Option<&ReleaseId>,
    canary: Option<(&ReleaseId, u8)>,
    roll: f64,
) -> ShellChoice {
    let Some((canary, percent)) = canary else {
        return ShellChoice::Current;
    };
    match pin {
        Some(p) if p == canary.as_str() => ShellChoice::Canary,
        Some(p) if current.is_some_and(|c| c.as_str() == p) => ShellChoice::Current,
        _ if roll * 100.0 < f64::from(percent) => ShellChoice::Canary,
        _ => ShellChoice::Current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    const POLICY: Policy = Policy {
        keep_last: 1,
        min_drain_secs: 100,
        idle_secs: 50,
        max_age_secs: 10_000,
    };

    #[test]
    fn retires_drained_idle_releases_beyond_the_kept_ones() {
        let ids: Vec<ReleaseId> = ["a", "b", "c", "d", "e"].iter().map(|s| id(s)).collect();
        let c = |i: usize, state, drained_at, last_seen, live| Candidate {
            id: &ids[i],
            seq: i as i64,
            state,
            created_at: 0,
            drained_at,
            last_seen,
            live,
        };
        let rs = vec![
            c(0, Lifecycle::Draining, Some(100), None, 0), // drained 900 s, never seen: retire
            c(1, Lifecycle::Draining, Some(100), Some(980), 0), // seen 20 s ago: keep
            c(2, Lifecycle::Draining, Some(950), None, 0), // drained 50 s only: keep
            c(3, Lifecycle::Draining, Some(100), None, 0), // newest draining: kept for rollback
            c(4, Lifecycle::Current, None, None, 3),
        ];
        let out = to_retire(&rs, Some(&ids[4]), None, POLICY, 1000);
        assert_eq!(out, vec![(&ids[0], Reason::Drained)]);
        // Live clients hold a release however long it drained.
        let mut live = rs.clone();
        live[0].live = 1;
        assert!(to_retire(&live, Some(&ids[4]), None, POLICY, 1000).is_empty());
        // The canary is never retired.
        assert!(to_retire(&rs, Some(&ids[4]), Some(&ids[0]), POLICY, 1000).is_empty());
        // Past the maximum age: retired even with clients, but not the kept one.
        let out = to_retire(&live, Some(&ids[4]), None, POLICY, 20_000);
        let retired: Vec<&str> = out.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(retired, vec!["c", "b", "a"]);
        assert!(out.iter().all(|(_, r)| *r == Reason::TooOld));
        // Keep none: the newest goes too.
        let none = Policy {
            keep_last: 0,
            ..POLICY
        };
        assert_eq!(to_retire(&rs, Some(&ids[4]), None, none, 1000).len(), 2);
    }

    #[test]
    fn canary_sessions_are_sticky() {
        let (cur, can) = (id("v1"), id("v2"));
        let canary = Some((&can, 30));
        assert_eq!(
            choose_shell(Some("v2"), Some(&cur), canary, 0.99),
            ShellChoice::Canary
        );
        assert_eq!(
            choose_shell(Some("v1"), Some(&cur), canary, 0.0),
            ShellChoice::Current
        );
        assert_eq!(
            choose_shell(None, Some(&cur), canary, 0.29),
            ShellChoice::Canary
        );
        assert_eq!(
            choose_shell(None, Some(&cur), canary, 0.30),
            ShellChoice::Current
        );
        assert_eq!(
            choose_shell(Some("v0"), Some(&cur), canary, 0.1),
            ShellChoice::Canary
        );
        assert_eq!(
            choose_shell(Some("v2"), Some(&cur), None, 0.0),
            ShellChoice::Current
        );
    }
}
