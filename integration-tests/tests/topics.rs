//! Topic administration from the catalog, through a real broker.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tributary_core::bus::{TopicOutcome, create_topics};
use tributary_core::schema::catalog::Catalog;
use tributary_integration_tests::{Broker, unique};

#[tokio::test]
async fn creates_the_catalog_topics_once() -> Result<()> {
    let broker = Broker::start()?;
    let catalog = Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"))?;
    // A random suffix keeps the names apart from any other test's on the same broker.
    let suffix = unique("x");
    let mut specs = catalog.topic_specs(1);
    for s in &mut specs {
        s.name = format!("{}.{suffix}", s.name);
    }

    let first = create_topics(&broker.kafka(), &specs).await?;
    assert_eq!(first.len(), specs.len());
    assert!(
        first.iter().all(|(_, o)| *o == TopicOutcome::Created),
        "{first:?}"
    );
    let again = create_topics(&broker.kafka(), &specs).await?;
    assert!(
        again.iter().all(|(_, o)| *o == TopicOutcome::Existed),
        "{again:?}"
    );

    let consumer: BaseConsumer = broker.kafka().client_config().create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let partitions: BTreeMap<&str, usize> = metadata
        .topics()
        .iter()
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    for spec in &specs {
        assert_eq!(
            partitions.get(spec.name.as_str()).copied(),
            Some(spec.partitions as usize),
            "{}",
            spec.name
        );
    }
    assert!(specs.iter().any(|s| s.name.starts_with("dlq.archive.")));
    Ok(())
}
