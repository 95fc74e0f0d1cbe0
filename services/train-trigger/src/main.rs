use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::args_os().nth(1).map(std::path::PathBuf::from);
    let config =
        tributary_train_trigger::Config::load(file.as_deref()).context("load configuration")?;
    tributary_core::telemetry::init_tracing(&config.telemetry)?;
    let shutdown = tributary_core::shutdown::on_signals()?;
    tributary_train_trigger::run(config, shutdown).await
}
