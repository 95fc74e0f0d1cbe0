//! The `tributary` command as a subprocess, against a real broker and the registry service:
//! `topics apply` on a fresh cluster, again with nothing to change, with partitions and settings
//! changed in the catalog, and `schemas check` against the registry as schemas evolve.
//!
//! Each test has its own broker and registry, because the catalog's topic names are fixed. The
//! binaries are those of the workspace build (`cargo build -p tributary-cli -p tributary-registry`
//! or the workspace test command).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::{RegistryClient, Version};
use tributary_integration_tests::{Broker, BrokerKind, Registry, init_logs, workspace_bin};

/// What a run of the command printed.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }
}

/// A broker, a registry on it, and a copy of the repository's schemas folder to edit.
struct Stack {
    broker: Broker,
    registry: Registry,
    schemas: tempfile::TempDir,
}

impl Stack {
    fn start() -> Result<Self> {
        init_logs();
        let broker = Broker::start()?;
        let registry = Registry::start(&broker)?;
        let schemas = tempfile::tempdir()?;
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        for entry in std::fs::read_dir(&source)? {
            let path = entry?.path();
            if path.is_file() {
                let name = path.file_name().context("file name")?;
                std::fs::copy(&path, schemas.path().join(name))?;
            }
        }
        Ok(Self {
            broker,
            registry,
            schemas,
        })
    }

    fn dir(&self) -> &Path {
        self.schemas.path()
    }

    fn catalog(&self) -> Result<Catalog> {
        Ok(Catalog::load(self.dir())?)
    }

    /// Runs `tributary --schemas <copy> <args>` with the broker and registry in its environment.
    async fn run(&self, args: &[&str]) -> Result<Run> {
        let output = tokio::process::Command::new(tributary()?)
            .arg("--schemas")
            .arg(self.dir())
            .args(args)
            .env_remove("TRIBUTARY_CONFIG")
            .env(
                "TRIBUTARY__KAFKA__BOOTSTRAP_SERVERS",
                self.broker.bootstrap(),
            )
            .envs(self.registry.env())
            .output()
            .await
            .context("run tributary")?;
        Ok(Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout)?,
            stderr: String::from_utf8(output.stderr)?,
        })
    }

    /// Rewrites the catalog copy.
    fn edit_catalog(&self, edit: impl FnOnce(&str) -> String) -> Result<()> {
        let path = self.dir().join("catalog.toml");
        let text = std::fs::read_to_string(&path)?;
        let edited = edit(&text);
        assert_ne!(edited, text, "the edit changed nothing");
        std::fs::write(&path, edited)?;
        Ok(())
    }

    /// Partition count of every topic of the broker.
    fn partitions(&self) -> Result<BTreeMap<String, usize>> {
        let consumer: BaseConsumer = self.broker.kafka().client_config().create()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect())
    }

    /// Every setting of a topic as the broker reports it.
    async fn topic_config(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        let admin: AdminClient<DefaultClientContext> =
            self.broker.kafka().client_config().create()?;
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
            .await?;
        let resource = described
            .into_iter()
            .next()
            .context("no answer")?
            .map_err(|code| anyhow::anyhow!("describe configs of {topic}: {code}"))?;
        Ok(resource
            .entries
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect())
    }

    fn registry_client(&self) -> Result<RegistryClient> {
        self.registry.client()
    }
}

fn tributary() -> Result<PathBuf> {
    workspace_bin("tributary")
}

/// Every subject of the catalog (value, and key where there is one).
fn subjects(catalog: &Catalog) -> Vec<String> {
    catalog
        .topics
        .values()
        .flat_map(|t| {
            let key = t
                .key_schema_json
                .as_ref()
                .map(|_| format!("{}-key", t.name));
            std::iter::once(t.value_subject()).chain(key)
        })
        .collect()
}

