//! Parallel work with ordered output: workers claim items in input order from a shared
//! counter and results are emitted in that order as soon as each is ready.

use rayon::ThreadPool;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// Runs `work(i)` for `i` in `0..count` on `pool` and calls `emit` with the results in order
/// on the calling thread. The first error `emit` returns stops the run (the workers finish
/// the item in hand and claim no more) and is returned.
pub fn for_each_ordered<T: Send, E>(
    pool: &ThreadPool,
    count: usize,
    work: impl Fn(usize) -> T + Sync,
    mut emit: impl FnMut(T) -> Result<(), E>,
) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, T)>();
    pool.in_place_scope(|scope| {
        for _ in 0..pool.current_num_threads().min(count) {
            let tx = tx.clone();
            let (next, stop, work) = (&next, &stop, &work);
            scope.spawn(move |_| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || tx.send((i, work(i))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut wanted = 0;
        for (i, item) in rx {
            pending.insert(i, item);
            while let Some(item) = pending.remove(&wanted) {
                wanted += 1;
                if let Err(e) = emit(item) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(())
    })
}
