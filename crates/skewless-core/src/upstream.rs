//! Which back end answers an API call (resolution rule 3): the pinned
//! release's while it still has one that is up, else the current release's;
//! a release without a back end of its own uses the nearest older release's
//! that is up, else the server-wide default upstream.

/// One release as the API router sees it.
#[derive(Debug, Clone)]
pub struct Candidate<B> {
    /// Registration order: larger is newer.
    pub seq: i64,
    /// Whether the release is served (not retired or collected).
    pub served: bool,
    /// Its own back end, if bound and up.
    pub backend: Option<B>,
}

/// The back end for a release: its own, else the nearest older served
/// release's. `releases` must be sorted by `seq`, oldest first.
pub fn backend_of<B>(releases: &[Candidate<B>], index: usize) -> Option<(usize, &B)> {
    releases[..=index]
        .iter()
        .enumerate()
        .rev()
        .filter(|(i, r)| *i == index || r.served)
        .find_map(|(i, r)| r.backend.as_ref().map(|b| (i, b)))
}

/// Where an API call goes: `Some((release index, back end))` or `None` for
/// the default upstream. `pinned` and `current` index into `releases`.
pub fn route<B>(
    releases: &[Candidate<B>],
    pinned: Option<usize>,
    current: Option<usize>,
) -> Option<(usize, &B)> {
    pinned
        .filter(|&p| releases[p].served)
        .and_then(|p| backend_of(releases, p))
        .or_else(|| current.and_then(|c| backend_of(releases, c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(seq: i64, served: bool, backend: Option<&'static str>) -> Candidate<&'static str> {
        Candidate {
            seq,
            served,
            backend,
        }
    }

    #[test]
    fn pinned_then_current_then_older() {
        // v1 has api1, v2 has none, v3 has api3 (current), v4 retired with api4.
        let rs = [
            c(1, true, Some("api1")),
            c(2, true, None),
            c(3, true, Some("api3")),
            c(4, false, Some("api4")),
        ];
        assert_eq!(route(&rs, Some(0), Some(2)), Some((0, &"api1")));
        // v2 has no back end: the nearest older one's.
        assert_eq!(route(&rs, Some(1), Some(2)), Some((0, &"api1")));
        assert_eq!(route(&rs, None, Some(2)), Some((2, &"api3")));
        // A retired pin counts as no pin.
        assert_eq!(route(&rs, Some(3), Some(2)), Some((2, &"api3")));
        // No back end anywhere: the default upstream.
        let none = [c(1, true, None), c(2, true, None)];
        assert_eq!(route(&none, Some(0), Some(1)), None);
        // A retired older release lends no back end.
        let rs = [c(1, false, Some("api1")), c(2, true, None)];
        assert_eq!(route(&rs, None, Some(1)), None);
    }
}
