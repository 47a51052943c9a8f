//! Unit and property tests of the pointer rules.

use proptest::prelude::*;

use super::*;
use Lifecycle::*;

fn id(s: &str) -> ReleaseId {
    ReleaseId::parse(s).unwrap()
}

fn uploaded(name: &str, seq: i64) -> Standing {
    Standing {
        id: id(name),
        seq,
        state: Uploaded,
        promoted_at: None,
        drained_at: None,
        retired_at: None,
        rollback_to: None,
    }
}

/// Pointer and releases with the decisions applied, as an adapter stores them.
#[derive(Debug, Clone)]
struct World {
    pointer: Pointer,
    releases: Vec<Standing>,
}

impl World {
    fn new(names: &[&str]) -> World {
        World {
            pointer: Pointer::empty(),
            releases: names
                .iter()
                .enumerate()
                .map(|(i, n)| uploaded(n, i as i64 + 1))
                .collect(),
        }
    }

    fn apply(&mut self, op: Operation, at: i64) -> Result<Decision, CoreError> {
        let d = decide(&self.pointer, &self.releases, &op, at)?;
        self.pointer = d.pointer.clone();
        for c in &d.changed {
            let slot = self.releases.iter_mut().find(|r| r.id == c.id).unwrap();
            *slot = c.clone();
        }
        Ok(d)
    }

    fn ok(&mut self, op: Operation, at: i64) -> Decision {
        self.apply(op, at).unwrap()
    }

    fn state(&self, name: &str) -> Lifecycle {
        self.get(name).state
    }

    fn get(&self, name: &str) -> &Standing {
        self.releases
            .iter()
            .find(|r| r.id.as_str() == name)
            .unwrap()
    }
}

fn promote(name: &str) -> Operation {
    Operation::Promote {
        release: id(name),
        required: false,
    }
}

#[test]
fn promote_drains_the_old_current_and_records_it() {
    let mut w = World::new(&["a", "b"]);
    let d = w.ok(promote("a"), 10);
    assert_eq!(d.pointer.current, Some(id("a")));
    assert_eq!(d.pointer.generation, 1);
    assert_eq!(d.history[0].action, Action::Promote);
    assert_eq!(d.history[0].before, None);
    let d = w.ok(
        Operation::Promote {
            release: id("b"),
            required: true,
        },
        20,
    );
    assert_eq!(d.pointer.required_min, Some(id("b")));
    assert_eq!(d.pointer.generation, 2);
    assert_eq!((w.state("a"), w.get("a").drained_at), (Draining, Some(20)));
    assert_eq!((w.state("b"), w.get("b").promoted_at), (Current, Some(20)));
    assert_eq!(w.get("b").rollback_to, Some(id("a")));
    assert_eq!(d.history[0].before.as_deref(), Some("a"));
    assert_eq!(d.history[0].detail.as_deref(), Some("required"));
}

#[test]
fn promoting_the_current_release_again_keeps_the_rollback_target() {
    let mut w = World::new(&["a", "b"]);
    w.ok(promote("a"), 1);
    w.ok(promote("b"), 2);
    let d = w.ok(promote("b"), 3);
    assert_eq!(d.pointer.generation, 3);
    assert_eq!(w.state("a"), Draining);
    assert_eq!(w.ok(Operation::Rollback, 4).pointer.current, Some(id("a")));
}

#[test]
fn unknown_and_retired_releases_are_refused() {
    let mut w = World::new(&["a", "b"]);
    assert_eq!(
        w.apply(promote("zz"), 1).unwrap_err().to_string(),
        "release zz does not exist"
    );
    w.ok(promote("a"), 1);
    w.ok(Operation::Retire { release: id("b") }, 2);
    assert!(matches!(
        w.apply(promote("b"), 3),
        Err(CoreError::Transition { .. })
    ));
    assert_eq!(w.pointer.current, Some(id("a")));
}

#[test]
fn rollback_walks_back_through_promotions_and_drops_a_newer_requirement() {
    let mut w = World::new(&["v1", "v2", "v3"]);
    assert_eq!(
        w.apply(Operation::Rollback, 1).unwrap_err(),
        CoreError::NoRollback("no release is current".into())
    );
    w.ok(promote("v1"), 1);
    assert_eq!(
        w.apply(Operation::Rollback, 2).unwrap_err().to_string(),
        "nothing to roll back to: v1 was the first release made current"
    );
    w.ok(promote("v2"), 2);
    w.ok(
        Operation::Promote {
            release: id("v3"),
            required: true,
        },
        3,
    );
    let d = w.ok(Operation::Rollback, 4);
    assert_eq!(
        (
            d.pointer.current.clone(),
            d.pointer.generation,
            d.pointer.required_min
        ),
        (Some(id("v2")), 4, None)
    );
    assert_eq!(d.history[0].action, Action::Rollback);
    assert_eq!(d.history[0].before.as_deref(), Some("v3"));
    assert_eq!(w.state("v3"), Draining);
    let d = w.ok(Operation::Rollback, 5);
    assert_eq!(d.pointer.current, Some(id("v1")));
}