fn plural(n: i32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Inserts `line` after the `name = "<topic>"` line of a catalog.
fn set_in_topic(catalog: &str, topic: &str, line: &str) -> String {
    let anchor = format!("name = \"{topic}\"\n");
    assert!(catalog.contains(&anchor), "no topic {topic} in the catalog");
    catalog.replacen(&anchor, &format!("{anchor}{line}\n"), 1)
}

#[tokio::test]
async fn apply_creates_every_topic_and_subject_then_changes_nothing() -> Result<()> {
    let stack = Stack::start()?;
    let catalog = stack.catalog()?;
    let specs = catalog.topic_specs(1);
    let subjects = subjects(&catalog);

    // A dry run says what it would do and does nothing.
    let dry = stack.run(&["topics", "apply", "--dry-run"]).await?;
    dry.assert_code(0);
    for spec in &specs {
        let line = format!(
            "would create topic {} ({} partition{})",
            spec.name,
            spec.partitions,
            plural(spec.partitions)
        );
        assert!(dry.lines().contains(&line.as_str()), "{line}\n{dry:#?}");
    }
    for subject in &subjects {
        let line = format!("would register {subject} version 1 (new subject)");
        assert!(dry.lines().contains(&line.as_str()), "{line}\n{dry:#?}");
    }
    let before = stack.partitions()?;
    assert!(
        specs.iter().all(|s| !before.contains_key(&s.name)),
        "{before:?}"
    );

    // The first apply creates every topic (dead-letter topics included), sets each subject's
    // compatibility level to the catalog's and registers every subject, one line each.
    let first = stack.run(&["topics", "apply"]).await?;
    first.assert_code(0);
    assert_eq!(
        first.lines().len(),
        specs.len() + 2 * subjects.len(),
        "{first:#?}"
    );
    for topic in catalog.topics.values() {
        let line = format!(
            "compatibility of {}: (registry default) -> {}",
            topic.value_subject(),
            topic.compatibility.as_str()
        );
        assert!(first.lines().contains(&line.as_str()), "{line}\n{first:#?}");
        let level = stack
            .registry_client()?
            .subject_level(&topic.value_subject())
            .await?;
        assert_eq!(level.as_deref(), Some(topic.compatibility.as_str()));
    }
    for spec in &specs {
        let line = format!(
            "created topic {} ({} partition{})",
            spec.name,
            spec.partitions,
            plural(spec.partitions)
        );
        assert!(first.lines().contains(&line.as_str()), "{line}\n{first:#?}");
    }
    assert!(specs.iter().any(|s| s.name == "dlq.transform"));
    let partitions = stack.partitions()?;
    for spec in &specs {
        assert_eq!(
            partitions.get(&spec.name).copied(),
            Some(spec.partitions as usize),
            "{}",
            spec.name
        );
    }
    let registry = stack.registry_client()?;
    for subject in &subjects {
        let latest = registry.subject_version(subject, Version::Latest).await?;
        assert_eq!(latest.version, 1, "{subject}");
        let line = format!("registered {subject} version 1 (id {})", latest.id);
        assert!(first.lines().contains(&line.as_str()), "{line}\n{first:#?}");
    }

    // The second apply finds nothing to change.
    let second = stack.run(&["topics", "apply"]).await?;
    second.assert_code(0);
    let lines = second.lines();
    assert_eq!(lines.last(), Some(&"nothing to change"), "{second:#?}");
    assert_eq!(lines.len(), subjects.len() + 1, "{second:#?}");
    for subject in &subjects {
        let id = registry.subject_version(subject, Version::Latest).await?.id;
        let line = format!("unchanged {subject} (id {id})");
        assert!(lines.contains(&line.as_str()), "{line}\n{second:#?}");
    }
    assert!(!second.stderr.contains("warning"), "{second:#?}");
    let dry = stack.run(&["topics", "apply", "--dry-run"]).await?;
    dry.assert_code(0);
    assert_eq!(dry.lines().last(), Some(&"nothing to change"), "{dry:#?}");

    // And every subject checks against what was registered.
    let check = stack.run(&["schemas", "check"]).await?;
    check.assert_code(0);
    for topic in catalog.topics.values() {
        let line = format!(
            "ok {} ({} against version 1)",
            topic.value_subject(),
            topic.compatibility.as_str()
        );
        assert!(check.lines().contains(&line.as_str()), "{line}\n{check:#?}");
    }
    Ok(())
}

#[tokio::test]
async fn apply_raises_partitions_sets_retention_and_never_lowers() -> Result<()> {
    let stack = Stack::start()?;
    stack.run(&["topics", "apply"]).await?.assert_code(0);
    let original = std::fs::read_to_string(stack.dir().join("catalog.toml"))?;

    // More partitions and a longer retention: planned exactly.
    stack.edit_catalog(|c| set_in_topic(c, "raw.web_events", "partitions = 6"))?;
    stack.edit_catalog(|c| set_in_topic(c, "raw.mobile_events", "retention = \"30d\""))?;
    let dry = stack.run(&["topics", "apply", "--dry-run"]).await?;
    dry.assert_code(0);
    let changes: Vec<&str> = dry
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("would"))
        .collect();
    assert_eq!(
        changes,
        [
            "would change config of raw.mobile_events: retention.ms 604800000 -> 2592000000",
            "would change partitions of raw.web_events: 3 -> 6",
        ],
        "{dry:#?}"
    );

    match stack.broker.kind() {
        BrokerKind::Kafka => {
            // Apache Kafka: both changes, and a cleanup policy too, are applied; a second run
            // finds nothing left to change, and the broker reports the new settings.
            stack.edit_catalog(|c| {
                set_in_topic(c, "raw.mobile_events", "cleanup_policy = \"compact\"")
            })?;
            let apply = stack.run(&["topics", "apply"]).await?;
            apply.assert_code(0);
            for line in [
                "partitions of raw.web_events: 3 -> 6",
                "config of raw.mobile_events: retention.ms 604800000 -> 2592000000",
                "config of raw.mobile_events: cleanup.policy delete -> compact",
            ] {
                assert!(apply.lines().contains(&line), "{line}\n{apply:#?}");
            }
            assert_eq!(stack.partitions()?.get("raw.web_events"), Some(&6));
            let settings = stack.topic_config("raw.mobile_events").await?;
            assert_eq!(
                settings.get("retention.ms").map(String::as_str),
                Some("2592000000")
            );
            assert_eq!(
                settings.get("cleanup.policy").map(String::as_str),
                Some("compact")
            );
            let again = stack.run(&["topics", "apply", "--dry-run"]).await?;
            again.assert_code(0);
            assert_eq!(
                again.lines().last(),
                Some(&"nothing to change"),
                "{again:#?}"
            );
        }
        BrokerKind::Tansu => {
            // Tansu 0.6.0 has neither CreatePartitions nor (non incremental) AlterConfigs, the
            // requests rdkafka 0.39 offers. The command fails naming the topic and the
            // request, and changes nothing.
            stack.edit_catalog(|_| set_in_topic(&original, "raw.web_events", "partitions = 6"))?;
            let raise = stack.run(&["topics", "apply"]).await?;
            raise.assert_code(1);
            assert!(
                raise.stderr.contains("raw.web_events")
                    && raise.stderr.contains("CreatePartitions")
                    && raise.stderr.contains("not supported by broker"),
                "{raise:#?}"
            );
            assert!(!raise.stdout.contains("raw.web_events"), "{raise:#?}");
            assert_eq!(stack.partitions()?.get("raw.web_events"), Some(&3));
        }
    }

    // Fewer partitions than the topic has: a warning, and nothing changes.
    // (On Kafka from the catalog as applied; on Tansu from the original, nothing was applied.)
    let applied = match stack.broker.kind() {
        BrokerKind::Kafka => std::fs::read_to_string(stack.dir().join("catalog.toml"))?,
        BrokerKind::Tansu => original.clone(),
    };
    stack.edit_catalog(|_| set_in_topic(&applied, "raw.mobile_events", "partitions = 1"))?;
    let lower = stack.run(&["topics", "apply"]).await?;
    lower.assert_code(0);
    assert_eq!(
        lower.lines().last(),
        Some(&"nothing to change"),
        "{lower:#?}"
    );
    assert!(
        lower.stderr.contains(
            "warning: partitions of raw.mobile_events: the catalog asks for 1 but the topic has 3"
        ),
        "{lower:#?}"
    );
    assert_eq!(stack.partitions()?.get("raw.mobile_events"), Some(&3));
    Ok(())
}

