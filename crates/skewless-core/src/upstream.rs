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
    backend_of_with(
        |i| releases[i].served,
        |i| releases[i].backend.as_ref(),
        index,
    )
}

/// Where an API call goes: `Some((release index, back end))` or `None` for
/// the default upstream. `pinned` and `current` index into `releases`.
pub fn route<B>(
    releases: &[Candidate<B>],
    pinned: Option<usize>,
    current: Option<usize>,
) -> Option<(usize, &B)> {
    route_with(
        |i| releases[i].served,
        |i| releases[i].backend.as_ref(),
        pinned,
        current,
    )
}

/// [`route`] over releases known by index (oldest first) instead of as
/// [`Candidate`]s: `served` and `backend` are asked only about the releases
/// the decision reaches, so a caller builds no candidate list per call.
pub fn route_with<B>(
    served: impl Fn(usize) -> bool,
    mut backend: impl FnMut(usize) -> Option<B>,
    pinned: Option<usize>,
    current: Option<usize>,
) -> Option<(usize, B)> {
    if let Some(found) = pinned
        .filter(|&p| served(p))
        .and_then(|p| backend_of_with(&served, &mut backend, p))
    {
        return Some(found);
    }
    current.and_then(|c| backend_of_with(&served, &mut backend, c))
}

/// [`backend_of`] over releases known by index.
fn backend_of_with<B>(
    served: impl Fn(usize) -> bool,
    mut backend: impl FnMut(usize) -> Option<B>,
    index: usize,
) -> Option<(usize, B)> {
    (0..=index)
        .rev()
        .filter(|&i| i == index || served(i))
        .find_map(|i| backend(i).map(|b| (i, b)))
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

    #[test]
    fn by_index_asks_only_about_the_releases_it_reaches() {
        let rs = [
            c(1, true, Some("api1")),
            c(2, true, None),
            c(3, true, Some("api3")),
            c(4, false, Some("api4")),
        ];
        for pinned in [None, Some(0), Some(1), Some(2), Some(3)] {
            for current in [None, Some(1), Some(2)] {
                let mut asked = Vec::new();
                let by_index = route_with(
                    |i| rs[i].served,
                    |i| {
                        asked.push(i);
                        rs[i].backend
                    },
                    pinned,
                    current,
                );
                let expected = route(&rs, pinned, current).map(|(i, b)| (i, *b));
                assert_eq!(by_index, expected, "pinned {pinned:?}, current {current:?}");
                // Never a release newer than both the pin and the current one.
                let newest = pinned.max(current);
                assert!(asked.iter().all(|&i| Some(i) <= newest), "{asked:?}");
            }
        }
        // Pinned to v3 (current), nothing older is looked at.
        let mut asked = Vec::new();
        let found = route_with(
            |i| rs[i].served,
            |i| {
                asked.push(i);
                rs[i].backend
            },
            Some(2),
            Some(2),
        );
        assert_eq!(found, Some((2, "api3")));
        assert_eq!(asked, vec![2]);
    }
}
