//! Helpers shared by the benchmark binaries (`src/bin/bench-*.rs`): the `--broker` option and
//! the header naming the machine and the broker, CPU accounting from `/proc`, the reproducible
//! `raw.web_events` records they produce, a parallel producer, and running a benchmark beside
//! the services it starts.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::task::JoinSet;
use tributary_core::bus::{OutboundRecord, Producer};

use crate::{
    Broker, BrokerKind, KAFKA_VERSION, TANSU_VERSION, kafka_launcher, tansu_binary, workspace_bin,
};

// ---------------------------------------------------------------------------------------------
// The broker: `--broker`, the header, starting it.

/// The `--broker` lines of every benchmark's usage text.
pub const BROKER_USAGE: &str =
    "  --broker kafka|tansu  the broker to start: Apache Kafka (one KRaft node) or Tansu (SQLite
                        storage); default: TRIBUTARY_TEST_BROKER, else kafka";

/// The value of `--broker` (`kafka` or `tansu`); `usage` is appended to the error otherwise.
pub fn parse_broker(value: Option<String>, usage: &str) -> Result<BrokerKind> {
    let Some(value) = value else {
        bail!("--broker needs a value: kafka or tansu\n{usage}");
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "kafka" => Ok(BrokerKind::Kafka),
        "tansu" => Ok(BrokerKind::Tansu),
        _ => bail!("--broker {value}: expected kafka or tansu\n{usage}"),
    }
}

/// The broker `--broker` chose (`chosen`), else the one `TRIBUTARY_TEST_BROKER` names, else
/// Apache Kafka.
pub fn broker_or_default(chosen: Option<BrokerKind>, usage: &str) -> Result<BrokerKind> {
    match chosen {
        Some(kind) => Ok(kind),
        None => BrokerKind::from_env().map_err(|e| anyhow::anyhow!("{e}\n{usage}")),
    }
}

/// How the header and the tables name the broker.
pub fn broker_label(kind: BrokerKind) -> &'static str {
    match kind {
        BrokerKind::Kafka => "Apache Kafka",
        BrokerKind::Tansu => "Tansu",
    }
}

/// The broker and the version that will run, as the header prints it: for Apache Kafka the
/// version of the server jar beside the launcher and the JVM's, for Tansu what the binary says.
pub fn broker_description(kind: BrokerKind) -> String {
    match kind {
        BrokerKind::Kafka => {
            let launcher = kafka_launcher();
            let version = launcher
                .parent()
                .and_then(Path::parent)
                .and_then(|home| kafka_jar_version(&home.join("libs")))
                .unwrap_or_else(|| format!("{KAFKA_VERSION} (pinned; no server jar found)"));
            let java = std::env::var_os("JAVA").unwrap_or_else(|| "java".into());
            let jvm = first_line_of(Command::new(java).arg("-version"))
                .unwrap_or_else(|| "java -version said nothing".to_string());
            format!(
                "Apache Kafka {version}, one KRaft node (broker and controller), {}; JVM: {jvm}",
                launcher.display()
            )
        }
        BrokerKind::Tansu => {
            let binary = tansu_binary();
            let version = first_line_of(Command::new(&binary).arg("--version"))
                .unwrap_or_else(|| format!("{TANSU_VERSION} (pinned; the binary did not say)"));
            format!(
                "Tansu {}, SQLite storage, {}",
                version.trim_start_matches("tansu").trim(),
                binary.display()
            )
        }
    }
}

/// The version in the name of `kafka-server-<version>.jar` in `libs`.
fn kafka_jar_version(libs: &Path) -> Option<String> {
    std::fs::read_dir(libs).ok()?.find_map(|entry| {
        let name = entry.ok()?.file_name().into_string().ok()?;
        let version = name.strip_prefix("kafka-server-")?.strip_suffix(".jar")?;
        // Not kafka-server-common-<version>.jar.
        version
            .starts_with(|c: char| c.is_ascii_digit())
            .then(|| version.to_string())
    })
}

/// The first non-empty line a short command prints (stdout, else stderr), or `None` when it
/// cannot run or takes more than 10 s (it is killed then).
fn first_line_of(command: &mut Command) -> Option<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    [output.stdout, output.stderr].iter().find_map(|bytes| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    })
}