#[tokio::test]
async fn schemas_check_against_the_registry_gates_evolution() -> Result<()> {
    let stack = Stack::start()?;
    stack.run(&["topics", "apply"]).await?.assert_code(0);
    let web = stack.dir().join("raw.web_events-value.avsc");
    let v1 = std::fs::read_to_string(&web)?;
    let with_field = |field: &str| -> Result<String> {
        let mut schema: serde_json::Value = serde_json::from_str(&v1)?;
        let fields = schema["fields"].as_array_mut().context("fields")?;
        fields.push(serde_json::from_str(field)?);
        Ok(schema.to_string())
    };

    // A field with a default: compatible; apply registers version 2.
    let v2 = with_field(r#"{"name":"campaign","type":["null","string"],"default":null}"#)?;
    std::fs::write(&web, &v2)?;
    let check = stack.run(&["schemas", "check"]).await?;
    check.assert_code(0);
    assert!(
        check
            .lines()
            .contains(&"ok raw.web_events-value (BACKWARD against version 1)"),
        "{check:#?}"
    );
    let apply = stack.run(&["topics", "apply"]).await?;
    apply.assert_code(0);
    let latest = stack
        .registry_client()?
        .subject_version("raw.web_events-value", Version::Latest)
        .await?;
    assert_eq!(latest.version, 2);
    let registered = format!(
        "registered raw.web_events-value version 2 (id {})",
        latest.id
    );
    assert_eq!(
        apply
            .lines()
            .into_iter()
            .filter(|l| !l.starts_with("unchanged"))
            .collect::<Vec<_>>(),
        [registered.as_str()],
        "{apply:#?}"
    );

    // A field without a default: the check fails naming the file and the field, with exit 1.
    std::fs::write(&web, with_field(r#"{"name":"campaign","type":"string"}"#)?)?;
    let check = stack.run(&["schemas", "check"]).await?;
    check.assert_code(1);
    let fail = check
        .lines()
        .into_iter()
        .find(|l| l.starts_with("FAIL"))
        .with_context(|| format!("{check:#?}"))?
        .to_string();
    assert!(
        fail.starts_with(&format!("FAIL {}: ", web.display()))
            && fail.contains("not BACKWARD compatible with version 2")
            && fail.contains("campaign"),
        "{fail}"
    );
    assert_eq!(
        check
            .lines()
            .iter()
            .filter(|l| l.starts_with("FAIL"))
            .count(),
        1,
        "{check:#?}"
    );

    // A transitive level checks every version.
    let customers = stack.dir().join("db.shop.customers-value.avsc");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&customers)?)?;
    schema["fields"]
        .as_array_mut()
        .context("fields")?
        .push(serde_json::json!({"name": "note", "type": "string", "default": ""}));
    std::fs::write(&customers, schema.to_string())?;
    std::fs::write(&web, &v2)?;
    stack.run(&["topics", "apply"]).await?.assert_code(0);
    let check = stack.run(&["schemas", "check"]).await?;
    check.assert_code(0);
    assert!(
        check
            .lines()
            .contains(&"ok db.shop.customers-value (BACKWARD_TRANSITIVE against versions 1-2)"),
        "{check:#?}"
    );
    Ok(())
}

/// The process ids of the children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// `tributary up` runs every process of its stack under `tributary __watchdog`, with a pipe
/// from `up` as its stdin: when the pipe closes (`up` ended, even by `kill -9`) the program is
/// stopped; SIGTERM is passed on and the program's exit code comes back.
#[test]
fn the_watchdog_stops_its_program_when_its_parent_goes() -> Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // The parent goes: stdin closes.
    let mut watchdog = Command::new(tributary()?)
        .args(["__watchdog", "--", "sleep", "300"])
        .stdin(Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        if let Some(pid) = children(watchdog.id()).first() {
            break *pid;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "no child started");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(alive(sleeper));
    // Writing to stdin is not a stop: only its end is.
    watchdog
        .stdin
        .as_mut()
        .context("stdin")?
        .write_all(b"still here\n")?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(sleeper), "the program runs while the pipe is open");
    drop(watchdog.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(sleeper) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the program outlived its watchdog's parent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = watchdog.wait()?;
    assert!(!status.success(), "sleep ended by SIGTERM: {status}");

    // SIGTERM to the watchdog reaches the program; a clean exit comes back as 0.
    let mut watchdog = Command::new(tributary()?)
        .args([
            "__watchdog",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ])
        .stdin(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-TERM", &watchdog.id().to_string()])
        .status()?;
    let status = watchdog.wait()?;
    assert!(status.success(), "{status}");

    // The program's own exit code comes back. The pipe stays open meanwhile (`status()` and
    // `wait()` close a piped stdin first, which would stop the program: a race with its exit).
    let mut watchdog = Command::new(tributary()?)
        .args(["__watchdog", "--", "sh", "-c", "sleep 0.3; exit 3"])
        .stdin(Stdio::piped())
        .spawn()?;
    let lifeline = watchdog.stdin.take();
    let status = watchdog.wait()?;
    drop(lifeline);
    assert_eq!(status.code(), Some(3));
    Ok(())
}

#[tokio::test]
async fn dlq_shows_the_latest_dead_letters_with_their_records() -> Result<()> {
    use tributary_core::bus::{BusMetrics, DeadLetter, Producer, dead_letter_record};
    let stack = Stack::start()?;
    stack.run(&["topics", "apply"]).await?.assert_code(0);
    let empty = stack.run(&["dlq"]).await?;
    empty.assert_code(0);
    assert!(
        empty.stdout.contains("no dead letters in dlq.ingest"),
        "{empty:#?}"
    );

    // A clean.orders record refused by transform (Avro, the registry's schema), and three rows
    // of a file refused by ingest (text).
    let registry = stack.registry_client()?;
    let orders = registry
        .subject_version("db.shop.orders-value", Version::Latest)
        .await?;
    let schema = apache_avro::Schema::parse_str(&orders.schema)?;
    let change: serde_json::Value = serde_json::json!({
        "id": 17, "op": "d", "ts_ms": 1_764_400_000_000_i64,
        "before": {"order_id": 17, "customer_id": 3, "status": "cancelled", "total": "12.50",
                   "currency": "EUR", "ordered_at": 1_764_400_000_000_000_i64},
        "after": null,
        "source": {"connector": "shop_db", "db": "shop", "schema": "shop", "table": "orders",
                   "lsn": 1, "txid": 2, "ts_ms": 1_764_400_000_000_i64},
    });
    let body = tributary_core::schema::json::json_to_avro_datum(&change, &schema)?;
    let producer = Producer::new(&stack.broker.kafka(), BusMetrics::default())?;
    let letter = |stage, source, offset, class, message| DeadLetter {
        stage,
        source_topic: source,
        partition: 1,
        offset,
        error_class: class,
        message,
    };
    producer
        .send(&dead_letter_record(
            &letter(
                "transform",
                "db.shop.orders",
                41,
                "validation",
                "rule currency_code failed",
            ),
            Some(b"17".to_vec()),
            tributary_core::schema::wire::frame(orders.id, &body),
        ))
        .await?;
    for line in 1..=3 {
        producer
            .send(&dead_letter_record(
                &letter(
                    "ingest",
                    "products/p.csv",
                    line,
                    "invalid",
                    "price: not a number",
                ),
                None,
                format!("P-{line},SKU-{line},call us").into_bytes(),
            ))
            .await?;
    }

    let all = stack.run(&["dlq", "--last", "2"]).await?;
    all.assert_code(0);
    assert!(
        !all.stdout.contains("P-1,") && all.stdout.contains("P-3,SKU-3,call us"),
        "the last two only\n{all:#?}"
    );
    let transform = stack.run(&["dlq", "transform", "--json"]).await?;
    transform.assert_code(0);
    let lines = transform.lines();
    assert_eq!(lines.len(), 1, "{transform:#?}");
    let shown: serde_json::Value = serde_json::from_str(lines[0])?;
    assert_eq!(shown["stage"], "transform");
    assert_eq!(shown["source_topic"], "db.shop.orders");
    assert_eq!(shown["source_offset"], 41);
    assert_eq!(shown["error_message"], "rule currency_code failed");
    assert_eq!(shown["record"]["before"]["status"], "cancelled");
    assert_eq!(shown["record"]["op"], "d");
    assert_eq!(shown["record"]["before"]["total"], "12.50");
    assert!(shown["record"]["after"].is_null(), "{shown}");
    let text = stack.run(&["dlq", "transform"]).await?;
    assert!(
        text.stdout
            .contains("transform  validation  from db.shop.orders[1]@41")
            && text.stdout.contains("\"status\":\"cancelled\""),
        "{text:#?}"
    );
    stack.run(&["dlq", "nope"]).await?.assert_code(2);
    Ok(())
}