#[test]
fn rollback_keeps_an_older_requirement_and_refuses_a_retired_target() {
    let mut w = World::new(&["a", "b", "c"]);
    w.ok(
        Operation::Promote {
            release: id("a"),
            required: true,
        },
        1,
    );
    w.ok(promote("b"), 2);
    let d = w.ok(Operation::Rollback, 3);
    assert_eq!(d.pointer.required_min, Some(id("a")));
    w.ok(promote("c"), 4);
    w.ok(Operation::Retire { release: id("a") }, 5);
    assert_eq!(
        w.apply(Operation::Rollback, 6).unwrap_err().to_string(),
        "nothing to roll back to: the previous release a is retired"
    );
}

#[test]
fn canary_rules() {
    let mut w = World::new(&["c1", "c2", "c3"]);
    w.ok(promote("c1"), 10);
    let canary = |name: &str, percent| Operation::Canary {
        release: id(name),
        percent,
    };
    assert_eq!(
        w.apply(canary("c1", 30), 11).unwrap_err().to_string(),
        "release c1 is already current"
    );
    assert!(matches!(
        w.apply(canary("c2", 100), 11),
        Err(CoreError::Refused(_))
    ));
    assert!(matches!(
        w.apply(canary("c2", 0), 11),
        Err(CoreError::Refused(_))
    ));
    assert_eq!(
        w.apply(Operation::CanaryAbort, 11).unwrap_err().to_string(),
        "there is no canary to abort"
    );
    let d = w.ok(canary("c2", 30), 12);
    assert_eq!(
        (
            d.pointer.canary.clone(),
            d.pointer.canary_percent,
            d.pointer.generation
        ),
        (Some(id("c2")), 30, 1)
    );
    assert_eq!(d.history[0].after.as_deref(), Some("c2 at 30%"));
    assert_eq!(
        w.apply(Operation::Retire { release: id("c2") }, 13)
            .unwrap_err()
            .to_string(),
        "release c2 is the canary; abort the canary first"
    );
    // Promoting the canary ends it; the old current drains from then.
    let d = w.ok(promote("c2"), 14);
    assert_eq!((d.pointer.canary, d.pointer.canary_percent), (None, 0));
    assert_eq!(
        (w.state("c1"), w.get("c1").drained_at),
        (Draining, Some(14))
    );
    assert_eq!(w.get("c2").drained_at, None);
    w.ok(canary("c3", 10), 15);
    let d = w.ok(Operation::CanaryAbort, 16);
    assert_eq!(d.pointer.canary, None);
    assert_eq!(d.history[0].action, Action::CanaryAbort);
    assert_eq!(d.history[0].release.as_deref(), Some("c3"));
    assert_eq!(d.history[0].before.as_deref(), Some("c3 at 10%"));
    w.ok(Operation::Retire { release: id("c3") }, 17);
    assert_eq!(
        w.apply(canary("c3", 10), 18).unwrap_err().to_string(),
        "release c3 is retired"
    );
}

#[test]
fn require_sets_and_clears_the_minimum() {
    let mut w = World::new(&["a", "b"]);
    w.ok(promote("a"), 1);
    let d = w.ok(
        Operation::Require {
            release: Some(id("a")),
        },
        2,
    );
    assert_eq!(
        (d.pointer.required_min, d.pointer.generation),
        (Some(id("a")), 2)
    );
    assert!(matches!(
        w.apply(
            Operation::Require {
                release: Some(id("zz"))
            },
            3
        ),
        Err(CoreError::UnknownRelease(_))
    ));
    w.ok(Operation::Retire { release: id("b") }, 3);
    assert!(matches!(
        w.apply(
            Operation::Require {
                release: Some(id("b"))
            },
            3
        ),
        Err(CoreError::Refused(_))
    ));
    let d = w.ok(Operation::Require { release: None }, 4);
    assert_eq!(d.pointer.required_min, None);
    assert_eq!(d.history[0].before.as_deref(), Some("a"));
}

