//! Gauges by `worker` that the gateway keeps and renders itself, so that a worker's series can
//! leave `/metrics` when the worker does: the Prometheus exporter cannot remove one series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// Gauges labelled by `worker` (`name{worker="…"} value`), kept apart from the `metrics`
/// facade so that [`remove`](Self::remove) can take a worker's series off `/metrics`.
///
/// A gateway's `/metrics` renders the process's store, [`WorkerGauges::global`], after the
/// exporter's series, each name as one family with its `# TYPE` line (a gauge, or a counter
/// set with [`set_total`](Self::set_total)), in name and worker order. A name kept here must
/// not also be recorded through the `metrics` facade (the output would hold two families of
/// that name), and must be a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`);
/// worker labels may hold any text (escaped on render).
///
/// ```
/// use dynamo_openai::WorkerGauges;
///
/// let gauges = WorkerGauges::global();
/// gauges.set("example_worker_queue", "7/0", 3.0);
/// gauges.remove("7/0"); // every series of worker 7/0 leaves /metrics
/// ```
#[derive(Debug, Default)]
pub struct WorkerGauges {
    /// Each family by name.
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// One name's series, by worker, and whether they are counters.
#[derive(Debug, Default)]
struct Family {
    counter: bool,
    series: BTreeMap<String, f64>,
}

impl WorkerGauges {
    /// The store that every [`Gateway`](crate::Gateway)'s `/metrics` renders (when it has a
    /// recorder's handle, [`Gateway::with_metrics`](crate::Gateway::with_metrics)).
    pub fn global() -> &'static WorkerGauges {
        static GLOBAL: OnceLock<WorkerGauges> = OnceLock::new();
        GLOBAL.get_or_init(WorkerGauges::default)
    }

    /// Set the series `name{worker="worker"}` to `value`, adding it if it is not there.
    pub fn set(&self, name: &'static str, worker: &str, value: f64) {
        self.put(name, worker, value, false);
    }

    /// Set the counter `name{worker="worker"}` to `value`: a total that the worker counts
    /// itself and reports (as its preemptions since it started), rendered with `# TYPE name
    /// counter`. A worker that restarts starts again from 0, which Prometheus reads as a
    /// counter reset.
    pub fn set_total(&self, name: &'static str, worker: &str, value: f64) {
        self.put(name, worker, value, true);
    }

    fn put(&self, name: &'static str, worker: &str, value: f64, counter: bool) {
        debug_assert!(
            is_metric_name(name),
            "not a Prometheus metric name: {name:?}"
        );
        let mut families = self.families.lock();
        let family = families.entry(name).or_default();
        family.counter = counter;
        match family.series.get_mut(worker) {
            Some(kept) => *kept = value,
            None => {
                family.series.insert(worker.to_owned(), value);
            }
        }
    }

    /// Remove every series of `worker`; whether it had any.
    pub fn remove(&self, worker: &str) -> bool {
        let mut families = self.families.lock();
        let mut removed = false;
        families.retain(|_, family| {
            removed |= family.series.remove(worker).is_some();
            !family.series.is_empty()
        });
        removed
    }

    /// Remove the series `name{worker="worker"}` alone (the worker's other series stay);
    /// whether it was there.
    pub fn remove_series(&self, name: &str, worker: &str) -> bool {
        let mut families = self.families.lock();
        let Some(family) = families.get_mut(name) else {
            return false;
        };
        let removed = family.series.remove(worker).is_some();
        if family.series.is_empty() {
            families.remove(name);
        }
        removed
    }

    /// Append the series in the Prometheus text format to `out`: per name a `# TYPE` line,
    /// its series, and a blank line, as the exporter writes its own.
    pub(crate) fn render_into(&self, out: &mut String) {
        let families = self.families.lock();
        for (name, family) in families.iter() {
            let kind = if family.counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (worker, value) in &family.series {
                out.push_str(name);
                out.push_str("{worker=\"");
                escape_label_value(worker, out);
                out.push_str("\"} ");
                write_value(*value, out);
                out.push('\n');
            }
            out.push('\n');
        }
    }
}