/// Starts the broker and prints which process its CPU is read from.
pub fn start_broker(kind: BrokerKind) -> Result<Broker> {
    let broker = Broker::start_kind(kind)?;
    let pid = broker.pid().context("the broker has no process")?;
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    println!(
        "broker process: pid {pid} ({}), CPU from /proc/{pid}/stat with its children's",
        command.trim()
    );
    Ok(broker)
}

/// Produces every chunk with `send_all`, `in_flight` chunks at a time; fails unless every
/// record was acknowledged.
pub async fn produce_chunks(
    producer: &Producer,
    chunks: Arc<Vec<Vec<OutboundRecord>>>,
    in_flight: usize,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..in_flight {
        let (producer, chunks, next) = (producer.clone(), Arc::clone(&chunks), Arc::clone(&next));
        tasks.spawn(async move {
            while let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                let delivered = producer.send_all(chunk).await.context("produce")?;
                ensure!(delivered.len() == chunk.len(), "not every record delivered");
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CPU accounting.

#[derive(Debug, Clone, Copy)]
pub struct ProcessStat {
    pub state: char,
    /// utime + stime of every thread, in clock ticks.
    pub ticks: u64,
}

/// The fields of `/proc/<pid>/stat` after the command name: index 0 is field 3 (the state).
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    Ok(stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default())
}

/// The numeric field at `index` of [`stat_fields`] (field `index + 3` of the file).
fn stat_number(fields: &[String], pid: u32, index: usize) -> Result<u64> {
    fields
        .get(index)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("/proc/{pid}/stat: no field {}", index + 3))
}

/// `/proc/<pid>/stat`: state (field 3), utime (14) and stime (15).
pub fn process_stat(pid: u32) -> Result<ProcessStat> {
    let fields = stat_fields(pid)?;
    Ok(ProcessStat {
        state: fields.first().and_then(|s| s.chars().next()).unwrap_or('?'),
        ticks: stat_number(&fields, pid, 11)? + stat_number(&fields, pid, 12)?,
    })
}

/// CPU time of a process so far (all threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    Ok(process_stat(pid)?.ticks)
}

/// CPU time of the broker so far, in clock ticks: the process `pid` (for Apache Kafka the JVM
/// itself, which `kafka-local` execs), the children it has reaped (cutime, cstime) and its living
/// descendants with theirs. Neither broker starts children today; should one, they count.
pub fn broker_ticks(pid: u32) -> Result<u64> {
    // Every process's parent, from /proc/<pid>/stat (field 4).
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(child);
        }
    }
    let mut total = 0;
    let mut pending = vec![pid];
    while let Some(next) = pending.pop() {
        match tree_stat(next) {
            Ok(ticks) => total += ticks,
            // The broker itself must be readable; a descendant may have just ended.
            Err(e) if next == pid => return Err(e),
            Err(_) => continue,
        }
        pending.extend(children.remove(&next).unwrap_or_default());
    }
    Ok(total)
}

/// utime + stime + cutime + cstime (fields 14 to 17) of `/proc/<pid>/stat`.
fn tree_stat(pid: u32) -> Result<u64> {
    let fields = stat_fields(pid)?;
    (11..15).map(|i| stat_number(&fields, pid, i)).sum()
}

/// CPU used so far by the whole machine (all but idle and iowait, from `/proc/stat`), in clock
/// ticks.
pub fn machine_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    // cpu  user nice system idle iowait irq softirq steal ...: all but idle and iowait (guest
    // time is already in user).
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("/proc/stat has no cpu line")?
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(fields.len() == 8, "/proc/stat: short cpu line");
    Ok(fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7])
}

/// CPU used so far by the whole machine, this process and the broker, in clock ticks: another
/// process busy during a pass (a build, another benchmark) shows as CPU used by others.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Ticks of the whole machine (all but idle and iowait).
    pub machine: u64,
    /// Ticks of this process.
    pub me: u64,
    /// Ticks of the broker ([`broker_ticks`]: its children included).
    pub broker: u64,
}

impl Snapshot {
    /// Reads the counters now.
    pub fn take(broker_pid: u32) -> Result<Self> {
        Ok(Self {
            machine: machine_ticks()?,
            me: cpu_ticks(std::process::id())?,
            broker: broker_ticks(broker_pid)?,
        })
    }

    /// Ticks the machine spent between the two snapshots on anything but this process, the
    /// broker and `measured` (the ticks of the process the pass measured).
    pub fn others_until(&self, later: &Self, measured: u64) -> u64 {
        (later.machine - self.machine)
            .saturating_sub(later.me - self.me)
            .saturating_sub(later.broker - self.broker)
            .saturating_sub(measured)
    }
}

