//! The retry queue: rows waiting for their next attempt (a back-off, an order
//! still processing, a refreshed token), ordered by when they are due. A
//! parked row holds no worker, so `--concurrency` bounds requests in flight
//! only and a few slow orders never hold up the rest.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::Instant;

struct Parked<T> {
    due: Instant,
    /// Ties are taken in the order they were parked.
    seq: u64,
    item: T,
}

impl<T> PartialEq for Parked<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<T> Eq for Parked<T> {}
impl<T> PartialOrd for Parked<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Parked<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

struct Inner<T> {
    heap: BinaryHeap<Reverse<Parked<T>>>,
    seq: u64,
}

/// Rows parked until a moment; shared by every worker.
pub struct RetryQueue<T> {
    inner: Mutex<Inner<T>>,
}

impl<T> Default for RetryQueue<T> {
    fn default() -> Self {
        RetryQueue { inner: Mutex::new(Inner { heap: BinaryHeap::new(), seq: 0 }) }
    }
}

impl<T> RetryQueue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks `item` until `due`.
    pub fn park(&self, item: T, due: Instant) {
        let mut q = self.lock();
        q.seq += 1;
        let seq = q.seq;
        q.heap.push(Reverse(Parked { due, seq, item }));
    }

    /// The earliest item that is due at `now`.
    pub fn take_due(&self, now: Instant) -> Option<T> {
        let mut q = self.lock();
        if q.heap.peek().is_some_and(|Reverse(p)| p.due <= now) {
            q.heap.pop().map(|Reverse(p)| p.item)
        } else {
            None
        }
    }

    /// Any item, due or not (to settle parked rows when the run stops).
    pub fn take_any(&self) -> Option<T> {
        self.lock().heap.pop().map(|Reverse(p)| p.item)
    }

    /// When the earliest item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().heap.peek().map(|Reverse(p)| p.due)
    }

    pub fn len(&self) -> usize {
        self.lock().heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_come_out_when_due_earliest_first_ties_in_order() {
        let q = RetryQueue::default();
        let t = Instant::now();
        q.park("late", t + Duration::from_secs(5));
        q.park("first", t + Duration::from_secs(1));
        q.park("second", t + Duration::from_secs(1));
        assert_eq!(q.take_due(t), None, "nothing due yet");
        assert_eq!(q.next_due(), Some(t + Duration::from_secs(1)));
        let at = t + Duration::from_secs(2);
        assert_eq!((q.take_due(at), q.take_due(at), q.take_due(at)), (Some("first"), Some("second"), None));
        assert_eq!(q.take_any(), Some("late"));
        assert!(q.is_empty());
    }
}
