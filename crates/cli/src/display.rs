//! Showing [`Figures`]: a table redrawn in place on a terminal, or one summary line at a time
//! when the output is a file or a pipe.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::figures::{Figures, REQUESTS_TOPIC};

/// Extra lines and summary fields from the caller (the stack's addresses, the demo's counts).
#[derive(Debug, Default, Clone)]
pub(crate) struct Extra {
    /// Lines printed above the figures.
    pub(crate) header: Vec<String>,
    /// Lines printed below them.
    pub(crate) footer: Vec<String>,
    /// `name=value` fields appended to a summary line.
    pub(crate) summary: Vec<String>,
}

/// Where figures go: a terminal (redrawn) or a stream of summary lines.
#[derive(Debug)]
pub(crate) struct Screen {
    tty: bool,
    /// Lines drawn last time (moved over before redrawing).
    drawn: usize,
    /// The previous sample, for rates.
    previous: Option<Figures>,
    /// When the last summary line was printed.
    last_line: Option<Instant>,
    /// Time between summary lines.
    line_every: Duration,
}

impl Screen {
    pub(crate) fn new(tty: bool, line_every: Duration) -> Self {
        Self {
            tty,
            drawn: 0,
            previous: None,
            last_line: None,
            line_every,
        }
    }

    /// Shows a sample: redraws the table on a terminal; otherwise prints a summary line when
    /// `line_every` has passed since the last one (or `force`).
    pub(crate) fn show(
        &mut self,
        out: &mut dyn Write,
        figures: &Figures,
        extra: &Extra,
        force: bool,
    ) -> std::io::Result<()> {
        if self.tty {
            let lines = table(figures, self.previous.as_ref(), extra);
            if self.drawn > 0 {
                // Up to the first line drawn, then overwrite line by line.
                write!(out, "\x1b[{}A\r", self.drawn)?;
            }
            for line in &lines {
                writeln!(out, "{line}\x1b[K")?;
            }
            write!(out, "\x1b[J")?;
            self.drawn = lines.len();
        } else if force
            || self
                .last_line
                .is_none_or(|t| t.elapsed() >= self.line_every)
        {
            writeln!(out, "{}", summary(figures, extra))?;
            self.last_line = Some(Instant::now());
        }
        out.flush()?;
        self.previous = Some(figures.clone());
        Ok(())
    }
}

/// A number with thousands separators.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn or_dash(n: Option<i64>) -> String {
    n.map(thousands).unwrap_or_else(|| "-".into())
}

/// The table: topics with records and rate, lag per group, lake, dead letters, requests.
pub(crate) fn table(figures: &Figures, previous: Option<&Figures>, extra: &Extra) -> Vec<String> {
    let mut lines = extra.header.clone();
    if let Some(e) = &figures.broker_error {
        lines.push(format!("broker: unreachable, is the stack running? ({e})"));
    }
    let groups: Vec<String> = figures
        .lag
        .iter()
        .map(|(service, group, _)| format!("{service} ({group})"))
        .collect();
    let width = figures
        .topics
        .iter()
        .map(|(t, _)| t.len())
        .chain(groups.iter().map(String::len))
        .max()
        .unwrap_or(10)
        .max(24);
    let rates = previous.filter(|p| figures.at > p.at);
    lines.push(String::new());
    lines.push(format!(
        "{:<width$} {:>12} {:>9}",
        "topic",
        "records",
        if rates.is_some() { "per s" } else { "" }
    ));
    for (topic, n) in figures
        .topics
        .iter()
        .filter(|(t, _)| !t.starts_with("dlq."))
    {
        let rate = match (rates, n) {
            (Some(p), Some(now)) => {
                let seconds = figures.at.duration_since(p.at).as_secs_f64();
                let before = p.records(topic);
                format!("{:.1}", (now - before).max(0) as f64 / seconds)
            }
            _ => String::new(),
        };
        lines.push(format!("{topic:<width$} {:>12} {rate:>9}", or_dash(*n)));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<width$} {:>12}",
        "consumer lag (group)", "records"
    ));
    for (label, (_, _, lag)) in groups.iter().zip(&figures.lag) {
        lines.push(format!("{label:<width$} {:>12}", or_dash(*lag)));
    }
    lines.push(String::new());
    let dead: Vec<String> = figures
        .dead_letters()
        .map(|(t, n)| format!("{} {}", t.trim_start_matches("dlq."), or_dash(n)))
        .collect();
    lines.push(format!(
        "dead letters: {}",
        if dead.is_empty() {
            "-".into()
        } else {
            dead.join("  ")
        }
    ));
    lines.push(format!(
        "files archived (Parquet in the lake): {}   training requests: {}   registry subjects: {}",
        figures
            .parquet_files
            .map(|n| thousands(n as i64))
            .unwrap_or_else(|| "-".into()),
        or_dash(
            figures
                .topics
                .iter()
                .find(|(t, _)| t == REQUESTS_TOPIC)
                .and_then(|(_, n)| *n)
        ),
        figures
            .subjects
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into()),
    ));
    lines.extend(extra.footer.iter().cloned());
    lines
}

