//! The harness's own services: each test gets its own PostgreSQL database, dropped afterwards.

use anyhow::Result;
use tributary_integration_tests::TestDatabase;

#[tokio::test]
async fn each_test_gets_a_fresh_database_that_is_dropped() -> Result<()> {
    let a = TestDatabase::create().await?;
    let b = TestDatabase::create().await?;
    assert_ne!(a.name, b.name);
    let ca = a.connect().await?;
    ca.batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
        .await?;
    let n: i64 = ca.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(n, 2);
    // The other database does not see it.
    let cb = b.connect().await?;
    let exists: bool = cb
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 't')",
            &[],
        )
        .await?
        .get(0);
    assert!(!exists);
    drop((ca, cb));

    let name = a.name.clone();
    drop(a);
    drop(b);
    let admin = tokio_postgres::connect(
        &tributary_integration_tests::postgres_base(),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(admin.1);
    let left: i64 = admin
        .0
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await?
        .get(0);
    assert_eq!(left, 0, "database {name} was dropped");
    Ok(())
}

/// The harness, `deploy/local/install-kafka.sh` (which reads the pom) and docker-compose.yml run
/// one Apache Kafka version.
#[test]
fn one_kafka_version_is_pinned_everywhere() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pom = std::fs::read_to_string(root.join("deploy/local/kafka/pom.xml"))?;
    let pinned = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .unwrap_or_default();
    assert_eq!(pinned, tributary_integration_tests::KAFKA_VERSION);
    let compose = std::fs::read_to_string(root.join("docker-compose.yml"))?;
    assert!(
        compose.contains(&format!("image: apache/kafka:{pinned}")),
        "docker-compose.yml runs apache/kafka:{pinned}"
    );
    Ok(())
}

/// The broker `TRIBUTARY_TEST_BROKER` names starts, keeps what it acknowledged across a SIGKILL
/// and a restart on the same data, and says which it is.
#[tokio::test]
async fn the_test_broker_keeps_its_records_across_a_kill() -> Result<()> {
    use tributary_core::bus::{BusMetrics, OutboundRecord, Producer, TopicSpec, create_topics};
    use tributary_integration_tests::{Broker, BrokerKind, read_all, unique};

    let mut broker = Broker::start()?;
    assert_eq!(broker.kind(), BrokerKind::from_env()?);
    let topic = unique("t-harness");
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 2,
        config: Vec::new(),
    };
    create_topics(&broker.kafka(), &[spec]).await?;
    let producer = Producer::new(&broker.kafka(), BusMetrics::default())?;
    let records: Vec<OutboundRecord> = (0..100)
        .map(|i| OutboundRecord::new(&topic, Some(format!("k{i}").into_bytes()), vec![i as u8]))
        .collect();
    producer.send_all(&records).await?;
    drop(producer);

    broker.restart()?;
    let read = read_all(&broker, &topic, 100, std::time::Duration::from_secs(30))?;
    assert_eq!(read.len(), 100, "records after a kill and a restart");
    Ok(())
}
