//! Acknowledgement: the slot moved on to a position the broker acknowledged, and the metric.

use anyhow::Context;

use crate::postgres::SourceContext;
use crate::postgres::pgoutput;

/// Reports the position the slot was moved on to.
pub(super) fn acknowledged(ctx: &SourceContext, lsn: u64) {
    ctx.metrics
        .source_acknowledged_lsn
        .get_or_create(&crate::metrics::SourceLabel {
            source: ctx.decl.name.clone(),
        })
        .set(i64::try_from(lsn).unwrap_or(i64::MAX));
}

/// Moves the slot on to `lsn`: the changes before it were acknowledged by the broker.
pub(super) async fn advance(
    client: &tokio_postgres::Client,
    slot: &str,
    lsn: u64,
) -> anyhow::Result<()> {
    client
        .query_one(
            "SELECT end_lsn::text FROM pg_replication_slot_advance($1::text::name, $2::text::pg_lsn)",
            &[&slot, &pgoutput::format_lsn(lsn)],
        )
        .await
        .with_context(|| format!("acknowledge {} to the slot {slot}", pgoutput::format_lsn(lsn)))?;
    Ok(())
}
