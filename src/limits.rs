//! The accepted range of every numeric option: one table serves the flags
//! (clap calls [`Bounds::parse`]) and the config file (config calls
//! [`Bounds::check`]), so both refuse the same values with the same words,
//! before any file is created.

/// The range of one whole-number option.
pub struct Bounds {
    /// The flag's name, as messages say it.
    pub flag: &'static str,
    pub min: u64,
    pub max: u64,
    /// What the number counts, e.g. "requests per second".
    pub unit: &'static str,
}

pub const RATE: Bounds = Bounds { flag: "--rate", min: 1, max: 10_000, unit: "requests per second" };
pub const BURST: Bounds = Bounds { flag: "--burst", min: 0, max: 10_000, unit: "extra requests" };
pub const CONCURRENCY: Bounds = Bounds { flag: "--concurrency", min: 1, max: 512, unit: "requests in flight" };
pub const MAX_ATTEMPTS: Bounds = Bounds { flag: "--max-attempts", min: 1, max: 100, unit: "tries per row" };
pub const BACKOFF_MS: Bounds = Bounds { flag: "--backoff-ms", min: 0, max: 600_000, unit: "milliseconds" };
pub const SETTLE_TIMEOUT: Bounds = Bounds { flag: "--settle-timeout", min: 1, max: 86_400, unit: "seconds" };
pub const POLL_MS: Bounds = Bounds { flag: "--poll-ms", min: 10, max: 60_000, unit: "milliseconds" };
pub const REFUND_REASON: Bounds = Bounds { flag: "--refund-reason", min: 0, max: 5, unit: "(WeChat's reasons)" };
/// `--timeout` is in seconds and may have a fraction: (0, 600].
pub const TIMEOUT_MAX_SECS: f64 = 600.0;

impl Bounds {
    /// `v` if it is in range, else a message that names the flag and the range.
    pub fn check(&self, v: i128) -> Result<u64, String> {
        match u64::try_from(v) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(self.wanted(&v.to_string())),
        }
    }

    /// Parses a flag's text (clap's value parser).
    pub fn parse(&self, s: &str) -> Result<u64, String> {
        match s.trim().parse::<i128>() {
            Ok(v) => self.check(v),
            Err(_) => Err(self.wanted(s)),
        }
    }

    fn wanted(&self, got: &str) -> String {
        format!("{} takes a whole number of {} from {} to {}, not `{got}`", self.flag, self.unit, self.min, self.max)
    }
}

/// Parses `--timeout` (seconds, fractions allowed).
pub fn parse_timeout(s: &str) -> Result<f64, String> {
    s.trim().parse::<f64>().map_err(|_| timeout_wanted(s)).and_then(check_timeout)
}

/// `secs` if it is more than 0 and at most [`TIMEOUT_MAX_SECS`].
pub fn check_timeout(secs: f64) -> Result<f64, String> {
    if secs.is_finite() && secs > 0.0 && secs <= TIMEOUT_MAX_SECS {
        Ok(secs)
    } else {
        Err(timeout_wanted(&secs.to_string()))
    }
}

fn timeout_wanted(got: &str) -> String {
    format!("--timeout takes seconds, more than 0 and at most {TIMEOUT_MAX_SECS} (e.g. 10 or 2.5), not `{got}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_refuses_what_is_outside_it_with_the_flag_named() {
        assert_eq!(RATE.parse("50"), Ok(50));
        for bad in ["0", "-5", "0.5", "4294967295", "ten", ""] {
            let m = RATE.parse(bad).unwrap_err();
            assert!(m.contains("--rate") && m.contains("whole number") && m.contains("1 to 10000"), "{bad}: {m}");
        }
        assert_eq!(BURST.parse("0"), Ok(0));
        assert!(CONCURRENCY.parse("513").is_err() && MAX_ATTEMPTS.parse("0").is_err());
        assert_eq!(parse_timeout("2.5"), Ok(2.5));
        for bad in ["0", "-1", "601", "nan", "inf", "x"] {
            let m = parse_timeout(bad).unwrap_err();
            assert!(m.contains("more than 0") && !m.contains("between 0"), "{bad}: {m}");
        }
    }
}
