//! The pointer rules: what promote, rollback, canary, require, retire and
//! collect change. [`decide`] takes the current pointer and the standing of
//! every release and returns the new pointer, the releases whose standing
//! changed and the history entries to append, or a refusal. A state adapter
//! loads its inputs and stores its outcome in one transaction, so every
//! adapter stores the same decisions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{CoreError, Lifecycle, ReleaseId};

/// The current pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The release new page loads get.
    pub current: Option<ReleaseId>,
    /// Bumped by every promote, rollback and change of the required minimum.
    pub generation: u64,
    /// Clients of releases older than this one must upgrade now.
    pub required_min: Option<ReleaseId>,
    /// Unix seconds of the last change.
    pub changed_at: i64,
    /// The canary release, if one is running.
    pub canary: Option<ReleaseId>,
    /// Share of new sessions the canary gets, 1 to 99 (0 without canary).
    pub canary_percent: u8,
}

impl Pointer {
    /// The pointer of a fresh installation: nothing current.
    pub fn empty() -> Self {
        Pointer {
            current: None,
            generation: 0,
            required_min: None,
            changed_at: 0,
            canary: None,
            canary_percent: 0,
        }
    }
}

/// The part of a release the pointer rules read and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Its id.
    pub id: ReleaseId,
    /// Registration order: larger is newer.
    pub seq: i64,
    /// Lifecycle state.
    pub state: Lifecycle,
    /// Unix seconds of its last promotion.
    pub promoted_at: Option<i64>,
    /// Unix seconds when it last stopped being current.
    pub drained_at: Option<i64>,
    /// Unix seconds of retirement.
    pub retired_at: Option<i64>,
    /// The release that was current when this one was last promoted: where a
    /// rollback from this release goes.
    pub rollback_to: Option<ReleaseId>,
}

/// Every kind of entry in the change history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A release was registered.
    Deploy,
    /// A release was made current.
    Promote,
    /// The previous current release was made current again.
    Rollback,
    /// A release was given to a share of new sessions.
    Canary,
    /// The canary was ended.
    CanaryAbort,
    /// The required minimum release was set or cleared.
    Require,
    /// A release stopped being served.
    Retire,
    /// A retired release was marked collected.
    Collect,
    /// Unreferenced blobs were deleted.
    Gc,
    /// `fsck --repair` mended what it could.
    FsckRepair,
}

impl Action {
    /// Every action, for parsing and tests.
    pub const ALL: [Action; 10] = [
        Action::Deploy,
        Action::Promote,
        Action::Rollback,
        Action::Canary,
        Action::CanaryAbort,
        Action::Require,
        Action::Retire,
        Action::Collect,
        Action::Gc,
        Action::FsckRepair,
    ];

    /// The action's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Promote => "promote",
            Action::Rollback => "rollback",
            Action::Canary => "canary",
            Action::CanaryAbort => "canary-abort",
            Action::Require => "require",
            Action::Retire => "retire",
            Action::Collect => "collect",
            Action::Gc => "gc",
            Action::FsckRepair => "fsck-repair",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown history action {s:?}"))
    }
}

impl PartialEq<&str> for Action {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One entry of the change history, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Order of the entry (0 when not yet stored).
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// What happened.
    pub action: Action,
    /// The release acted on.
    pub release: Option<String>,
    /// The current release before the action (or the prior state).
    pub before: Option<String>,
    /// The current release after the action (or the new state).
    pub after: Option<String>,
    /// Name of the admin token that acted.
    pub actor: String,
    /// Free text, e.g. bytes freed by gc.
    pub detail: Option<String>,
}

/// A change asked of the pointer rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Make `release` current; with `required`, older clients must upgrade now.
    Promote { release: ReleaseId, required: bool },
    /// Make the release current that was current before the current one.
    Rollback,
    /// Give `release` to `percent` % of new sessions.
    Canary { release: ReleaseId, percent: u8 },
    /// End the canary.
    CanaryAbort,
    /// Set (or clear) the release every client must run at least.
    Require { release: Option<ReleaseId> },
    /// Stop serving `release`.
    Retire { release: ReleaseId },
    /// Mark every retired release collected.
    Collect,
}

/// One history entry the decision adds (the adapter adds time and actor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What happened.
    pub action: Action,
    /// The release acted on.
    pub release: Option<String>,
    /// Before: the current release, or the prior state.
    pub before: Option<String>,
    /// After: the current release, or the new state.
    pub after: Option<String>,
    /// Free text.
    pub detail: Option<String>,
}

