//! `tributary status`: the figures `tributary up` shows, for a running stack — records per
//! topic, consumer lag per service group, Parquet files in the lake, dead letters, training
//! requests — printed once, or refreshed with `--watch`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tributary_core::lake::LakeConfig;
use tributary_core::schema::catalog::Catalog;

use crate::config::CliConfig;
use crate::display::{self, Extra, Screen};
use crate::figures::Probe;
use crate::up::file_url;

/// Prints the figures once (or until `shutdown` with `watch`). `Ok(false)` when the broker
/// could not be reached.
pub(crate) async fn run(
    catalog: &Catalog,
    config: &CliConfig,
    data: &Path,
    watch: bool,
    shutdown: CancellationToken,
    out: &mut dyn Write,
) -> Result<bool> {
    // The configured lake, else the data folder's when there is one.
    let lake = match &config.lake {
        Some(lake) => Some(lake.clone()),
        None => {
            let dir = data.join("lake");
            match dir.canonicalize() {
                Ok(dir) if dir.is_dir() => Some(LakeConfig::new(file_url(&dir)?)),
                _ => None,
            }
        }
    };
    let mut probe = Probe::new(catalog, &config.kafka, &config.registry, lake.as_ref())?;
    let extra = Extra {
        header: vec![format!(
            "broker {}   registry {}   lake {}",
            config.kafka.bootstrap_servers,
            config.registry.url,
            lake.as_ref().map(|l| l.url.as_str()).unwrap_or("-")
        )],
        ..Extra::default()
    };
    if !watch {
        let figures = probe.sample().await;
        for line in display::table(&figures, None, &extra) {
            writeln!(out, "{line}")?;
        }
        return Ok(figures.broker_error.is_none());
    }
    let mut screen = Screen::new(std::io::stdout().is_terminal(), Duration::from_secs(5));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(true),
            _ = tick.tick() => {}
        }
        let figures = probe.sample().await;
        screen.show(out, &figures, &extra, false)?;
    }
}
