//! The exit statuses of SPEC §2: a leaf, so that every room can name the
//! status it leads to while only `main` ends the process.

/// The exit statuses of SPEC §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every row cancelled, refunded or already returned (dry run: signed).
    Done = 0,
    /// The run finished, but some rows need attention.
    Attention = 1,
    /// Nothing was sent: bad flags, config, secret or input.
    Usage = 2,
    /// Stopped early (circuit breaker): `--resume` continues.
    Stopped = 3,
    /// Interrupted: `--resume` continues.
    Interrupted = 130,
}

impl Exit {
    /// Every status with its meaning, for the manual.
    pub const DESCRIBED: [(u8, &'static str); 5] = [
        (Exit::Done as u8, "every row cancelled, refunded or already returned (dry run: every row signed)"),
        (Exit::Attention as u8, "the run finished, but some rows need attention (see their category)"),
        (Exit::Usage as u8, "nothing was sent: bad flags, config, missing secret, unreadable input"),
        (
            Exit::Stopped as u8,
            "the run was stopped early (circuit breaker, an unwritable results file): --resume continues it",
        ),
        (
            Exit::Interrupted as u8,
            "interrupted (Ctrl-C): requests in flight were finished and recorded; --resume continues it",
        ),
    ];
}
