//! Keeping a worker's threads on a set of CPUs.
//!
//! Workers that share a machine (the embedded cluster, or several `taskhost worker` daemons on
//! one host) can each be given CPUs of their own ([`WorkerConfig::cpus`]). Without that, the
//! kernel wakes a thread that a peer's message is for on the CPU of the thread that sent it,
//! behind that thread's running task, and the message waits for the task's time slice: on a
//! 2-CPU machine this cost a stencil step up to 300-400 us (`docs/worker.md`).
//!
//! [`WorkerConfig::cpus`]: crate::WorkerConfig::cpus

/// The CPUs the calling thread may run on (the process's set unless the thread was pinned),
/// in increasing order; every CPU the OS counts when the set cannot be read.
///
/// ```
/// let cpus = taskhost_worker::allowed_cpus();
/// assert!(!cpus.is_empty());
/// ```
pub fn allowed_cpus() -> Vec<usize> {
    imp::allowed().unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    })
}

/// Restricts the calling thread (and the threads it starts afterwards, which inherit the
/// set) to `cpus`.
///
/// # Errors
/// When the set is empty, names no CPU this process may use, or the OS cannot pin threads.
pub(crate) fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an empty CPU set",
        ));
    }
    imp::pin(cpus)
}

/// Splits `cpus` into `workers` disjoint sets of `slots` CPUs each, in order, when there are
/// enough CPUs for every slot and more than one worker; else `None` (pinning would put two
/// busy slots on one CPU, or a single worker would gain nothing).
///
/// ```
/// let sets = taskhost_worker::cpu_sets(&[0, 1, 2, 3], 2, 2).unwrap();
/// assert_eq!(sets, vec![vec![0, 1], vec![2, 3]]);
/// assert!(taskhost_worker::cpu_sets(&[0, 1], 2, 2).is_none());
/// assert!(taskhost_worker::cpu_sets(&[0, 1], 1, 2).is_none());
/// ```
pub fn cpu_sets(cpus: &[usize], workers: usize, slots: u32) -> Option<Vec<Vec<usize>>> {
    let slots = slots as usize;
    if workers < 2 || slots == 0 || workers.checked_mul(slots)? > cpus.len() {
        return None;
    }
    Some(
        cpus.chunks(slots)
            .take(workers)
            .map(<[_]>::to_vec)
            .collect(),
    )
}

// The only unsafe code of the worker: two system calls on a plain bit set.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod imp {
    use std::mem::{size_of, zeroed};

    pub(super) fn allowed() -> Option<Vec<usize>> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, and the kernel writes at most
        // `size_of::<cpu_set_t>()` bytes into it.
        let set = unsafe {
            let mut set: libc::cpu_set_t = zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return None;
            }
            set
        };
        let max = 8 * size_of::<libc::cpu_set_t>();
        // SAFETY: `cpu` is below the set's capacity.
        let cpus: Vec<usize> = (0..max)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect();
        (!cpus.is_empty()).then_some(cpus)
    }

    pub(super) fn pin(cpus: &[usize]) -> std::io::Result<()> {
        let max = 8 * size_of::<libc::cpu_set_t>();
        if let Some(&cpu) = cpus.iter().find(|&&c| c >= max) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("CPU {cpu} is beyond the {max} this build can address"),
            ));
        }
        // SAFETY: a zeroed cpu_set_t is a valid empty set; every index is below its capacity
        // (checked above); the kernel reads `size_of::<cpu_set_t>()` bytes.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn allowed() -> Option<Vec<usize>> {
        None
    }

    pub(super) fn pin(_cpus: &[usize]) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "pinning threads to CPUs is supported on Linux only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_disjoint_and_need_a_cpu_per_slot() {
        assert_eq!(
            cpu_sets(&[0, 1, 2], 3, 1),
            Some(vec![vec![0], vec![1], vec![2]])
        );
        assert_eq!(cpu_sets(&[4, 6, 8, 9], 2, 1), Some(vec![vec![4], vec![6]]));
        assert_eq!(cpu_sets(&[0, 1, 2], 2, 2), None);
        assert_eq!(cpu_sets(&[0, 1, 2, 3], 1, 1), None);
        assert_eq!(cpu_sets(&[0, 1], 2, 0), None);
    }

    #[test]
    fn an_empty_or_impossible_set_is_refused() {
        assert!(pin_current_thread(&[]).is_err());
        assert!(pin_current_thread(&[1 << 20]).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_pinned_to_an_allowed_cpu_runs_there_only() {
        let first = allowed_cpus()[0];
        std::thread::spawn(move || {
            pin_current_thread(&[first]).expect("pin");
            assert_eq!(imp::allowed(), Some(vec![first]));
        })
        .join()
        .unwrap();
    }
}
