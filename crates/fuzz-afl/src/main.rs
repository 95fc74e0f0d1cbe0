//! `tributary-fuzz-afl`: one fuzz target under AFL++ (see the library's docs).
//!
//! ```text
//! tributary-fuzz-afl list                  the targets' names
//! tributary-fuzz-afl prepare TARGET DIR    writes DIR/in/ (seeds, regressions) and DIR/dict
//! tributary-fuzz-afl run TARGET            AFL++'s persistent loop (under afl-fuzz)
//! tributary-fuzz-afl replay TARGET FILE..  runs saved inputs once each, printing outcomes
//! ```

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::ExitCode;

use tributary_fuzz::Harness;

fn harnesses() -> Vec<Harness> {
    let mut all = tributary_core::schema::fuzz::harnesses();
    all.extend(tributary_ingest::fuzz::harnesses());
    all
}

fn find(name: &str) -> Result<Harness, String> {
    let all = harnesses();
    let names: Vec<String> = all.iter().map(|h| h.name().to_string()).collect();
    all.into_iter()
        .find(|h| h.name() == name)
        .ok_or_else(|| format!("no target {name:?}; the targets: {}", names.join(", ")))
}

/// AFL++'s dictionary format: one quoted token a line, bytes outside printable ASCII escaped.
fn dictionary_line(i: usize, token: &[u8]) -> String {
    let mut quoted = String::new();
    for &b in token {
        match b {
            b'"' | b'\\' => quoted.push_str(&format!("\\x{b:02x}")),
            0x20..=0x7e => quoted.push(b as char),
            _ => quoted.push_str(&format!("\\x{b:02x}")),
        }
    }
    format!("token_{i}=\"{quoted}\"\n")
}

fn prepare(harness: &Harness, dir: &Path) -> std::io::Result<usize> {
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs)?;
    let starting = harness.starting_inputs();
    for (i, input) in starting.iter().enumerate() {
        std::fs::write(inputs.join(format!("seed-{i:03}")), input)?;
    }
    let dict: String = harness
        .dictionary()
        .iter()
        .enumerate()
        .map(|(i, t)| dictionary_line(i, t))
        .collect();
    std::fs::write(dir.join("dict"), dict)?;
    Ok(starting.len())
}

/// Appends this process's CPU seconds to `$TRIBUTARY_AFL_CPU_FILE`, if set. AFL++ runs the
/// target in processes forked by its fork server, which nothing waits for at the end of a run, so
/// a shell's `times` misses them: each process, when its persistent loop ends, says its own.
fn record_cpu() {
    use std::io::Write;
    let Some(path) = std::env::var_os("TRIBUTARY_AFL_CPU_FILE") else {
        return;
    };
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // utime and stime: the 12th and 13th fields after the command's closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{:.2}", ticks as f64 / 100.0);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["list"] => {
            for h in harnesses() {
                println!("{}", h.name());
            }
            Ok(())
        }
        ["prepare", name, dir] => find(name).and_then(|h| {
            prepare(&h, Path::new(dir))
                .map(|n| println!("{name}: {n} starting inputs in {dir}/in"))
                .map_err(|e| format!("write {dir}: {e}"))
        }),
        ["run", name] => find(name).map(|h| {
            // A panic that leaves the target (a broken property, a crash in a dependency)
            // aborts the process: AFL++ records the input as a crash. Without afl's panic hook,
            // which would abort on every panic, also those our code catches on purpose
            // (`schema::parse_avro_schema` around apache-avro's known panics).
            let mut harness = AssertUnwindSafe(h);
            afl::fuzz_nohook!(|data: &[u8]| {
                harness.run_one(data);
            });
            record_cpu();
            // Leave without dropping the harness: its temporary folders belong to the fork
            // server, which forks the next target process from its copy.
            std::process::exit(0)
        }),
        ["replay", name, files @ ..] => find(name).and_then(|mut h| {
            for file in files {
                let input = std::fs::read(file).map_err(|e| format!("read {file}: {e}"))?;
                println!("{file}: {}", h.run_one(&input));
            }
            Ok(())
        }),
        _ => Err(
            "usage: tributary-fuzz-afl list | prepare TARGET DIR | run TARGET | replay TARGET FILE..."
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tributary-fuzz-afl: {e}");
            ExitCode::FAILURE
        }
    }
}
