//! A global allocator for lean guests that serves small allocations from the module's initial
//! memory, so that a small task never grows its linear memory.
//!
//! Why: std's allocator on `wasm32-unknown-unknown` gets every heap segment from `memory.grow`,
//! even the first one, so every task (a fresh instance, whose first allocation is the host
//! writing the call's arguments) grows its memory. With wasmtime's pooling allocator that
//! costs two `mprotect` calls per task: one to grow, one to hide the grown pages again when
//! the next instance takes the slot, each with a TLB shootdown. (A `wasm32-wasip2` guest does
//! not pay it: wasi-libc's allocator starts in the initial memory.)
//!
//! [`ArenaAllocator`] is a static byte array (zero-initialised, so it is part of the module's
//! initial memory without a data segment) handed out by bumping an offset; only the pages a
//! task touches become resident. Freeing or growing the most recent allocation reuses its room;
//! other frees are no-ops, which suits instances that live for one task. An allocation that does
//! not fit goes to [`std::alloc::System`].

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default arena size: 256 KiB, more than a small task's arguments, result and working
/// data need.
pub const DEFAULT_ARENA_BYTES: usize = 256 * 1024;

/// A bump allocator over a static arena of `N` bytes, falling back to [`System`] when full.
///
/// Use it as the global allocator of a lean guest:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: taskhost_guest::ArenaAllocator = taskhost_guest::ArenaAllocator::new();
/// ```
///
/// Memory freed in the arena is reused only when it was the most recent allocation, so a task
/// that allocates and frees much more than `N` bytes in total moves on to the system allocator
/// (and grows its memory) like it would without the arena.
pub struct ArenaAllocator<const N: usize = DEFAULT_ARENA_BYTES> {
    arena: UnsafeCell<[u8; N]>,
    /// Bytes of the arena handed out (an offset from its start).
    used: AtomicUsize,
}

// SAFETY: the arena's bytes are only reached through pointers handed out by `alloc`, and the
// ranges handed out are reserved with an atomic compare-and-swap on `used`, so no two live
// allocations overlap, whatever the threads.
unsafe impl<const N: usize> Sync for ArenaAllocator<N> {}

impl<const N: usize> ArenaAllocator<N> {
    /// An allocator with an empty arena.
    pub const fn new() -> Self {
        Self {
            arena: UnsafeCell::new([0; N]),
            used: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.arena.get() as usize
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        let address = ptr as usize;
        address >= self.base() && address < self.base() + N
    }

    /// Reserves `layout` in the arena, or returns `None` when it does not fit.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let start = (base + used).checked_next_multiple_of(layout.align())?;
            let end = start.checked_add(layout.size())?;
            if end > base + N {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                end - base,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                // Derive the pointer from the arena's so it keeps the arena's provenance.
                Ok(_) => return Some(self.arena.get().cast::<u8>().wrapping_add(start - base)),
                Err(now) => used = now,
            }
        }
    }
}

impl<const N: usize> Default for ArenaAllocator<N> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `alloc` returns either a range of the arena reserved for this allocation alone
// (aligned and `layout.size()` long, checked in `bump`) or the system allocator's block;
// `dealloc` and `realloc` tell the two apart by address, since the arena is one static range.
unsafe impl<const N: usize> GlobalAlloc for ArenaAllocator<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's contract (a non-zero size) is passed on as is.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.contains(ptr) {
            // Give the room back if this was the most recent allocation; otherwise it stays
            // used until the instance ends.
            let offset = ptr as usize - self.base();
            let _ = self.used.compare_exchange(
                offset + layout.size(),
                offset,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            // SAFETY: `ptr` is not in the arena, so the system allocator handed it out.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.contains(ptr) {
            // SAFETY: `ptr` is not in the arena, so the system allocator handed it out.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let offset = ptr as usize - self.base();
        // The most recent allocation grows or shrinks in place when the arena has room.
        if offset + new_size <= N
            && self
                .used
                .compare_exchange(
                    offset + layout.size(),
                    offset + new_size,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return ptr;
        }
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment, does not
        // overflow `isize`, so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_size` is non-zero (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_allocations_come_from_the_arena_and_large_ones_from_the_system() {
        let arena = ArenaAllocator::<1024>::new();
        let small = Layout::from_size_align(100, 8).unwrap();
        let large = Layout::from_size_align(2048, 8).unwrap();
        // SAFETY: non-zero sizes; every block is freed with its own layout.
        unsafe {
            let a = arena.alloc(small);
            assert!(arena.contains(a));
            assert_eq!(a as usize % 8, 0);
            let b = arena.alloc(large);
            assert!(!b.is_null() && !arena.contains(b));
            b.write_bytes(7, 2048);
            arena.dealloc(b, large);
            arena.dealloc(a, small);
        }
        assert_eq!(arena.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_last_allocation_grows_in_place_and_others_move() {
        let arena = ArenaAllocator::<1024>::new();
        let layout = Layout::from_size_align(16, 4).unwrap();
        // SAFETY: non-zero sizes; each block is used within its size and freed once.
        unsafe {
            let a = arena.alloc(layout);
            a.write_bytes(1, 16);
            let grown = arena.realloc(a, layout, 64);
            assert_eq!(grown, a, "the last allocation grows in place");
            let grown_layout = Layout::from_size_align(64, 4).unwrap();
            let b = arena.alloc(layout);
            let moved = arena.realloc(grown, grown_layout, 128);
            assert_ne!(moved, grown, "an earlier allocation moves");
            assert_eq!(std::slice::from_raw_parts(moved, 16), &[1; 16]);
            // Past the arena's end it moves to the system allocator, keeping its bytes.
            let moved_layout = Layout::from_size_align(128, 4).unwrap();
            let big = arena.realloc(moved, moved_layout, 4096);
            assert!(!arena.contains(big));
            assert_eq!(std::slice::from_raw_parts(big, 16), &[1; 16]);
            arena.dealloc(big, Layout::from_size_align(4096, 4).unwrap());
            arena.dealloc(b, layout);
        }
    }

    #[test]
    fn alignment_is_respected() {
        let arena = ArenaAllocator::<4096>::new();
        // SAFETY: non-zero sizes.
        unsafe {
            arena.alloc(Layout::from_size_align(1, 1).unwrap());
            let aligned = arena.alloc(Layout::from_size_align(8, 256).unwrap());
            assert_eq!(aligned as usize % 256, 0);
            assert!(arena.contains(aligned));
        }
    }
}
