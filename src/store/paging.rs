//! Keyset pages: a list ordered by (time, id) goes on after the last row of
//! the previous page (its page token), so a page costs one index range scan
//! however deep it lies.

/// The rows after `after` (a `PageToken`) in newest-first order, by `time`
/// then `id` descending: older, or as old with a smaller id.
macro_rules! newest_first_after {
    ($time:expr, $id:expr, $after:expr) => {
        $time
            .lt($after.time)
            .or($time.eq($after.time).and($id.lt($after.id)))
    };
}

/// The rows after `after` (a `PageToken`) in oldest-first order, by `time`
/// then `id` ascending: newer, or as new with a larger id.
macro_rules! oldest_first_after {
    ($time:expr, $id:expr, $after:expr) => {
        $time
            .gt($after.time)
            .or($time.eq($after.time).and($id.gt($after.id)))
    };
}

pub(super) use {newest_first_after, oldest_first_after};
