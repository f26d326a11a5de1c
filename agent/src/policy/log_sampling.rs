//! `accessLog`: which requests of a Gateway, listener or route reach the
//! access log — a share of them (`samplePercent`) and/or only answers with
//! at least some status (`minStatus`). Applied when the entry is sent, on
//! top of the agent-wide `--access-log-min-status`; a request the filter
//! leaves out costs no formatting or write.
use std::sync::Arc;

use super::SectionMeta;

/// The compiled section.
#[derive(Debug)]
pub struct LogSampling {
    pub filter: LogFilter,
    pub meta: Arc<SectionMeta>,
}

/// What an access log entry carries of the section (copied into it when
/// the request matches a route or listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFilter {
    /// Requests logged per 10,000 (100 % = 10,000).
    per_10k: u32,
    pub min_status: u16,
}

impl LogFilter {
    pub fn new(sample_percent: u32, min_status: u16) -> Self {
        Self {
            per_10k: sample_percent.min(100) * 100,
            min_status,
        }
    }

    /// Whether an answered request is logged: its status passes, and it is
    /// in the sample (a cheap per-thread generator, no lock).
    pub fn keeps(&self, status: u16) -> bool {
        if status < self.min_status {
            return false;
        }
        if self.per_10k >= 10_000 {
            return true;
        }
        crate::random::below(10_000) < u64::from(self.per_10k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_share_decide() {
        let errors = LogFilter::new(100, 400);
        assert!(!errors.keeps(200));
        assert!(errors.keeps(404) && errors.keeps(503));
        let none = LogFilter::new(0, 0);
        assert!((0..1000).all(|_| !none.keeps(200)));
        let tenth = LogFilter::new(10, 0);
        let kept = (0..100_000).filter(|_| tenth.keeps(200)).count();
        assert!((8_500..11_500).contains(&kept), "{kept}");
    }
}