/// The outcome of an allowed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The pointer afterwards (unchanged when the operation changed nothing).
    pub pointer: Pointer,
    /// The releases whose standing changed, with their new standing.
    pub changed: Vec<Standing>,
    /// History entries to append, in order.
    pub history: Vec<Note>,
}

impl Decision {
    /// The releases this decision marks collected.
    pub fn collected(&self) -> Vec<ReleaseId> {
        self.changed
            .iter()
            .filter(|s| s.state == Lifecycle::Collected)
            .map(|s| s.id.clone())
            .collect()
    }
}

/// Decides `op` at time `at` over the pointer and the standing of every
/// release.
pub fn decide(
    pointer: &Pointer,
    releases: &[Standing],
    op: &Operation,
    at: i64,
) -> Result<Decision, CoreError> {
    let mut d = Draft {
        pointer: pointer.clone(),
        releases,
        changed: Vec::new(),
        history: Vec::new(),
    };
    match op {
        Operation::Promote { release, required } => d.promote(release, *required, at)?,
        Operation::Rollback => d.rollback(at)?,
        Operation::Canary { release, percent } => d.canary(release, *percent, at)?,
        Operation::CanaryAbort => d.canary_abort(at)?,
        Operation::Require { release } => d.require(release.as_ref(), at)?,
        Operation::Retire { release } => d.retire(release, at)?,
        Operation::Collect => d.collect(),
    }
    Ok(Decision {
        pointer: d.pointer,
        changed: d.changed,
        history: d.history,
    })
}

/// A decision being built.
struct Draft<'a> {
    pointer: Pointer,
    releases: &'a [Standing],
    changed: Vec<Standing>,
    history: Vec<Note>,
}

fn canary_text(canary: &Option<ReleaseId>, percent: u8) -> Option<String> {
    canary.as_ref().map(|c| format!("{c} at {percent}%"))
}

