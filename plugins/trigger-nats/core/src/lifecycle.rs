//! Noticing that `spin up` is gone, so an orphaned plugin stops instead of
//! running beside the app a supervisor starts again.
//!
//! `spin up` runs a trigger plugin through a `spin trigger-<type>` process
//! of its own: `spin up` → `spin trigger-nats …` → this binary. When `spin up`
//! is killed (even with SIGKILL, which it cannot pass on), that middle process
//! and this one live on, reparented. So the watch covers both: this process's
//! parent, and, when the parent is Spin's `trigger-…` wrapper, the parent's
//! parent, read from `/proc` (Linux; elsewhere only the parent is watched).

use std::time::Duration;

/// How often the parent is looked at.
const POLL: Duration = Duration::from_millis(500);

/// The process chain at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ancestry {
    /// This process's parent.
    pub parent: u32,
    /// The parent's parent, when the parent is Spin's `trigger-…` wrapper.
    pub wrapper_parent: Option<u32>,
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether process `pid` is Spin running a trigger plugin (`spin trigger-nats …`).
fn is_trigger_wrapper(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg.starts_with(b"trigger-") || arg == b"trigger")
        })
        .unwrap_or(false)
}

impl Ancestry {
    /// The chain as it is now.
    pub fn now() -> Self {
        let parent = std::os::unix::process::parent_id();
        let wrapper_parent = is_trigger_wrapper(parent)
            .then(|| parent_of(parent))
            .flatten()
            .filter(|gp| *gp > 1);
        Ancestry {
            parent,
            wrapper_parent,
        }
    }

    /// What is gone from the chain, if anything: the parent (this process
    /// was reparented) or the wrapper's parent (`spin up`).
    pub fn gone(&self) -> Option<String> {
        let parent = std::os::unix::process::parent_id();
        if parent != self.parent {
            return Some(format!("parent process {} is gone", self.parent));
        }
        let wrapper_parent = self.wrapper_parent?;
        match parent_of(self.parent) {
            Some(now) if now == wrapper_parent => None,
            _ => Some(format!("spin up (process {wrapper_parent}) is gone")),
        }
    }

    /// Resolves, with what is gone, once something is.
    pub async fn watch(self) -> String {
        loop {
            if let Some(gone) = self.gone() {
                return gone;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parents_and_spots_spin_trigger_wrappers() -> std::io::Result<()> {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        // A process whose arguments name a trigger, as `spin trigger-nats …` does.
        // (`; :` keeps the shell from replacing itself with `sleep`.)
        let mut wrapper = std::process::Command::new("sh")
            .args(["-c", "sleep 5; :", "trigger-nats"])
            .spawn()?;
        // Until the child has exec'd, its command line is still ours.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_trigger_wrapper(wrapper.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_trigger_wrapper(wrapper.id()));
        assert_eq!(parent_of(wrapper.id()), Some(me));
        assert!(!is_trigger_wrapper(me));
        wrapper.kill()?;
        wrapper.wait()?;
        Ok(())
    }

    #[test]
    fn a_changed_chain_is_gone() {
        let parent = std::os::unix::process::parent_id();
        let intact = Ancestry {
            parent,
            wrapper_parent: parent_of(parent),
        };
        assert_eq!(intact.gone(), None);
        let reparented = Ancestry {
            parent: parent + 1,
            wrapper_parent: None,
        };
        assert!(
            reparented
                .gone()
                .is_some_and(|g| g.contains("parent process"))
        );
        let spin_up_died = Ancestry {
            parent,
            wrapper_parent: Some(u32::MAX),
        };
        assert!(
            spin_up_died
                .gone()
                .is_some_and(|g| g.starts_with("spin up"))
        );
    }
}