/// Waits until the child `pid` has exited (a zombie, not yet reaped) and returns the CPU time of
/// its whole life, in clock ticks.
pub fn ticks_at_exit(pid: u32, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let stat = process_stat(pid)?;
        if stat.state == 'Z' {
            return Ok(stat.ticks);
        }
        ensure!(
            Instant::now() < deadline,
            "process {pid} still running after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `getconf CLK_TCK`: the unit of the CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> Result<u64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("run getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

/// The CPU model, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".to_string())
}

// ---------------------------------------------------------------------------------------------
// The records: realistic raw.web_events.

const EVENT_TYPES: [&str; 5] = ["page_view", "click", "add_to_cart", "purchase", "other"];
const CATEGORIES: [&str; 6] = ["shoes", "jackets", "kitchen", "garden", "toys", "books"];
const REFERRERS: [&str; 4] = [
    "https://www.google.com/",
    "https://shop.example.com/",
    "https://news.example.org/deals",
    "https://www.bing.com/",
];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];
const PROPERTIES: [(&str, &str); 2] = [("ab_test", "checkout-v2"), ("campaign", "spring_sale")];

/// One `raw.web_events` record, rendered both as the JSON a browser posts and as Avro.
#[derive(Debug)]
pub struct Event {
    pub event_id: String,
    pub user_id: String,
    pub session_id: String,
    pub event_type: usize,
    pub occurred_at: i64,
    pub url: String,
    pub referrer: Option<&'static str>,
    pub user_agent: &'static str,
    pub amount_cents: Option<i64>,
    /// At most one entry, so that the Avro map's order is fixed.
    pub property: Option<(&'static str, &'static str)>,
}

