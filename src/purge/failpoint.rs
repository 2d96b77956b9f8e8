//! Test hooks: `LAKEPURGE_FAILPOINT` makes a purge abort the process at an exact point, as a
//! SIGKILL would, so the crash tests can check what a resumed run makes of it. Nothing sets it
//! in production.

/// Crash injection for tests: abort the process (as SIGKILL would) right after the Nth
/// pending record is journaled, or right after the Nth commit, before it is journaled as done.
#[derive(Debug, Default, Clone, Copy)]
pub struct Failpoint {
    pub after_intent: Option<usize>,
    pub after_commit: Option<usize>,
}

impl Failpoint {
    /// Parses `after_intent=N` or `after_commit=N`.
    pub fn parse(s: &str) -> std::result::Result<Failpoint, String> {
        let (what, n) = s
            .split_once('=')
            .ok_or_else(|| format!("failpoint {s:?}: expected after_intent=N or after_commit=N"))?;
        let n: usize = n
            .parse()
            .map_err(|_| format!("failpoint {s:?}: N must be a number"))?;
        match what {
            "after_intent" => Ok(Failpoint {
                after_intent: Some(n),
                ..Failpoint::default()
            }),
            "after_commit" => Ok(Failpoint {
                after_commit: Some(n),
                ..Failpoint::default()
            }),
            _ => Err(format!("failpoint {s:?}: unknown point {what:?}")),
        }
    }
}