impl Draft<'_> {
    /// The standing of `id` as changed so far.
    fn get(&self, id: &ReleaseId) -> Result<Standing, CoreError> {
        self.changed
            .iter()
            .find(|s| &s.id == id)
            .or_else(|| self.releases.iter().find(|s| &s.id == id))
            .cloned()
            .ok_or_else(|| CoreError::UnknownRelease(id.to_string()))
    }

    fn put(&mut self, s: Standing) {
        match self.changed.iter_mut().find(|c| c.id == s.id) {
            Some(c) => *c = s,
            None => self.changed.push(s),
        }
    }

    fn note(
        &mut self,
        action: Action,
        release: Option<String>,
        before: Option<String>,
    ) -> &mut Note {
        self.history.push(Note {
            action,
            release,
            before,
            after: None,
            detail: None,
        });
        // Just pushed.
        let last = self.history.len() - 1;
        &mut self.history[last]
    }

    /// Makes `target` current: the old current drains, the target's drain
    /// ends, a canary that is the target ends, the generation grows by one.
    fn switch_current(
        &mut self,
        mut target: Standing,
        required_min: Option<ReleaseId>,
        at: i64,
    ) -> Result<(), CoreError> {
        let next = target.state.promote(target.id.as_str())?;
        if let Some(old) = self.pointer.current.clone() {
            if old != target.id {
                let mut old = self.get(&old)?;
                old.state = old.state.demote();
                old.drained_at = Some(at);
                self.put(old);
            }
        }
        target.state = next;
        target.promoted_at = Some(at);
        target.drained_at = None;
        if self.pointer.canary.as_ref() == Some(&target.id) {
            self.pointer.canary = None;
            self.pointer.canary_percent = 0;
        }
        self.pointer.current = Some(target.id.clone());
        self.pointer.generation += 1;
        self.pointer.required_min = required_min;
        self.pointer.changed_at = at;
        self.put(target);
        Ok(())
    }

    fn promote(&mut self, id: &ReleaseId, required: bool, at: i64) -> Result<(), CoreError> {
        let mut target = self.get(id)?;
        let before = self.pointer.current.clone();
        // Promoting the current release again keeps where a rollback goes.
        if before.as_ref() != Some(id) {
            target.rollback_to = before.clone();
        }
        let required_min = if required {
            Some(id.clone())
        } else {
            self.pointer.required_min.clone()
        };
        self.switch_current(target, required_min, at)?;
        let n = self.note(
            Action::Promote,
            Some(id.to_string()),
            before.map(|c| c.to_string()),
        );
        n.after = Some(id.to_string());
        n.detail = required.then(|| "required".to_owned());
        Ok(())
    }

    fn rollback(&mut self, at: i64) -> Result<(), CoreError> {
        let Some(current) = self.pointer.current.clone() else {
            return Err(CoreError::NoRollback("no release is current".into()));
        };
        let Some(previous) = self.get(&current)?.rollback_to else {
            return Err(CoreError::NoRollback(format!(
                "{current} was the first release made current"
            )));
        };
        let target = self.get(&previous)?;
        if !target.state.is_served() {
            return Err(CoreError::NoRollback(format!(
                "the previous release {previous} is {}",
                target.state
            )));
        }
        // A requirement newer than the release rolled back to would order
        // its own clients to upgrade to nothing.
        let required_min = match &self.pointer.required_min {
            Some(min) if self.get(min).map_or(i64::MAX, |m| m.seq) > target.seq => None,
            other => other.clone(),
        };
        self.switch_current(target, required_min, at)?;
        let n = self.note(
            Action::Rollback,
            Some(previous.to_string()),
            Some(current.to_string()),
        );
        n.after = Some(previous.to_string());
        Ok(())
    }

    fn canary(&mut self, id: &ReleaseId, percent: u8, at: i64) -> Result<(), CoreError> {
        let rec = self.get(id)?;
        if !rec.state.is_served() {
            return Err(CoreError::Refused(format!("release {id} is {}", rec.state)));
        }
        if self.pointer.current.as_ref() == Some(id) {
            return Err(CoreError::Refused(format!(
                "release {id} is already current"
            )));
        }
        if !(1..=99).contains(&percent) {
            return Err(CoreError::Refused(
                "a canary share must be 1 to 99 percent".into(),
            ));
        }
        let before = canary_text(&self.pointer.canary, self.pointer.canary_percent);
        self.pointer.canary = Some(id.clone());
        self.pointer.canary_percent = percent;
        self.pointer.changed_at = at;
        let n = self.note(Action::Canary, Some(id.to_string()), before);
        n.after = canary_text(&Some(id.clone()), percent);
        Ok(())
    }

    fn canary_abort(&mut self, at: i64) -> Result<(), CoreError> {
        let Some(canary) = self.pointer.canary.take() else {
            return Err(CoreError::Refused("there is no canary to abort".into()));
        };
        let before = canary_text(&Some(canary.clone()), self.pointer.canary_percent);
        self.pointer.canary_percent = 0;
        self.pointer.changed_at = at;
        self.note(Action::CanaryAbort, Some(canary.to_string()), before);
        Ok(())
    }

    fn require(&mut self, id: Option<&ReleaseId>, at: i64) -> Result<(), CoreError> {
        if let Some(id) = id {
            let rec = self.get(id)?;
            if !rec.state.is_served() {
                return Err(CoreError::Refused(format!("release {id} is {}", rec.state)));
            }
        }
        let before = self.pointer.required_min.take();
        self.pointer.required_min = id.cloned();
        self.pointer.generation += 1;
        self.pointer.changed_at = at;
        let n = self.note(
            Action::Require,
            id.map(|i| i.to_string()),
            before.map(|b| b.to_string()),
        );
        n.after = id.map(|i| i.to_string());
        Ok(())
    }

    fn retire(&mut self, id: &ReleaseId, at: i64) -> Result<(), CoreError> {
        let mut rec = self.get(id)?;
        if self.pointer.canary.as_ref() == Some(id) {
            return Err(CoreError::Refused(format!(
                "release {id} is the canary; abort the canary first"
            )));
        }
        let next = rec.state.retire(id.as_str())?;
        if rec.state == next {
            return Ok(());
        }
        let before = rec.state;
        rec.state = next;
        rec.retired_at = Some(at);
        self.put(rec);
        let n = self.note(
            Action::Retire,
            Some(id.to_string()),
            Some(before.as_str().into()),
        );
        n.after = Some(next.as_str().into());
        Ok(())
    }

    fn collect(&mut self) {
        let mut retired: Vec<&Standing> = self
            .releases
            .iter()
            .filter(|s| s.state == Lifecycle::Retired)
            .collect();
        retired.sort_by_key(|s| s.seq);
        for s in retired {
            let mut s = s.clone();
            s.state = Lifecycle::Collected;
            let id = s.id.to_string();
            self.put(s);
            let n = self.note(Action::Collect, Some(id), Some("retired".into()));
            n.after = Some("collected".into());
        }
    }
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
