//! A small mutation fuzzer for the parsers and decoders of untrusted input, on the stable
//! toolchain (no nightly here for cargo-fuzz): targets are ordinary tests in the crates that own
//! the code, seeded with real inputs (the catalog's schemas, valid records, captured messages).
//!
//! Each round takes an input from the corpus, applies a few structure-blind mutations (bit and
//! byte flips, interesting integers, inserts, deletes, duplicated and spliced ranges, tokens of
//! a dictionary) and runs the target under `catch_unwind`, timing it. The target answers an
//! *outcome* (a short text: "ok", an error's kind): an input with an outcome not seen before
//! joins the corpus, so inputs that reach new error paths are mutated further. That is the
//! feedback a coverage-guided fuzzer gets from edge counters, reduced to what the target says.
//!
//! A panic or a run slower than [`SLOW`] is a finding: the input is written to
//! `$TRIBUTARY_FUZZ_FINDINGS/<target>/` (default `target/fuzz-findings`) and the test fails
//! naming the file. Move it to the crate's `fuzz/regressions/<target>/` with the fix: every
//! file there is replayed first, every run.
//!
//! `TRIBUTARY_FUZZ_SECONDS` sets how long each target runs (default 1 s, as in the test
//! command); `TRIBUTARY_FUZZ_SEED` replays a run. See docs/security.md for the long run.

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A run slower than this for one input is a finding (a hang, or work out of proportion).
pub const SLOW: Duration = Duration::from_secs(2);
/// Largest input a mutation may produce.
const MAX_LEN: usize = 1 << 16;
/// Most inputs kept in the corpus.
const MAX_CORPUS: usize = 20_000;

/// What a run of a target found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run.
    pub runs: u64,
    /// Inputs in the corpus at the end (seeds included).
    pub corpus: usize,
    /// Distinct outcomes seen, with how often.
    pub outcomes: BTreeMap<String, u64>,
    /// Files written for panics and slow inputs.
    pub findings: Vec<PathBuf>,
    /// CPU time the target's thread used during the run (targets run one per test thread).
    pub cpu: Duration,
    /// Wall time.
    pub wall: Duration,
}

/// A fuzz target: its name, seeds, a dictionary of tokens worth inserting, and the crate's
/// folder (for its regressions).
#[derive(Debug)]
pub struct Target {
    name: String,
    seeds: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
    crate_dir: PathBuf,
}

impl Target {
    /// A target of the crate at `crate_dir` (`env!("CARGO_MANIFEST_DIR")`).
    pub fn new(name: &str, crate_dir: &str) -> Self {
        Self {
            name: name.to_string(),
            seeds: Vec::new(),
            dictionary: Vec::new(),
            crate_dir: PathBuf::from(crate_dir),
        }
    }

