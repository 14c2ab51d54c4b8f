//! A strict parser of the Prometheus text exposition format (0.0.4).
//!
//! Strict on purpose: a scrape that Prometheus would reject, or would read
//! differently than intended, fails the test. It checks names, label syntax
//! and escapes, `# TYPE` before a family's samples, families not
//! interleaved, no duplicate series, and consistent histograms (a `+Inf`
//! bucket, cumulative buckets, `_count` equal to the `+Inf` bucket, a
//! `_sum`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

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
        let mut state = ParseState::default();
        for (index, line) in text.split('\n').enumerate() {
            state.line(line).map_err(|message| ParseError {
                line: index + 1,
                message,
            })?;
        }
        for family in state.exposition.families.values() {
            if family.kind == MetricType::Histogram {
                check_histogram(family).map_err(|message| ParseError { line: 0, message })?;
            }
        }
        Ok(state.exposition)
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

#[derive(Default)]
struct ParseState {
    exposition: Exposition,
    helped: BTreeSet<String>,
    // Families whose samples have ended: another family's sample came after.
    finished: BTreeSet<String>,
    current: Option<String>,
    series: BTreeSet<(String, Vec<(String, String)>)>,
}

impl ParseState {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if line.trim().is_empty() {
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix('#') {
            return self.comment(rest.trim_start());
        }
        self.sample(line)
    }

    fn comment(&mut self, rest: &str) -> Result<(), String> {
        let mut words = rest.splitn(3, ' ');
        let keyword = words.next().unwrap_or_default();
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(());
        }
        let name = words.next().unwrap_or_default();
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?} in # {keyword}"));
        }
        let value = words.next().unwrap_or_default();
        if keyword == "HELP" {
            if !self.helped.insert(name.to_owned()) {
                return Err(format!("second # HELP for {name}"));
            }
            let help = unescape(value, false)?;
            self.family_mut(name, None)?.help = Some(help);
            return Ok(());
        }
        let kind = match value.trim() {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            other => return Err(format!("unknown type {other:?} for {name}")),
        };
        if self
            .exposition
            .families
            .get(name)
            .is_some_and(|f| !f.samples.is_empty())
        {
            return Err(format!("# TYPE for {name} after its samples"));
        }
        self.family_mut(name, Some(kind)).map(|_| ())
    }

    /// The family `name`, created if new. A `kind` may be declared once.
    fn family_mut(&mut self, name: &str, kind: Option<MetricType>) -> Result<&mut Family, String> {
        let family = self
            .exposition
            .families
            .entry(name.to_owned())
            .or_insert_with(|| Family {
                name: name.to_owned(),
                kind: MetricType::Untyped,
                help: None,
                samples: Vec::new(),
            });
        if let Some(kind) = kind {
            if family.kind != MetricType::Untyped {
                return Err(format!("second # TYPE for {name}"));
            }
            family.kind = kind;
        }
        Ok(family)
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let name_end = line
            .find(['{', ' ', '\t'])
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let labels = if let Some(after) = rest.strip_prefix('{') {
            let (labels, after) = parse_labels(after)?;
            rest = after;
            labels
        } else {
            BTreeMap::new()
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or("missing value")?)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
        }
        if let Some(extra) = fields.next() {
            return Err(format!("unexpected {extra:?} after the value"));
        }

        let family = self.family_of(name);
        if self.current.as_deref() != Some(family.as_str()) {
            if self.finished.contains(&family) {
                return Err(format!("samples of {family} are not contiguous"));
            }
            if let Some(previous) = self.current.replace(family.clone()) {
                self.finished.insert(previous);
            }
        }
        let key = (name.to_owned(), labels.clone().into_iter().collect());
        if !self.series.insert(key) {
            return Err(format!("duplicate series {name}{labels:?}"));
        }
        let kind = self.family_mut(&family, None)?.kind;
        if kind == MetricType::Histogram && name.ends_with("_bucket") && !labels.contains_key("le")
        {
            return Err(format!("bucket of {family} without le"));
        }
        self.family_mut(&family, None)?.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
        Ok(())
    }

    /// The family a sample name belongs to: itself, or a histogram or
    /// summary whose suffixed series it is.
    fn family_of(&self, name: &str) -> String {
        let families = &self.exposition.families;
        if families.contains_key(name) {
            return name.to_owned();
        }
        for (suffix, kinds) in [
            ("_bucket", &[MetricType::Histogram][..]),
            ("_sum", &[MetricType::Histogram, MetricType::Summary][..]),
            ("_count", &[MetricType::Histogram, MetricType::Summary][..]),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if families.get(base).is_some_and(|f| kinds.contains(&f.kind)) {
                    return base.to_owned();
                }
            }
        }
        name.to_owned()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `name="value",…}` and returns the labels and the text after `}`.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text.find('=').ok_or("label without =")?;
        let name = text[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let quoted = text[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name} value is not quoted"))?;
        let close = closing_quote(quoted).ok_or_else(|| format!("label {name} is not closed"))?;
        let value = unescape(&quoted[..close], true)?;
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        text = quoted[close + 1..].trim_start();
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// The index of the first unescaped `"`.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Undoes `\\` and `\n` escapes (and `\"` in label values); any other
/// escape is an error.
fn unescape(text: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in {text:?}")),
        }
    }
    Ok(out)
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return Err(format!("bad value {text:?}"));
    }
    text.parse().map_err(|_| format!("bad value {text:?}"))
}

/// Buckets cumulative, a `+Inf` bucket, `_count` equal to it, a `_sum`,
/// for every label set of the histogram.
fn check_histogram(family: &Family) -> Result<(), String> {
    let name = &family.name;
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for sample in &family.samples {
        let key = sample
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        groups.entry(key).or_default().push(sample);
    }
    for (labels, samples) in groups {
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .map(|s| parse_value(&s.labels["le"]).map(|le| (le, s.value)))
            .collect::<Result<_, _>>()?;
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{name}{labels:?}: buckets are not cumulative"));
        }
        let inf = buckets
            .last()
            .filter(|(le, _)| *le == f64::INFINITY)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("{name}{labels:?}: no +Inf bucket"))?;
        let find = |suffix: &str| {
            samples
                .iter()
                .find(|s| s.name == format!("{name}{suffix}"))
                .map(|s| s.value)
        };
        let count = find("_count").ok_or_else(|| format!("{name}{labels:?}: no _count"))?;
        if count != inf {
            return Err(format!(
                "{name}{labels:?}: _count {count} != +Inf bucket {inf}"
            ));
        }
        find("_sum").ok_or_else(|| format!("{name}{labels:?}: no _sum"))?;
    }
    Ok(())
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