/// A well-mixed 64-bit function of `x` (splitmix64), for varied but reproducible records.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Event {
    /// Every 7 ms from an hour boundary: a million records span two hours of event time.
    pub fn occurred_at(i: usize) -> i64 {
        1_764_000_000_000 + (i as i64) * 7
    }

    /// Record `i` of the reproducible sequence.
    pub fn generate(i: usize) -> Self {
        let i = i as u64;
        let a = mix(2 * i);
        let b = mix(2 * i + 1);
        let user = b % 50_000;
        let kind = match a % 100 {
            0..70 => 0,
            70..85 => 1,
            85..95 => 2,
            _ => 3,
        };
        Self {
            // A version-4 UUID whose last 12 hex digits are the index, so ids never repeat.
            event_id: format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                0x8000 | ((b >> 48) & 0x3fff),
                i
            ),
            user_id: format!("user-{user:06}"),
            session_id: format!("s-{:012x}", mix(user * 1_000 + i / 5_000) >> 16),
            event_type: kind,
            occurred_at: Self::occurred_at(i as usize),
            url: format!(
                "https://shop.example.com/products/{}/{}",
                CATEGORIES[(b >> 8) as usize % CATEGORIES.len()],
                (b >> 16) % 100_000
            ),
            referrer: ((b >> 40) % 10 < 4).then(|| REFERRERS[(b >> 44) as usize % REFERRERS.len()]),
            user_agent: USER_AGENTS[(a >> 40) as usize % USER_AGENTS.len()],
            amount_cents: (kind == 3).then_some(500 + ((a >> 20) % 50_000) as i64),
            property: (a >> 50)
                .is_multiple_of(2)
                .then(|| PROPERTIES[(a >> 52) as usize % PROPERTIES.len()]),
        }
    }

    /// The record as JSON (optional fields left out when null). No value needs escaping.
    pub fn json(&self) -> String {
        let mut s = format!(
            r#"{{"event_id":"{}","user_id":"{}","session_id":"{}","event_type":"{}","occurred_at":{},"page":{{"url":"{}""#,
            self.event_id,
            self.user_id,
            self.session_id,
            EVENT_TYPES[self.event_type],
            self.occurred_at,
            self.url
        );
        if let Some(r) = self.referrer {
            s.push_str(&format!(r#","referrer":"{r}""#));
        }
        s.push_str(&format!(r#"}},"user_agent":"{}""#, self.user_agent));
        if let Some(c) = self.amount_cents {
            s.push_str(&format!(r#","amount":"{}.{:02}""#, c / 100, c % 100));
        }
        match self.property {
            Some((k, v)) => s.push_str(&format!(r#","properties":{{"{k}":"{v}"}}}}"#)),
            None => s.push_str(r#","properties":{}}"#),
        }
        s
    }

    /// The Avro binary body (schemas/raw.web_events-value.avsc), as `json_to_avro` +
    /// `to_avro_datum` encode it; the verification at the end checks that byte for byte.
    pub fn avro(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        put_str(&mut out, &self.event_id);
        put_str(&mut out, &self.user_id);
        put_long(&mut out, 1);
        put_str(&mut out, &self.session_id);
        put_long(&mut out, self.event_type as i64);
        put_long(&mut out, self.occurred_at);
        put_str(&mut out, &self.url);
        match self.referrer {
            Some(r) => {
                put_long(&mut out, 1);
                put_str(&mut out, r);
            }
            None => put_long(&mut out, 0),
        }
        put_long(&mut out, 1);
        put_str(&mut out, self.user_agent);
        match self.amount_cents {
            Some(c) => {
                put_long(&mut out, 1);
                put_bytes(&mut out, &twos_complement(c));
            }
            None => put_long(&mut out, 0),
        }
        if let Some((k, v)) = self.property {
            put_long(&mut out, 1);
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        put_long(&mut out, 0);
        out
    }
}

fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Big-endian two's complement in as few bytes as hold the value (Avro decimal bytes).
fn twos_complement(n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// The sum of every series of a Prometheus counter in `/metrics` text (`name` with `_total`).
pub fn counter_sum(metrics_text: &str, name: &str) -> u64 {
    metrics_text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Prints the header lines every benchmark starts with: the machine (cores, CPU model, load
/// average) and the broker it will start with its version (`None`: no broker).
pub fn print_machine(broker: Option<BrokerKind>) {
    println!(
        "machine: {} cores, {}; load average before start: {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    match broker {
        Some(kind) => println!("broker: {}", broker_description(kind)),
        None => println!("broker: none"),
    }
}

/// Copies the repository's schemas folder (its files) into `dir` and appends `extra` to the
/// catalog: a benchmark's own topics and declarations beside the repository's.
pub fn repo_schemas_with(dir: &std::path::Path, extra: &str) -> Result<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    for entry in std::fs::read_dir(&repo)? {
        let path = entry?.path();
        if let Some(name) = path.file_name().filter(|_| path.is_file()) {
            std::fs::copy(&path, dir.join(name))?;
        }
    }
    let mut catalog = std::fs::read_to_string(repo.join("catalog.toml"))?;
    catalog.push_str(extra);
    std::fs::write(dir.join("catalog.toml"), catalog)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Services beside a release binary: a benchmark in `target/<profile>/` finds the services.

/// Set by [`run_beside_services`] on the program it re-runs, so that it never loops.
const BESIDE_REEXEC_VAR: &str = "TRIBUTARY_BENCH_REEXEC";

/// Lets a benchmark binary started as `target/<profile>/<name>` use the harness.
///
/// [`workspace_bin`] looks for the services in the parent of the executable's folder, which
/// suits test executables in `target/<profile>/deps/` but not binaries in `target/<profile>/`.
/// Cargo hard-links every binary into `target/<profile>/deps/` too: when `services` are beside
/// this executable and not where [`workspace_bin`] looks, this runs that twin instead (same
/// arguments; it does not return then). Returns `Ok` when nothing needs doing.
pub fn run_beside_services(services: &[&str]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

    if services.iter().all(|name| workspace_bin(name).is_ok()) {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locate this executable")?;
    let dir = exe.parent().context("this executable has no folder")?;
    let beside = services.iter().all(|name| dir.join(name).exists());
    if !beside || std::env::var_os(BESIDE_REEXEC_VAR).is_some() {
        bail!(
            "{} not built beside {}: cargo build --release -p {}",
            services.join(" and "),
            exe.display(),
            services.join(" -p ")
        );
    }
    let me = std::fs::metadata(&exe)?;
    let twin = std::fs::read_dir(dir.join("deps"))
        .with_context(|| format!("list {}/deps", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            std::fs::metadata(path).is_ok_and(|m| m.dev() == me.dev() && m.ino() == me.ino())
        })
        .with_context(|| {
            format!(
                "no hard link of {} in {}/deps",
                exe.display(),
                dir.display()
            )
        })?;
    let error = Command::new(&twin)
        .args(std::env::args_os().skip(1))
        .env(BESIDE_REEXEC_VAR, "1")
        .exec();
    Err(error).with_context(|| format!("run {}", twin.display()))
}
