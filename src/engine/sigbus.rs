//! Survive files that shrink under a memory map.
//!
//! Touching a mapped page beyond the end of a file that was truncated after mapping raises
//! SIGBUS, which would kill the process. Every window the reader maps is registered here; a
//! SIGBUS inside a registered window maps anonymous zero pages over the rest of the window,
//! marks the window as faulted and returns, so the reader finishes the window on zeros and
//! then reports the file as changed while reading. A SIGBUS anywhere else is not ours: the
//! default action is restored and the fault repeats as it would have without this handler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

const SLOTS: usize = 1024;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot =
    Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), faulted: AtomicBool::new(false) };
static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// A registered window; unregisters on drop (before its mapping is unmapped).
pub struct Watch {
    slot: usize,
}

impl Watch {
    /// Registers `[ptr, ptr + len)`; `None` when every slot is taken (then the caller reads
    /// instead of mapping).
    pub fn new(ptr: *const u8, len: usize) -> Option<Watch> {
        install();
        let start = ptr as usize;
        for (i, slot) in TABLE.iter().enumerate() {
            if slot.start.compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                slot.faulted.store(false, Ordering::Relaxed);
                slot.end.store(start + len, Ordering::Relaxed);
                slot.start.store(start, Ordering::Release);
                return Some(Watch { slot: i });
            }
        }
        None
    }

    /// Whether a SIGBUS hit this window (the file shrank while it was read).
    pub fn faulted(&self) -> bool {
        TABLE[self.slot].faulted.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        slot.end.store(0, Ordering::Relaxed);
        slot.start.store(0, Ordering::Release);
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid starting value; the handler has the
        // SA_SIGINFO signature and only calls async-signal-safe code (atomics and mmap, a
        // plain system call).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

extern "C" fn on_sigbus(_signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for slot in TABLE.iter() {
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Relaxed);
        if start != 0 && start != usize::MAX && addr >= start && addr < end {
            let from = addr & !(page - 1);
            // SAFETY: [from, end) lies inside a live mapping owned by the reader that
            // registered it; replacing its pages with private zero pages keeps the address
            // range valid until that reader unmaps it.
            let mapped = unsafe {
                libc::mmap(
                    from as *mut libc::c_void,
                    end - from,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                slot.faulted.store(true, Ordering::Release);
                return;
            }
        }
    }
    // Not a window of ours: let the fault take its default course.
    // SAFETY: restoring the default disposition is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}
