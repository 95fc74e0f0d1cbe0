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