    /// Adds seed inputs.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.seeds.extend(seeds);
        self
    }

    /// Adds tokens mutations may insert or overwrite with.
    pub fn dictionary<T: AsRef<[u8]>>(mut self, tokens: impl IntoIterator<Item = T>) -> Self {
        self.dictionary
            .extend(tokens.into_iter().map(|t| t.as_ref().to_vec()));
        self
    }

    /// The target with the code it runs on one input: what both fuzzers take (this crate's,
    /// by [`Harness::fuzz`], and AFL++ by `crates/fuzz-afl`, one input at a time).
    pub fn harness(self, run: impl FnMut(&[u8]) -> String + 'static) -> Harness {
        Harness {
            target: self,
            run: Box::new(run),
        }
    }

    /// The saved inputs of earlier findings, replayed first by every run.
    pub fn regressions(&self) -> Vec<PathBuf> {
        files_in(&self.crate_dir.join("fuzz/regressions").join(&self.name))
    }

    /// Replays the regressions, then fuzzes for the configured time; panics (failing the test)
    /// naming every finding.
    pub fn run(self, mut target: impl FnMut(&[u8]) -> String) -> Report {
        for file in self.regressions() {
            let Ok(input) = std::fs::read(&file) else {
                continue;
            };
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
            assert!(
                outcome.is_ok() && started.elapsed() < SLOW,
                "regression {} fails again ({:?})",
                file.display(),
                started.elapsed()
            );
        }
        let seconds: f64 = std::env::var("TRIBUTARY_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0);
        let seed: u64 = std::env::var("TRIBUTARY_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        let report = self.fuzz(Duration::from_secs_f64(seconds), seed, &mut target);
        println!(
            "fuzz {}: {} runs in {:.1} s ({:.1} s CPU), seed {seed}, corpus {}, {} outcomes, {} findings",
            self.name,
            report.runs,
            report.wall.as_secs_f64(),
            report.cpu.as_secs_f64(),
            report.corpus,
            report.outcomes.len(),
            report.findings.len()
        );
        for (outcome, n) in report.outcomes.iter().take(40) {
            println!("  {n:>9}  {outcome}");
        }
        assert!(
            report.findings.is_empty(),
            "fuzz {} found (seed {seed}):\n{}",
            self.name,
            report
                .findings
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        report
    }

    fn fuzz(
        &self,
        budget: Duration,
        seed: u64,
        target: &mut impl FnMut(&[u8]) -> String,
    ) -> Report {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut corpus: Vec<Vec<u8>> = self.seeds.clone();
        if corpus.is_empty() {
            corpus.push(Vec::new());
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut report = Report::default();
        let findings_dir = std::env::var_os("TRIBUTARY_FUZZ_FINDINGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.crate_dir.join("../../target/fuzz-findings"))
            .join(&self.name);
        let cpu_before = thread_cpu();
        let started = Instant::now();
        // Panics are findings, reported once with their input: the default hook's message for
        // each would drown the output.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        // The seeds first, as they are.
        let mut queue: Vec<Vec<u8>> = corpus.clone();
        while started.elapsed() < budget {
            let input = queue.pop().unwrap_or_else(|| {
                let base = &corpus[rng.random_range(0..corpus.len())];
                let other = &corpus[rng.random_range(0..corpus.len())];
                self.mutate(base, other, &mut rng)
            });
            let t = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
            let took = t.elapsed();
            report.runs += 1;
            let key = match outcome {
                // Numbers in an outcome (offsets, lengths) would make every input new.
                Ok(key) => key.chars().filter(|c| !c.is_ascii_digit()).collect(),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let file = save(&findings_dir, "panic", &input);
                    report.findings.push(PathBuf::from(format!(
                        "{} (panicked: {message})",
                        file.display()
                    )));
                    format!("PANIC {}", message.chars().take(80).collect::<String>())
                }
            };
            if took >= SLOW {
                let file = save(&findings_dir, "slow", &input);
                report
                    .findings
                    .push(PathBuf::from(format!("{} (took {took:?})", file.display())));
            }
            *report.outcomes.entry(key.clone()).or_default() += 1;
            if seen.insert(key) && corpus.len() < MAX_CORPUS {
                corpus.push(input);
            }
            if report.findings.len() >= 10 {
                break;
            }
        }
        std::panic::set_hook(hook);
        report.corpus = corpus.len();
        report.wall = started.elapsed();
        report.cpu = thread_cpu().saturating_sub(cpu_before);
        report
    }

    /// A few mutations of `base` (sometimes spliced with `other`).
    fn mutate(&self, base: &[u8], other: &[u8], rng: &mut StdRng) -> Vec<u8> {
        let mut out = base.to_vec();
        for _ in 0..rng.random_range(1..=6) {
            let len = out.len();
            match rng.random_range(0..11) {
                0 if len > 0 => {
                    let i = rng.random_range(0..len);
                    out[i] ^= 1 << rng.random_range(0..8);
                }
                1 if len > 0 => {
                    let i = rng.random_range(0..len);
                    out[i] = rng.random();
                }
                2 if len > 0 => {
                    // An interesting byte: the ends of signed and unsigned ranges, zig-zag
                    // continuation bits, ASCII structure.
                    const BYTES: [u8; 12] = [
                        0, 1, 0x7f, 0x80, 0xff, 0xfe, b'"', b'{', b'[', b'\\', b'\n', b'-',
                    ];
                    let i = rng.random_range(0..len);
                    out[i] = BYTES[rng.random_range(0..BYTES.len())];
                }
                3 if len > 0 => {
                    // Truncate.
                    out.truncate(rng.random_range(0..len));
                }
                4 if len > 0 => {
                    // Delete a range.
                    let a = rng.random_range(0..len);
                    let b = rng.random_range(a..=len.min(a + 32));
                    out.drain(a..b);
                }
                5 if len > 0 => {
                    // Duplicate a range in place (repetition: counts, nesting).
                    let a = rng.random_range(0..len);
                    let b = rng.random_range(a..=len.min(a + 64));
                    let piece = out[a..b].to_vec();
                    let times = rng.random_range(1..=16);
                    for _ in 0..times {
                        if out.len() + piece.len() > MAX_LEN {
                            break;
                        }
                        out.splice(b..b, piece.iter().copied());
                    }
                }
                6 if !self.dictionary.is_empty() => {
                    let token = &self.dictionary[rng.random_range(0..self.dictionary.len())];
                    let at = rng.random_range(0..=len);
                    if rng.random_bool(0.5) || at + token.len() > len {
                        out.splice(at..at, token.iter().copied());
                    } else {
                        out[at..at + token.len()].copy_from_slice(token);
                    }
                }
                7 if !other.is_empty() => {
                    // Splice: our head, their tail.
                    let cut = rng.random_range(0..=len);
                    let from = rng.random_range(0..other.len());
                    out.truncate(cut);
                    out.extend_from_slice(&other[from..]);
                }
                8 => {
                    // An interesting varint (Avro's zig-zag) or integer text.
                    const NUMBERS: [i64; 10] = [
                        0,
                        -1,
                        1,
                        127,
                        -128,
                        1 << 31,
                        -(1 << 31),
                        1 << 53,
                        i64::MAX,
                        i64::MIN,
                    ];
                    let n = NUMBERS[rng.random_range(0..NUMBERS.len())];
                    let bytes = if rng.random_bool(0.5) {
                        zigzag(n)
                    } else {
                        n.to_string().into_bytes()
                    };
                    let at = rng.random_range(0..=len);
                    out.splice(at..at, bytes);
                }
                9 => {
                    let at = rng.random_range(0..=len);
                    let byte: u8 = rng.random();
                    out.insert(at, byte);
                }
                _ if len >= 4 => {
                    // A 32-bit big-endian value (lengths and counts of binary protocols).
                    let i = rng.random_range(0..len - 3);
                    let v: u32 = match rng.random_range(0..4) {
                        0 => 0,
                        1 => u32::MAX,
                        2 => 0x7fff_ffff,
                        _ => rng.random(),
                    };
                    out[i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
                _ => {}
            }
            out.truncate(MAX_LEN);
        }
        out
    }
}

/// The code a target runs on one input, answering its outcome.
type RunOne = Box<dyn FnMut(&[u8]) -> String>;

/// A fuzz target with the code it runs: see [`Target::harness`].
pub struct Harness {
    target: Target,
    run: RunOne,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// The target's name (`wire`, `avro-batch`, ...).
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// The seed inputs and, after them, the regressions' inputs: a coverage-guided fuzzer's
    /// starting corpus.
    pub fn starting_inputs(&self) -> Vec<Vec<u8>> {
        let mut inputs = self.target.seeds.clone();
        inputs.extend(
            self.target
                .regressions()
                .iter()
                .filter_map(|f| std::fs::read(f).ok()),
        );
        inputs
    }

    /// The dictionary's tokens.
    pub fn dictionary(&self) -> &[Vec<u8>] {
        &self.target.dictionary
    }

    /// Runs the target on one input and answers its outcome; a broken property panics.
    pub fn run_one(&mut self, input: &[u8]) -> String {
        (self.run)(input)
    }

    /// This crate's mutation fuzzer for the configured time (see [`Target::run`]).
    pub fn fuzz(self) -> Report {
        let Self { target, run } = self;
        target.run(run)
    }
}

/// Avro's zig-zag varint of a long (also for tests that write Avro by hand).
pub fn zigzag(n: i64) -> Vec<u8> {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::with_capacity(10);
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Writes a finding, named by kind and a hash of its bytes; returns its path.
fn save(dir: &Path, kind: &str, input: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let path = dir.join(format!("{kind}-{:016x}", h.finish()));
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(&path, input);
    path
}

/// CPU time of the calling thread so far (user and system), from /proc.
fn thread_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_is_a_finding_with_its_input_saved() {
        let target = Target::new("selftest", env!("CARGO_MANIFEST_DIR"))
            .seeds([b"abc".to_vec()])
            .dictionary(["boom"]);
        let mut runs = 0;
        let report = target.fuzz(Duration::from_secs(5), 7, &mut |input: &[u8]| {
            runs += 1;
            assert!(!input.windows(4).any(|w| w == b"boom"), "found the token");
            format!("len {}", input.len().min(8))
        });
        assert!(runs > 0);
        assert!(!report.findings.is_empty(), "{report:?}");
    }

    #[test]
    fn outcomes_grow_the_corpus_and_zigzag_matches_avro() {
        let target = Target::new("selftest2", env!("CARGO_MANIFEST_DIR")).seeds([vec![1, 2, 3]]);
        let report = target.fuzz(Duration::from_millis(300), 1, &mut |input: &[u8]| {
            format!("first {:?}", input.first())
        });
        assert!(report.corpus > 1 && report.outcomes.len() > 1, "{report:?}");
        assert_eq!(zigzag(0), [0]);
        assert_eq!(zigzag(-1), [1]);
        assert_eq!(zigzag(64), [0x80, 0x01]);
        assert_eq!(zigzag(i64::MIN).len(), 10);
    }
}