/// One line: `records a=1 b=2 | lag transform=0 ... | parquet=3 | dlq ... | train.requests=0`.
pub(crate) fn summary(figures: &Figures, extra: &Extra) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &figures.broker_error {
        parts.push(format!("broker unreachable: {e}"));
    }
    let records: Vec<String> = figures
        .topics
        .iter()
        .filter(|(t, _)| !t.starts_with("dlq.") && t != REQUESTS_TOPIC)
        .map(|(t, n)| format!("{t}={}", n.map(|n| n.to_string()).unwrap_or("-".into())))
        .collect();
    parts.push(format!("records {}", records.join(" ")));
    let lag: Vec<String> = figures
        .lag
        .iter()
        .map(|(s, _, n)| format!("{s}={}", n.map(|n| n.to_string()).unwrap_or("-".into())))
        .collect();
    parts.push(format!("lag {}", lag.join(" ")));
    parts.push(format!(
        "parquet_files={}",
        figures
            .parquet_files
            .map(|n| n.to_string())
            .unwrap_or("-".into())
    ));
    let dead: Vec<String> = figures
        .dead_letters()
        .map(|(t, n)| format!("{t}={}", n.map(|n| n.to_string()).unwrap_or("-".into())))
        .collect();
    parts.push(dead.join(" "));
    parts.push(format!(
        "{REQUESTS_TOPIC}={}",
        figures.records(REQUESTS_TOPIC)
    ));
    if !extra.summary.is_empty() {
        parts.push(extra.summary.join(" "));
    }
    format!(
        "{} {}",
        chrono::Utc::now().format("%H:%M:%S"),
        parts.join(" | ")
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sample(web: i64, at: Instant) -> Figures {
        Figures {
            at,
            topics: vec![
                ("raw.web_events".into(), Some(web)),
                ("train.requests".into(), Some(0)),
                ("dlq.transform".into(), Some(3)),
                ("files.products".into(), None),
            ],
            lag: vec![("archive", "tributary-archive".into(), Some(12))],
            parquet_files: Some(7),
            subjects: Some(9),
            broker_error: None,
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
    }

    #[test]
    fn table_shows_counts_rates_lag_and_dead_letters() {
        let t0 = Instant::now();
        let before = sample(100, t0);
        let now = sample(300, t0 + Duration::from_secs(2));
        let lines = table(&now, Some(&before), &Extra::default()).join("\n");
        assert!(lines.contains("raw.web_events"), "{lines}");
        assert!(lines.contains("100.0"), "{lines}");
        assert!(lines.contains("archive (tributary-archive)"), "{lines}");
        assert!(lines.contains("dead letters: transform 3"), "{lines}");
        assert!(
            lines.contains("files archived (Parquet in the lake): 7"),
            "{lines}"
        );
        let line = summary(&now, &Extra::default());
        assert!(line.contains("raw.web_events=300"), "{line}");
        assert!(line.contains("files.products=-"), "{line}");
        assert!(line.contains("lag archive=12"), "{line}");
        assert!(line.contains("parquet_files=7"), "{line}");
        assert!(line.contains("dlq.transform=3"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_pipe_gets_a_line_only_every_so_often() {
        let mut screen = Screen::new(false, Duration::from_secs(3600));
        let mut out = Vec::new();
        let f = sample(1, Instant::now());
        screen.show(&mut out, &f, &Extra::default(), false).unwrap();
        screen.show(&mut out, &f, &Extra::default(), false).unwrap();
        assert_eq!(String::from_utf8(out.clone()).unwrap().lines().count(), 1);
        screen.show(&mut out, &f, &Extra::default(), true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    }
}
