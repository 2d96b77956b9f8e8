//! Test hooks: `LAKEPURGE_FAILPOINT` makes a purge abort the process at an exact point, as a
//! SIGKILL would, so the crash tests can check what a resumed run makes of it, or run with a
//! deliberately broken matcher, so a test can show that `verify --deep` catches a matching bug.
//! Nothing sets it in production.

/// Crash injection for tests: abort the process (as SIGKILL would) right after the Nth
/// pending record is journaled, or right after the Nth commit, before it is journaled as done.
#[derive(Debug, Default, Clone, Copy)]
pub struct Failpoint {
    pub after_intent: Option<usize>,
    pub after_commit: Option<usize>,
    /// Right after the Nth file's old versions to delete are journaled, before any is deleted.
    pub before_version_delete: Option<usize>,
    /// `skip_version_delete`: each file's oldest old version to delete is left, though the
    /// manifest records it deleted (so a test can show `verify` finds it).
    pub skip_version_delete: bool,
    /// `broken_matcher`: the plan ignores each table's last match rule (see
    /// `plan::break_matcher_for_tests`).
    pub broken_matcher: bool,
    /// `after_confirmations`: abort right after the run's confirmations are written, before
    /// its manifest.
    pub after_confirmations: bool,
}

impl Failpoint {
    /// Parses `after_intent=N`, `after_commit=N`, `before_version_delete=N`,
    /// `skip_version_delete`, `broken_matcher` or `after_confirmations`.
    pub fn parse(s: &str) -> std::result::Result<Failpoint, String> {
        if s == "skip_version_delete" {
            return Ok(Failpoint {
                skip_version_delete: true,
                ..Failpoint::default()
            });
        }
        if s == "after_confirmations" {
            return Ok(Failpoint {
                after_confirmations: true,
                ..Failpoint::default()
            });
        }
        if s == "broken_matcher" {
            return Ok(Failpoint {
                broken_matcher: true,
                ..Failpoint::default()
            });
        }
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
            "before_version_delete" => Ok(Failpoint {
                before_version_delete: Some(n),
                ..Failpoint::default()
            }),
            _ => Err(format!("failpoint {s:?}: unknown point {what:?}")),
        }
    }
}