#[test]
fn retire_and_collect() {
    let mut w = World::new(&["a", "b", "c"]);
    w.ok(promote("a"), 1);
    assert_eq!(
        w.apply(Operation::Retire { release: id("a") }, 2)
            .unwrap_err()
            .to_string(),
        "release a is current and cannot be retired"
    );
    let d = w.ok(Operation::Retire { release: id("c") }, 3);
    assert_eq!(d.history[0].after.as_deref(), Some("retired"));
    assert_eq!(w.get("c").retired_at, Some(3));
    // Retiring again changes nothing and records nothing.
    let d = w.ok(Operation::Retire { release: id("c") }, 4);
    assert!(d.changed.is_empty() && d.history.is_empty());
    w.ok(Operation::Retire { release: id("b") }, 5);
    let d = w.ok(Operation::Collect, 6);
    assert_eq!(d.collected(), vec![id("b"), id("c")]);
    assert_eq!(d.history.len(), 2);
    assert!(d.history.iter().all(|n| n.action == Action::Collect));
    assert!(w.ok(Operation::Collect, 7).collected().is_empty());
    assert!(matches!(
        w.apply(Operation::Retire { release: id("b") }, 8),
        Err(CoreError::Transition { .. })
    ));
}

#[test]
fn action_names_round_trip() {
    for a in Action::ALL {
        assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{}\"", a.as_str()));
    }
    assert!("promoted".parse::<Action>().is_err());
}

const NAMES: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];

fn operation() -> impl Strategy<Value = Operation> {
    let name = (0..NAMES.len()).prop_map(|i| id(NAMES[i]));
    prop_oneof![
        4 => (name.clone(), any::<bool>())
            .prop_map(|(release, required)| Operation::Promote { release, required }),
        3 => Just(Operation::Rollback),
        2 => (name.clone(), 0u8..=100).prop_map(|(release, percent)| Operation::Canary { release, percent }),
        1 => Just(Operation::CanaryAbort),
        1 => proptest::option::of(name.clone()).prop_map(|release| Operation::Require { release }),
        2 => name.prop_map(|release| Operation::Retire { release }),
        1 => Just(Operation::Collect),
    ]
}

fn check_invariants(w: &World) -> Result<(), TestCaseError> {
    let currents: Vec<&Standing> = w.releases.iter().filter(|r| r.state == Current).collect();
    match &w.pointer.current {
        Some(c) => {
            // The current release is always served, and the only current one.
            prop_assert_eq!(currents.len(), 1);
            prop_assert_eq!(&currents[0].id, c);
            prop_assert!(currents[0].state.is_served());
        }
        None => prop_assert!(currents.is_empty()),
    }
    if let Some(canary) = &w.pointer.canary {
        // A canary is never current, and always served.
        prop_assert!(Some(canary) != w.pointer.current.as_ref());
        prop_assert!(w.get(canary.as_str()).state.is_served());
        prop_assert!((1..=99).contains(&w.pointer.canary_percent));
    } else {
        prop_assert_eq!(w.pointer.canary_percent, 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_operation_sequences_keep_the_invariants(ops in proptest::collection::vec(operation(), 1..40)) {
        let mut w = World::new(&NAMES);
        for (at, op) in ops.into_iter().enumerate() {
            let at = at as i64 + 1;
            let before = w.clone();
            match w.apply(op.clone(), at) {
                Ok(d) => {
                    // The generation never goes backwards.
                    prop_assert!(d.pointer.generation >= before.pointer.generation);
                    // Every change is recorded, and nothing is recorded without one.
                    prop_assert_eq!(d.history.is_empty(), d.pointer == before.pointer && d.changed.is_empty());
                    if let Operation::Promote { release, .. } = &op {
                        prop_assert_eq!(w.pointer.current.as_ref(), Some(release));
                        // Rollback after promote returns to the previous current.
                        if let Some(prev) = before.pointer.current.as_ref().filter(|p| *p != release) {
                            let mut back = w.clone();
                            let d = back.apply(Operation::Rollback, at);
                            prop_assert!(d.is_ok(), "rollback after promote refused: {:?}", d);
                            prop_assert_eq!(back.pointer.current.as_ref(), Some(prev));
                            check_invariants(&back)?;
                        }
                    }
                }
                Err(_) => {
                    // A refusal changes nothing.
                    prop_assert_eq!(&w.pointer, &before.pointer);
                    prop_assert_eq!(&w.releases, &before.releases);
                }
            }
            check_invariants(&w)?;
        }
    }
}
