//! Which back end answers an API call (resolution rule 3): the pinned
//! release's while it still has one that is up, else the current release's;
//! a release without a back end of its own uses the nearest older release's
//! that is up, else the server-wide default upstream.

/// Where an API call goes, among releases known by index (oldest first):
/// the pinned release's back end while it is served, else the current
/// release's; a release without a back end of its own uses the nearest
/// older served release's. `Some((release index, back end))`, or `None`
/// for the default upstream. `served` and `backend` are asked only about
/// the releases the decision reaches, so a caller builds no list of
/// releases per call.
pub fn route<B>(
    served: impl Fn(usize) -> bool,
    mut backend: impl FnMut(usize) -> Option<B>,
    pinned: Option<usize>,
    current: Option<usize>,
) -> Option<(usize, B)> {
    if let Some(found) = pinned
        .filter(|&p| served(p))
        .and_then(|p| backend_of(&served, &mut backend, p))
    {
        return Some(found);
    }
    current.and_then(|c| backend_of(&served, &mut backend, c))
}

/// The back end for the release at `index`: its own, else the nearest
/// older served release's.
fn backend_of<B>(
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

    /// One release: whether it is served, and its own back end.
    type Release = (bool, Option<&'static str>);

    /// [`route`] over `rs`, and the releases whose back end it asked for.
    fn route_in(
        rs: &[Release],
        pinned: Option<usize>,
        current: Option<usize>,
    ) -> (Option<(usize, &'static str)>, Vec<usize>) {
        let mut asked = Vec::new();
        let found = route(
            |i| rs[i].0,
            |i| {
                asked.push(i);
                rs[i].1
            },
            pinned,
            current,
        );
        (found, asked)
    }

    /// The rule written over the whole list at once, to check [`route`]
    /// against.
    fn reference(
        rs: &[Release],
        pinned: Option<usize>,
        current: Option<usize>,
    ) -> Option<(usize, &'static str)> {
        let backend_of = |index: usize| {
            rs[..=index]
                .iter()
                .enumerate()
                .rev()
                .filter(|(i, r)| *i == index || r.0)
                .find_map(|(i, r)| r.1.map(|b| (i, b)))
        };
        pinned
            .filter(|&p| rs[p].0)
            .and_then(backend_of)
            .or_else(|| current.and_then(backend_of))
    }

    #[test]
    fn pinned_then_current_then_older() {
        // v1 has api1, v2 has none, v3 has api3 (current), v4 retired with api4.
        let rs = [
            (true, Some("api1")),
            (true, None),
            (true, Some("api3")),
            (false, Some("api4")),
        ];
        let route = |pinned, current| route_in(&rs, pinned, current).0;
        assert_eq!(route(Some(0), Some(2)), Some((0, "api1")));
        // v2 has no back end: the nearest older one's.
        assert_eq!(route(Some(1), Some(2)), Some((0, "api1")));
        assert_eq!(route(None, Some(2)), Some((2, "api3")));
        // A retired pin counts as no pin.
        assert_eq!(route(Some(3), Some(2)), Some((2, "api3")));
        // No back end anywhere: the default upstream.
        let none = [(true, None), (true, None)];
        assert_eq!(route_in(&none, Some(0), Some(1)).0, None);
        // A retired older release lends no back end.
        let rs = [(false, Some("api1")), (true, None)];
        assert_eq!(route_in(&rs, None, Some(1)).0, None);
    }

    #[test]
    fn by_index_asks_only_about_the_releases_it_reaches() {
        let rs = [
            (true, Some("api1")),
            (true, None),
            (true, Some("api3")),
            (false, Some("api4")),
        ];
        for pinned in [None, Some(0), Some(1), Some(2), Some(3)] {
            for current in [None, Some(1), Some(2)] {
                let (by_index, asked) = route_in(&rs, pinned, current);
                let expected = reference(&rs, pinned, current);
                assert_eq!(by_index, expected, "pinned {pinned:?}, current {current:?}");
                // Never a release newer than both the pin and the current one.
                let newest = pinned.max(current);
                assert!(asked.iter().all(|&i| Some(i) <= newest), "{asked:?}");
            }
        }
        // Pinned to v3 (current), nothing older is looked at.
        let (found, asked) = route_in(&rs, Some(2), Some(2));
        assert_eq!(found, Some((2, "api3")));
        assert_eq!(asked, vec![2]);
    }
}
