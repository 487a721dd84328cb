//! `GET /_clusterc/<id>/metrics`: what an operator graphs and alerts on, in Prometheus' text
//! format. Counted by the cluster task from the core's events and the writer thread's timings;
//! nothing here changes what the node does.

use std::fmt::Write;
use std::time::Duration;

use clusterconsensus::{Event, Participant, Payload, Role, StateMachine};

/// Upper bounds (seconds) of the write-latency histogram: an fdatasync on a good disk is
/// 0.1-0.3 ms, a slow or overloaded one shows up in the top buckets.
const WRITE_BUCKETS: [f64; 9] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
];

/// Counters of one cluster since the process started.
#[derive(Debug, Default)]
pub struct Metrics {
    committed_entries: u64,
    committed_changes: u64,
    elections_won: u64,
    mastership_lost: u64,
    snapshots_installed: u64,
    peer_call_failures: u64,
    /// Per bucket of [`WRITE_BUCKETS`], then the count above the last one.
    write_buckets: [u64; WRITE_BUCKETS.len() + 1],
    write_seconds: f64,
    writes: u64,
}

impl Metrics {
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::Committed { payload, .. } => {
                self.committed_entries += 1;
                if let Payload::Changes(c) = payload {
                    self.committed_changes += c.len() as u64;
                }
            }
            Event::BecameMaster { .. } => self.elections_won += 1,
            Event::LostMastership { .. } => self.mastership_lost += 1,
            Event::SnapshotInstalled { .. } => self.snapshots_installed += 1,
            Event::MembersChanged { .. } | Event::Joined | Event::Removed => {}
        }
    }

    /// A call to a peer that got no answer (refused, timed out, undecodable).
    pub fn on_peer_call_failed(&mut self) {
        self.peer_call_failures += 1;
    }

    /// One durable write (a `Persist`: write and fdatasync) took `d`.
    pub fn on_write(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = WRITE_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(WRITE_BUCKETS.len());
        self.write_buckets[i] += 1;
        self.write_seconds += s;
        self.writes += 1;
    }

    /// The exposition of this cluster's metrics and of `p`'s state.
    pub fn render<S: StateMachine>(&self, p: &Participant<S>) -> String {
        let c = p.cluster();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP clusterconsensus_{name} {help}");
            let _ = writeln!(out, "# TYPE clusterconsensus_{name} {kind}");
            let _ = writeln!(out, "clusterconsensus_{name}{{cluster=\"{c}\"}} {value}");
        };
        let gauges: [(&str, &str, u64); 5] = [
            ("commit_index", "Highest log seq applied here.", p.commit()),
            (
                "instance",
                "Highest instance (ballot) promised.",
                p.instance(),
            ),
            (
                "is_master",
                "1 if this node is the master.",
                u64::from(p.role() == Role::Master),
            ),
            (
                "is_serving_master",
                "1 if this node is the master and takes submits.",
                u64::from(p.is_serving_master()),
            ),
            (
                "members",
                "Members in the committed member list.",
                p.members().len() as u64,
            ),
        ];
        for (name, help, v) in gauges {
            metric(name, "gauge", help, v.to_string());
        }
        let counters = [
            (
                "committed_entries_total",
                "Log entries applied here.",
                self.committed_entries,
            ),
            (
                "committed_changes_total",
                "Changes applied here.",
                self.committed_changes,
            ),
            (
                "elections_won_total",
                "Times this node became master.",
                self.elections_won,
            ),
            (
                "mastership_lost_total",
                "Times this node stopped being master.",
                self.mastership_lost,
            ),
            (
                "snapshots_installed_total",
                "Snapshots installed from a master.",
                self.snapshots_installed,
            ),
            (
                "peer_call_failures_total",
                "Calls to peers that got no answer.",
                self.peer_call_failures,
            ),
        ];
        for (name, help, v) in counters {
            metric(name, "counter", help, v.to_string());
        }
        let name = "clusterconsensus_write_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Durable writes (write and fdatasync), by duration."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in WRITE_BUCKETS.iter().zip(self.write_buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{cluster=\"{c}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{cluster=\"{c}\",le=\"+Inf\"}} {}",
            self.writes
        );
        let _ = writeln!(out, "{name}_sum{{cluster=\"{c}\"}} {}", self.write_seconds);
        let _ = writeln!(out, "{name}_count{{cluster=\"{c}\"}} {}", self.writes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_app::Nothing;
    use clusterconsensus::Config;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
    }

    #[test]
    fn counts_events_and_writes_and_renders_them_with_the_state() {
        let mut p = Participant::new(Config::new("c1", "http://a"), Nothing).unwrap();
        p.bootstrap(0).unwrap();
        while let Some(o) = p.poll_output() {
            if let clusterconsensus::Output::Persist(x) = o {
                p.persisted(0, x.id);
            }
        }
        let mut m = Metrics::default();
        m.on_event(&Event::BecameMaster { instance: 1 });
        m.on_event(&Event::Committed {
            seq: 1,
            payload: Payload::Changes(vec!["a".into(), "b".into()].into()),
        });
        m.on_event(&Event::Committed {
            seq: 2,
            payload: Payload::Add("http://b".into()),
        });
        m.on_peer_call_failed();
        m.on_write(Duration::from_micros(80));
        m.on_write(Duration::from_micros(300));
        m.on_write(Duration::from_secs(1));
        let t = m.render(&p);
        let at = |prefix: &str| line(&t, prefix).to_string();
        assert_eq!(
            at("clusterconsensus_is_master{"),
            "clusterconsensus_is_master{cluster=\"c1\"} 1"
        );
        assert_eq!(
            at("clusterconsensus_members{"),
            "clusterconsensus_members{cluster=\"c1\"} 1"
        );
        assert_eq!(
            at("clusterconsensus_committed_entries_total{"),
            "clusterconsensus_committed_entries_total{cluster=\"c1\"} 2"
        );
        assert_eq!(
            at("clusterconsensus_committed_changes_total{"),
            "clusterconsensus_committed_changes_total{cluster=\"c1\"} 2"
        );
        assert_eq!(
            at("clusterconsensus_elections_won_total{"),
            "clusterconsensus_elections_won_total{cluster=\"c1\"} 1"
        );
        assert_eq!(
            at("clusterconsensus_peer_call_failures_total{"),
            "clusterconsensus_peer_call_failures_total{cluster=\"c1\"} 1"
        );
        // Cumulative buckets: 80 us in the first, 300 us from the 0.0005 bucket on, 1 s only
        // in +Inf.
        assert_eq!(
            at("clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.0001\"}"),
            "clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.0001\"} 1"
        );
        assert_eq!(
            at("clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.00025\"}"),
            "clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.00025\"} 1"
        );
        assert_eq!(
            at("clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.0005\"}"),
            "clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.0005\"} 2"
        );
        assert_eq!(
            at("clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.25\"}"),
            "clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"0.25\"} 2"
        );
        assert_eq!(
            at("clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"+Inf\"}"),
            "clusterconsensus_write_seconds_bucket{cluster=\"c1\",le=\"+Inf\"} 3"
        );
        assert_eq!(
            at("clusterconsensus_write_seconds_count{"),
            "clusterconsensus_write_seconds_count{cluster=\"c1\"} 3"
        );
        // Every sample line has a HELP and a TYPE before it.
        assert_eq!(t.lines().filter(|l| l.starts_with("# TYPE")).count(), 12);
    }
}
