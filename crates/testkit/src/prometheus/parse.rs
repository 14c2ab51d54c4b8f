//! The line-by-line parse of a scrape into families, and the consistency
//! checks that need a whole family (histograms).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    syntax::{is_metric_name, parse_labels, parse_value, unescape},
    Family, MetricType, ParseError, Sample,
};

/// Parses a whole scrape into its families, by name.
pub(super) fn families(text: &str) -> Result<BTreeMap<String, Family>, ParseError> {
    let mut state = ParseState::default();
    for (index, line) in text.split('\n').enumerate() {
        state.line(line).map_err(|message| ParseError {
            line: index + 1,
            message,
        })?;
    }
    for family in state.families.values() {
        if family.kind == MetricType::Histogram {
            check_histogram(family).map_err(|message| ParseError { line: 0, message })?;
        }
    }
    Ok(state.families)
}

#[derive(Default)]
struct ParseState {
    families: BTreeMap<String, Family>,
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
        let families = &self.families;
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
