use std::{cell::RefCell, collections::HashSet, time::Duration};

use k8s_openapi::jiff::Timestamp;

use super::*;

const GB: i64 = 1_000_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("time")
}

fn image(id: &str, size: i64) -> Image {
    Image {
        id: id.into(),
        tags: vec![format!("{id}:1")],
        size,
    }
}

#[test]
fn thresholds_decide_whether_and_how_much_to_free() {
    let policy = Policy::default();
    // (capacity, available, wanted)
    let cases = [
        (100 * GB, 20 * GB, None),         // 80 % used: under 85 %
        (100 * GB, 16 * GB, None),         // 84 %
        (100 * GB, 15 * GB, Some(5 * GB)), // 85 %: down to 80 %
        (100 * GB, 2 * GB, Some(18 * GB)), // 98 %
        (0, 0, None),                      // no capacity: nothing to compute
    ];
    for (capacity, available, want) in cases {
        assert_eq!(
            policy.bytes_to_free(capacity, available),
            want,
            "{capacity} {available}"
        );
    }
    let off = Policy::new(100, 80, DEFAULT_MINIMUM_AGE).expect("valid");
    assert!(!off.enabled());
    assert_eq!(off.bytes_to_free(100 * GB, 0), None, "100 turns it off");
}

#[test]
fn thresholds_are_checked_as_the_kubelet_checks_them() {
    let new = |high, low| Policy::new(high, low, DEFAULT_MINIMUM_AGE).map_err(|e| e.to_string());
    assert_eq!(
        new(80, 85),
        Err("invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 85 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 80".into())
    );
    assert_eq!(
        new(101, 80),
        Err("invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) 101 must be between 0 and 100, inclusive".into())
    );
    assert_eq!(
        new(85, 101),
        Err("invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 101 must be between 0 and 100, inclusive".into())
    );
    assert_eq!(new(85, 80), Ok(Policy::default()));
    assert_eq!(
        new(85, 85),
        Err("invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 85 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 85".into())
    );
}

#[test]
fn unused_images_go_least_recently_used_first_and_young_or_pinned_ones_stay() {
    let mut tracker = Tracker::default();
    let all = [
        image("old", GB),
        image("recent", GB),
        image("busy", GB),
        image("pause", GB),
    ];
    // At 0 everything is seen; "recent" and "busy" are in use.
    let used: HashSet<String> = ["recent", "busy"].map(String::from).into();
    tracker.detect(&all, &used, at(0));
    tracker.claim(&all.iter().map(|i| i.id.clone()).collect());
    // At 60 "busy" is still used; "young" appears.
    let young = image("young", GB);
    let mut later = all.to_vec();
    later.push(young);
    let busy: HashSet<String> = ["busy".to_owned()].into();
    tracker.detect(&later, &busy, at(60));
    tracker.claim(&["young".to_owned()].into());
    let pinned: HashSet<String> = ["pause".to_owned()].into();
    let min_age = Duration::from_secs(120);

    // At 150 "young" (seen at 60) is too young; never used goes first, then by last use.
    let (chosen, freed) = tracker.choose(10 * GB, at(150), min_age, &pinned);
    assert_eq!(chosen, ["old", "recent", "busy"]);
    assert_eq!(freed, 3 * GB);
    // At 200 it is old enough, and never used: before the used ones, after "old" (seen first).
    let (chosen, _) = tracker.choose(10 * GB, at(200), min_age, &pinned);
    assert_eq!(chosen, ["old", "young", "recent", "busy"]);
    // Enough after the first one.
    let (chosen, freed) = tracker.choose(GB / 2, at(200), min_age, &pinned);
    assert_eq!((chosen, freed), (vec!["old".to_owned()], GB));
    // "busy" was used at 60: at 60 itself it is in use, so not eligible.
    let (chosen, _) = tracker.choose(10 * GB, at(60), Duration::ZERO, &pinned);
    assert!(!chosen.contains(&"busy".to_owned()));
    // A gone image is forgotten.
    tracker.detect(&[image("old", GB)], &HashSet::new(), at(300));
    let (chosen, _) = tracker.choose(10 * GB, at(400), min_age, &pinned);
    assert_eq!(chosen, ["old"]);
}

/// A runtime with images, users and a filesystem that fills and drains as images go.
struct Fake {
    images: RefCell<Vec<Image>>,
    in_use: HashSet<String>,
    capacity: i64,
    available: RefCell<i64>,
    refuse: HashSet<String>,
    removed: RefCell<Vec<String>>,
    /// Images this node's pods used (`None`: every image).
    used_by_pods: Option<HashSet<String>>,
}

