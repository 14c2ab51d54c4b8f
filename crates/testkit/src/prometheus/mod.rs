//! A strict parser of the Prometheus text exposition format (0.0.4).
//!
//! Strict on purpose: a scrape that Prometheus would reject, or would read
//! differently than intended, fails the test. It checks names, label syntax
//! and escapes, `# TYPE` before a family's samples, families not
//! interleaved, no duplicate series, and consistent histograms (a `+Inf`
//! bucket, cumulative buckets, `_count` equal to the `+Inf` bucket, a
//! `_sum`).

mod parse;
mod syntax;

use std::{collections::BTreeMap, fmt};

/// A metric family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped`, or samples with no `# TYPE` line.
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (for a histogram, with its `_bucket`/`_sum`/
    /// `_count` suffix).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A metric family: its type, help and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name.
    pub name: String,
    /// The declared type.
    pub kind: MetricType,
    /// The `# HELP` text, unescaped.
    pub help: Option<String>,
    /// The samples, in exposition order.
    pub samples: Vec<Sample>,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
}

/// Why a scrape is not valid text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line number (0 for whole-scrape checks).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Exposition {
    /// Parses a whole scrape.
    ///
    /// # Errors
    ///
    /// The first line that breaks the format, or a family whose samples are
    /// inconsistent.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        parse::families(text).map(|families| Self { families })
    }

    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.get(name)
    }

    /// Every family, by name.
    pub fn families(&self) -> impl Iterator<Item = &Family> {
        self.families.values()
    }

    /// Every sample named `name` (for histograms, use the suffixed name).
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .filter(move |s| s.name == name)
    }

    /// The value of the sample named `name` with exactly the labels
    /// `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples(name)
            .find(|s| s.labels == wanted)
            .map(|s| s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# HELP requests_total Requests, per \\\\ route.\\nSecond line.
# TYPE requests_total counter
requests_total{route=\"/a\",status=\"200\"} 3
requests_total{route=\"q\\\"x\\\\y\\n\",status=\"404\"} 0 1700000000000
# TYPE up gauge
up 1
# TYPE lag_seconds histogram
lag_seconds_bucket{le=\"0.1\"} 1
lag_seconds_bucket{le=\"+Inf\"} 2
lag_seconds_sum 0.35
lag_seconds_count 2
process_open_fds 7
";

    #[test]
    fn reads_families_labels_escapes_and_histograms() {
        let exposition = Exposition::parse(GOOD).unwrap();
        let requests = exposition.family("requests_total").unwrap();
        assert_eq!(requests.kind, MetricType::Counter);
        assert_eq!(
            requests.help.as_deref(),
            Some("Requests, per \\ route.\nSecond line.")
        );
        assert_eq!(
            exposition.value("requests_total", &[("route", "/a"), ("status", "200")]),
            Some(3.0)
        );
        assert_eq!(
            exposition.value(
                "requests_total",
                &[("route", "q\"x\\y\n"), ("status", "404")]
            ),
            Some(0.0)
        );
        assert_eq!(exposition.value("requests_total", &[("route", "/a")]), None);
        assert_eq!(exposition.value("lag_seconds_count", &[]), Some(2.0));
        assert_eq!(
            exposition.family("process_open_fds").unwrap().kind,
            MetricType::Untyped
        );
    }

    #[test]
    fn rejects_what_prometheus_would_reject() {
        for (bad, why) in [
            ("1abc 1\n", "bad name"),
            ("a{b=\"c} 1\n", "unclosed label"),
            ("a{b=c} 1\n", "unquoted label"),
            ("a{b=\"\\t\"} 1\n", "bad escape"),
            ("a{b=\"1\",b=\"2\"} 1\n", "label twice"),
            ("a one\n", "bad value"),
            ("a 1 2 3\n", "trailing field"),
            ("a\n", "no value"),
            ("a 1\na 2\n", "duplicate series"),
            ("a 1\nb 1\na{x=\"1\"} 1\n", "interleaved"),
            ("# TYPE a counter\n# TYPE a gauge\n", "second TYPE"),
            ("# TYPE a meter\n", "unknown type"),
            ("a 1\n# TYPE a counter\n", "TYPE after samples"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "not cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
                "no +Inf",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
                "count mismatch",
            ),
            ("# TYPE h histogram\nh_bucket 1\n", "bucket without le"),
        ] {
            assert!(Exposition::parse(bad).is_err(), "{why}: {bad:?} was accepted");
        }
    }
}