/// Whether `name` is a Prometheus metric name.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `value` as the text format writes a label value: `\`, `"` and line feeds escaped.
fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `value` as the text format writes a sample: `NaN`, `+Inf`, `-Inf`, else the shortest
/// decimal that reads back the same.
fn write_value(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(gauges: &WorkerGauges) -> String {
        let mut out = String::new();
        gauges.render_into(&mut out);
        out
    }

    #[test]
    fn renders_one_family_per_name_in_name_and_worker_order() {
        let gauges = WorkerGauges::default();
        gauges.set("b_blocks", "2/0", 64.0);
        gauges.set("a_requests", "2/0", 1.0);
        gauges.set("b_blocks", "1/0", 0.5);
        gauges.set("b_blocks", "2/0", 32.0);
        assert_eq!(
            rendered(&gauges),
            "# TYPE a_requests gauge\n\
             a_requests{worker=\"2/0\"} 1\n\
             \n\
             # TYPE b_blocks gauge\n\
             b_blocks{worker=\"1/0\"} 0.5\n\
             b_blocks{worker=\"2/0\"} 32\n\
             \n"
        );
    }

    #[test]
    fn a_total_renders_as_a_counter() {
        let gauges = WorkerGauges::default();
        gauges.set_total("c_preemptions_total", "1/0", 3.0);
        gauges.set_total("c_preemptions_total", "1/0", 5.0);
        assert_eq!(
            rendered(&gauges),
            "# TYPE c_preemptions_total counter\n\
             c_preemptions_total{worker=\"1/0\"} 5\n\
             \n"
        );
    }

    #[test]
    fn remove_takes_every_series_of_a_worker_and_empty_families() {
        let gauges = WorkerGauges::default();
        gauges.set("a_requests", "1/0", 1.0);
        gauges.set("b_blocks", "1/0", 2.0);
        gauges.set("b_blocks", "2/0", 3.0);
        assert!(gauges.remove("1/0"));
        assert!(!gauges.remove("1/0"));
        assert_eq!(
            rendered(&gauges),
            "# TYPE b_blocks gauge\nb_blocks{worker=\"2/0\"} 3\n\n"
        );
        assert!(gauges.remove("2/0"));
        assert_eq!(rendered(&gauges), "");
    }

    #[test]
    fn remove_series_takes_one_series_and_its_family_once_empty() {
        let gauges = WorkerGauges::default();
        gauges.set("a_requests", "1/0", 1.0);
        gauges.set("b_blocks", "1/0", 2.0);
        assert!(gauges.remove_series("a_requests", "1/0"));
        assert!(!gauges.remove_series("a_requests", "1/0"));
        assert!(!gauges.remove_series("c_unknown", "1/0"));
        assert_eq!(
            rendered(&gauges),
            "# TYPE b_blocks gauge\nb_blocks{worker=\"1/0\"} 2\n\n"
        );
    }

    #[test]
    fn escapes_label_values_and_writes_special_values() {
        let gauges = WorkerGauges::default();
        gauges.set("g", "a\"b\\c\nd", f64::NAN);
        gauges.set("g", "inf", f64::INFINITY);
        gauges.set("g", "minus", f64::NEG_INFINITY);
        gauges.set("g", "small", 1e-7);
        assert_eq!(
            rendered(&gauges),
            "# TYPE g gauge\n\
             g{worker=\"a\\\"b\\\\c\\nd\"} NaN\n\
             g{worker=\"inf\"} +Inf\n\
             g{worker=\"minus\"} -Inf\n\
             g{worker=\"small\"} 0.0000001\n\
             \n"
        );
    }

    #[test]
    fn metric_names() {
        for name in ["dynamo_worker_active_requests", "_a:b", "a1"] {
            assert!(is_metric_name(name), "{name}");
        }
        for name in ["", "1a", "a-b", "a b", "é"] {
            assert!(!is_metric_name(name), "{name}");
        }
    }
}