impl ImageStore for Fake {
    async fn images(&self) -> Result<Vec<Image>, RuntimeError> {
        Ok(self.images.borrow().clone())
    }
    async fn in_use(&self) -> Result<HashSet<String>, RuntimeError> {
        Ok(self.in_use.clone())
    }
    async fn used_by_pods(&self) -> Result<HashSet<String>, RuntimeError> {
        let all = self.images.borrow().iter().map(|i| i.id.clone()).collect();
        Ok(self.used_by_pods.clone().unwrap_or(all))
    }
    async fn pinned(&self) -> HashSet<String> {
        ["pause".to_owned()].into()
    }
    async fn remove(&self, image: &Image) -> Result<(), RuntimeError> {
        if self.refuse.contains(&image.id) {
            return Err(RuntimeError::Engine(
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    message: "conflict: unable to remove repository reference".into(),
                },
            ));
        }
        self.images.borrow_mut().retain(|i| i.id != image.id);
        *self.available.borrow_mut() += image.size;
        self.removed.borrow_mut().push(image.id.clone());
        Ok(())
    }
    fn filesystem(&self) -> Option<(i64, i64)> {
        Some((self.capacity, *self.available.borrow()))
    }
}

fn fake(available: i64) -> Fake {
    Fake {
        images: RefCell::new(vec![
            image("a", 3 * GB),
            image("b", 4 * GB),
            image("c", 5 * GB),
            image("pause", GB),
            image("web", 2 * GB),
        ]),
        in_use: ["web".to_owned()].into(),
        capacity: 100 * GB,
        available: RefCell::new(available),
        refuse: HashSet::new(),
        removed: RefCell::new(Vec::new()),
        used_by_pods: None,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn a_pass_removes_unused_images_until_under_the_low_threshold() {
    let policy = Policy::default();
    // 90 % used: 10 GB to free to reach 80 %.
    let store = fake(10 * GB);
    let mut tracker = Tracker::default();
    // First pass: images are new, too young to go.
    let first = block_on(collect(&store, &mut tracker, &policy, at(0))).expect("pass");
    assert_eq!(first.wanted, 10 * GB);
    assert!(first.removed.is_empty());
    assert_eq!(
        first.failure().as_deref(),
        Some(
            "Failed to garbage collect required amount of images. Attempted to free 10000000000 bytes, but only found 0 bytes eligible to free."
        )
    );
    // Five minutes later: a, b, c (12 GB) are enough; the used and pinned ones stay.
    let second = block_on(collect(&store, &mut tracker, &policy, at(300))).expect("pass");
    assert_eq!(second.freed, 12 * GB);
    assert_eq!(second.failure(), None);
    let mut removed = store.removed.borrow().clone();
    removed.sort();
    assert_eq!(removed, ["a", "b", "c"]);
    let left: Vec<String> = store.images.borrow().iter().map(|i| i.id.clone()).collect();
    assert_eq!(left, ["pause", "web"]);
    // Now at 78 %: nothing more to do.
    let third = block_on(collect(&store, &mut tracker, &policy, at(600))).expect("pass");
    assert_eq!(third, Outcome::default());
}

#[test]
fn a_refused_removal_is_skipped_and_the_pass_goes_on() {
    let mut store = fake(10 * GB);
    store.refuse = ["a".to_owned()].into();
    let mut tracker = Tracker::default();
    let policy = Policy::default();
    block_on(collect(&store, &mut tracker, &policy, at(0))).expect("pass");
    let outcome = block_on(collect(&store, &mut tracker, &policy, at(300))).expect("pass");
    assert!(!outcome.removed.contains(&"a".to_owned()));
    assert_eq!(outcome.freed, 9 * GB, "b and c");
    assert!(outcome.failure().is_some(), "9 of 10 GB");
    // Below the high threshold nothing is touched, however old.
    let idle = fake(50 * GB);
    let mut tracker = Tracker::default();
    block_on(collect(&idle, &mut tracker, &policy, at(0))).expect("pass");
    let outcome = block_on(collect(&idle, &mut tracker, &policy, at(3600))).expect("pass");
    assert_eq!(outcome, Outcome::default());
    assert!(idle.removed.borrow().is_empty());
}

#[test]
fn images_no_pod_of_the_node_used_are_never_collected() {
    // The daemon is shared: "a" is someone else's, however old and unused.
    let mut store = fake(10 * GB);
    store.used_by_pods = Some(["b".to_owned(), "c".to_owned()].into());
    let mut tracker = Tracker::default();
    let policy = Policy::default();
    block_on(collect(&store, &mut tracker, &policy, at(0))).expect("pass");
    let outcome = block_on(collect(&store, &mut tracker, &policy, at(3600))).expect("pass");
    assert!(!outcome.removed.contains(&"a".to_owned()), "{outcome:?}");
    assert!(store.images.borrow().iter().any(|i| i.id == "a"));
}
