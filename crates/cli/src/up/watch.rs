//! What `tributary up` shows once the stack runs: the banner, the figures every second, the
//! summary at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use tributary_core::lake::LakeConfig;

use super::broker::BrokerKind;
use super::plan::{Layout, Ports};
use super::stack::{Stack, StackInputs};
use super::{demo, shop_db};
use crate::display::{Extra, Screen};
use crate::figures::Probe;

/// Shows the figures every second (redrawn on a terminal, a line every few seconds otherwise)
/// and who went down, until `shutdown`; then the summary. `Ok(true)` when a process exited on
/// its own meanwhile.
pub(super) async fn watch(
    stack: &mut Stack,
    inputs: &StackInputs<'_>,
    counts: &demo::DemoCounts,
    started: Instant,
    shutdown: &CancellationToken,
) -> Result<bool> {
    let (options, layout) = (inputs.options, inputs.layout);
    let cli_config = inputs.cli_config();
    let tty = std::io::stdout().is_terminal();
    let mut probe = Probe::new(
        inputs.catalog,
        &cli_config.kafka,
        &cli_config.registry,
        Some(&LakeConfig::new(layout.lake_url()?)),
    )?;
    let mut screen = Screen::new(tty, Duration::from_secs(5));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut crashed = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(broker) = stack.broker.as_mut() {
            broker.check_running()?;
        }
        let mut down = Vec::new();
        for p in stack
            .registry
            .iter_mut()
            .chain(stack.services.iter_mut().map(|(_, p)| p))
        {
            if let Some(status) = p.exit_status() {
                down.push(format!(
                    "{} exited ({status}; see {})",
                    p.name,
                    p.log.display()
                ));
            }
        }
        if !down.is_empty() && !crashed {
            warn!(processes = ?down, "a process of the stack exited");
            crashed = true;
        }
        let figures = probe.sample().await;
        let mut extra = Extra::default();
        if tty {
            extra.header = vec![format!(
                "tributary up — {} — up {}{}",
                layout.data.display(),
                clock(started.elapsed()),
                if options.demo {
                    " — demo traffic on"
                } else {
                    ""
                }
            )];
            extra.footer.push(String::new());
            if options.demo {
                extra.footer.push(format!(
                    "demo sent: {}",
                    counts.summary().trim_start_matches("demo ")
                ));
            }
            extra.footer.extend(down.iter().cloned());
            extra.footer.push(format!(
                "Ctrl-C stops everything (services first, broker last); logs in {}",
                layout.logs().display()
            ));
        } else {
            if options.demo {
                extra.summary.push(counts.summary());
            }
            extra
                .summary
                .extend(down.iter().map(|d| format!("DOWN {d}")));
        }
        let mut stdout = std::io::stdout().lock();
        screen.show(&mut stdout, &figures, &extra, false)?;
    }
    let figures = probe.sample().await;
    let mut extra = Extra::default();
    if options.demo {
        extra.summary.push(counts.summary());
    }
    println!();
    println!("{}", crate::display::summary(&figures, &extra));
    Ok(crashed)
}

/// The lines printed once everything runs.
pub(super) fn banner(
    broker: BrokerKind,
    layout: &Layout,
    ports: &Ports,
    demo: Option<Option<&shop_db::ShopDb>>,
    took: Duration,
) -> Vec<String> {
    let mut lines = vec![
        format!("the stack is up (in {:.0} s):", took.as_secs_f64()),
        format!("  broker      {} ({})", ports.bootstrap(), broker.label()),
        format!(
            "  registry    {}   user admin, password in {}",
            ports.registry_url(),
            layout.registry_admin_password().display()
        ),
        // The key's file, not the key: terminals are recorded, shared and scrolled back.
        format!(
            "  ingest      {}/v1/topics/<topic>/records   X-API-Key: $(cat {})",
            ports.ingest_url(),
            layout.api_key().display()
        ),
        format!(
            "  features    {}/v1/features/user_activity/<user_id>   the same key",
            ports.feature_url()
        ),
        format!("  lake        {}", layout.lake().display()),
        format!(
            "  landing     {} (CSV, NDJSON, Parquet, Avro)",
            layout.products().display()
        ),
        format!(
            "  status      tributary status --config {}",
            layout.stack_file().display()
        ),
    ];
    if let Some(shop_db) = demo {
        lines.push(
            "  demo        web and mobile events every second, a product file every 20 s".into(),
        );
        if let Some(db) = shop_db {
            lines.push(format!(
                "  shop db     database {} on {} (slot {}): orders and customers every second, \
                 captured into db.shop.*",
                db.database, db.server, db.slot
            ));
        }
    }
    lines.push(String::new());
    lines
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
