//! Garbage collection rules: which stored blobs no live release needs, and
//! which of those a deploy in flight may still count on.

use crate::Lifecycle;

/// One release's use of a blob, as the collector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Use {
    /// The release's lifecycle state.
    pub state: Lifecycle,
    /// Where the release's retirement stands in the state's change order
    /// (its history entry), if it was retired.
    pub retired_seq: Option<i64>,
}

/// A stored blob as the collector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// Unix seconds of the last touch (upload, reported present to a deploy,
    /// registration).
    pub at: i64,
    /// Where the last touch stands in the state's change order: the newest
    /// history entry committed when it happened.
    pub seq: i64,
}

/// Whether a stored blob may be deleted now.
///
/// A blob is kept while any release that is not collected uses it (with
/// `retired_counts_as_collected`, retired releases count as collected: the
/// plan of a gc that will collect them). Of the unused blobs:
///
/// - one that only collected releases used goes at once, unless a deploy
///   touched it after the last of them was retired (that deploy is about to
///   use it again); "after" is in the state's change order, not the clock's,
///   so a touch in the same second as the retirement is ordered exactly;
/// - any other goes once untouched for `grace_secs` (an upload whose deploy
///   has not registered yet, or a crash's leftover).
///
/// The state store evaluates this inside the transaction that marks the blob
/// `deleting`, and registration requires every blob of a release to be
/// present in its own transaction, so a registered release never misses a
/// blob however deploys and collections interleave.
pub fn deletable(
    touched: Touch,
    uses: &[Use],
    retired_counts_as_collected: bool,
    now: i64,
    grace_secs: i64,
) -> bool {
    let mut last_retired: Option<i64> = None;
    for u in uses {
        let dead = match u.state {
            Lifecycle::Collected => true,
            Lifecycle::Retired => retired_counts_as_collected,
            _ => false,
        };
        if !dead {
            return false;
        }
        // A collected release always went through retirement; without its
        // place in the order, count it as retired before anything else.
        let seq = u.retired_seq.unwrap_or(0);
        last_retired = Some(last_retired.map_or(seq, |l| l.max(seq)));
    }
    if now - touched.at >= grace_secs {
        return true;
    }
    last_retired.is_some_and(|retired| touched.seq < retired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle::*;

    fn used(state: Lifecycle) -> Use {
        Use {
            state,
            retired_seq: matches!(state, Retired | Collected).then_some(50),
        }
    }

    fn touched(at: i64, seq: i64) -> Touch {
        Touch { at, seq }
    }

    #[test]
    fn keeps_live_and_young_orphans() {
        // (blob, touched_at, uses)
        let blobs: Vec<(u8, i64, Vec<Use>)> = vec![
            (1, 0, vec![used(Current), used(Collected)]),
            (2, 990, vec![used(Collected)]),
            (3, 0, vec![used(Retired)]),
            (4, 995, vec![]),
            (6, 0, vec![]),
            (5, 0, vec![used(Draining)]),
        ];
        let doomed = |dry: bool| {
            blobs
                .iter()
                .filter(|(_, at, uses)| deletable(touched(*at, 10), uses, dry, 1000, 60))
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
        };
        // Shared blob 1 stays; collected-only 2 goes however young; retired 3
        // stays unless counted collected; young orphan 4 stays; old orphan 6 goes.
        assert_eq!(doomed(false), vec![2, 6]);
        assert_eq!(doomed(true), vec![2, 3, 6]);
    }

    #[test]
    fn a_deploy_that_touched_a_collected_blob_keeps_it() {
        let collected = [Use {
            state: Collected,
            retired_seq: Some(100),
        }];
        // Touched before the retirement was recorded: garbage, however
        // recently (the same second included).
        assert!(deletable(touched(200, 90), &collected, false, 200, 3600));
        assert!(deletable(touched(200, 99), &collected, false, 200, 3600));
        // Touched after it: a deploy counts on it, for the grace period.
        assert!(!deletable(touched(200, 100), &collected, false, 200, 3600));
        assert!(!deletable(touched(150, 120), &collected, false, 200, 3600));
        assert!(deletable(
            touched(150, 120),
            &collected,
            false,
            150 + 3600,
            3600
        ));
        // The latest retirement counts.
        let two = [
            collected[0],
            Use {
                state: Collected,
                retired_seq: Some(130),
            },
        ];
        assert!(deletable(touched(150, 120), &two, false, 200, 3600));
    }
}
