//! Bad input on stdin, randomized with a fixed seed: random bytes, invalid UTF-8,
//! NUL bytes, control characters and 1 MB lines among ordinary commands and
//! queries. No panic; exactly one error per bad line, naming the line; every
//! argument error carries its usage line; the session runs to the last line.
//! `SYNAPTICLLAMAS_BAD_LINES` sets the number of lines (default 300);
//! `SYNAPTICLLAMAS_SEED` changes the seed.

use std::collections::BTreeMap;
use std::io::Write;

use synapticllamas::sim::SimConfig;

use crate::support::*;

/// Commands that are safe with random arguments: no scan, no file paths, no
/// change of the model the queries use.
const SAFE: &[&str] = &[
    "refine", "quality", "qretries", "collab", "ast", "strategy", "timeout", "rag", "redis",
    "verbose", "status", "help", "nodes", "metrics", "remove", "REFINE", "Quality",
];
const WORDS: &[&str] = &[
    "why",
    "is",
    "the",
    "sky",
    "blue",
    "tell",
    "me",
    "about",
    "llamas",
    "🦙",
    "é",
    "naïve",
    "ünïcödé",
    "x",
    "1",
    "0.5",
    "nan",
    "-3",
    "on",
    "off",
    "--force",
    "\"",
    "'",
    "\\",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InvalidUtf8,
    Nul,
    Command,
    Query,
    Comment,
    Blank,
    Controls,
}

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

fn words(rng: &mut Rng, n: u64) -> String {
    (0..n)
        .map(|_| pick(rng, WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| (rng.next() >> 24) as u8)
        .map(|b| if b == b'\n' { b'?' } else { b })
        .collect()
}

fn roll(rng: &mut Rng) -> Kind {
    match rng.below(100) {
        0..=14 => Kind::InvalidUtf8,
        15..=24 => Kind::Nul,
        25..=64 => Kind::Command,
        65..=71 => Kind::Query,
        72..=81 => Kind::Comment,
        82..=89 => Kind::Blank,
        _ => Kind::Controls,
    }
}

/// One line of `kind` (without its newline); `big` makes it 1 MB long.
fn line(rng: &mut Rng, kind: Kind, big: bool) -> Vec<u8> {
    let size = if big {
        1 << 20
    } else {
        1 + rng.below(80) as usize
    };
    match kind {
        Kind::InvalidUtf8 => {
            let mut b = random_bytes(rng, size.max(2));
            let at = 1 + rng.below(b.len() as u64 - 1) as usize;
            b[at] = 0xFF; // never valid in UTF-8
            b[0] = b'a';
            b
        }
        Kind::Nul => {
            let mut b = words(rng, 3).into_bytes();
            b.insert(0, b'r');
            if big {
                b.resize(size, b'z');
            }
            let at = 1 + rng.below(b.len() as u64) as usize;
            b.insert(at.min(b.len()), 0);
            b
        }
        Kind::Command => {
            let mut s = pick(rng, SAFE).to_string();
            let n = rng.below(3);
            if n > 0 {
                s.push(' ');
                s.push_str(&words(rng, n));
            }
            if big {
                s.push(' ');
                s.push_str(&"9".repeat(size));
            }
            s.into_bytes()
        }
        Kind::Query => {
            let n = 2 + rng.below(5);
            let mut s = format!("tell me {}", words(rng, n));
            if big {
                s.push(' ');
                s.push_str(&"word ".repeat(size / 5));
            }
            s.into_bytes()
        }
        Kind::Comment => {
            let mut b = b"# ".to_vec();
            b.extend(
                String::from_utf8_lossy(&random_bytes(rng, size))
                    .replace('\n', " ")
                    .into_bytes(),
            );
            b
        }
        Kind::Blank => {
            let ws = [" ", "\t", "\r", "\u{a0}", "\u{3000}"];
            let s: String = (0..rng.below(5)).map(|_| pick(rng, &ws)).collect();
            s.into_bytes()
        }
        Kind::Controls => {
            let junk = ["\u{1b}[2J", "\u{7}", "\u{8}", "\r", "\u{202e}", "\u{feff}"];
            let s = format!("refine {}{}", pick(rng, &junk), rng.below(9));
            s.into_bytes()
        }
    }
}

#[test]
fn random_bytes_and_huge_lines_do_not_stop_the_session() {
    let lines = env_count("SYNAPTICLLAMAS_BAD_LINES", 300);
    let mut rng = Rng::seeded(0xBAD_1417);
    let a = sim(SimConfig {
        reply_words: 20,
        ..Default::default()
    });
    let home = Home::new();
    home.write_nodes(&node_file(&[
        serde_json::json!({"url": a.url(), "name": "sim"}),
    ]));

    let mut input = Vec::new();
    let mut kinds = Vec::new();
    // One line of 1 MB of each kind that can be long, at random places.
    let big: Vec<(usize, Kind)> = [
        Kind::InvalidUtf8,
        Kind::Nul,
        Kind::Command,
        Kind::Query,
        Kind::Comment,
    ]
    .into_iter()
    .map(|k| (rng.below(lines as u64) as usize, k))
    .collect();
    for i in 0..lines {
        let forced = big.iter().find(|(at, _)| *at == i).map(|(_, k)| *k);
        let k = forced.unwrap_or_else(|| roll(&mut rng));
        let b = line(&mut rng, k, forced.is_some());
        input.extend_from_slice(&b);
        input.push(b'\n');
        kinds.push((k, b));
    }
    // The session must get here.
    input.extend_from_slice(b"refine 5\n");
    kinds.push((Kind::Command, b"refine 5".to_vec()));

    let mut child = command(&home, &[]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = input.clone();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = |s: &str| {
        s.chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    };

    assert!(!stderr.contains("panicked"), "{}", tail(&stderr));
    assert_eq!(out.status.code(), Some(1), "{}", tail(&stderr));
    assert_eq!(
        home.settings()["refinement_rounds"],
        5,
        "the session reached the last line\n{}",
        tail(&stderr)
    );

    // One error per bad line, naming it; none for any other line.
    let mut named: BTreeMap<usize, usize> = BTreeMap::new();
    for l in stderr.lines() {
        if let Some(rest) = l.strip_prefix("❌ stdin line ") {
            let n: usize = rest.split(':').next().unwrap().parse().unwrap();
            *named.entry(n).or_default() += 1;
        }
    }
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut parse_errors = 0;
    let mut queries = 0;
    // A question of a megabyte fits no model's context: it fails, saying so.
    let mut too_large = 0;
    for (i, (k, b)) in kinds.iter().enumerate() {
        *counts.entry(*k).or_default() += 1;
        let lineno = i + 1;
        let flagged = named.get(&lineno).copied().unwrap_or(0);
        match k {
            Kind::InvalidUtf8 | Kind::Nul => {
                assert_eq!(flagged, 1, "line {lineno} ({k:?}) flagged {flagged} times")
            }
            _ => assert_eq!(flagged, 0, "line {lineno} ({k:?}) flagged"),
        }
        if matches!(k, Kind::Command | Kind::Controls | Kind::Query) {
            let text = std::str::from_utf8(b).unwrap().trim();
            match synapticllamas::command::parse(text) {
                Err(_) => parse_errors += 1,
                Ok(synapticllamas::command::Command::Query(q)) if q.len() > 100_000 => {
                    too_large += 1
                }
                Ok(synapticllamas::command::Command::Query(_)) => queries += 1,
                Ok(_) => {}
            }
        }
    }
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("   Usage: "))
            .count(),
        parse_errors,
        "one usage line per argument error"
    );
    let answers = stdout.matches("FINAL ANSWER").count();
    assert_eq!(answers, queries, "every query that fits was answered");
    let refused = stderr
        .lines()
        .filter(|l| l.starts_with("❌ Query failed:") && l.contains("request too large: about"))
        .count();
    assert_eq!(refused, too_large, "{}", tail(&stderr));
    let big = input.len() - kinds.iter().map(|(_, b)| b.len().min(100)).sum::<usize>();
    eprintln!(
        "bad input: {} lines ({} bytes, {big} of them in long lines): {counts:?}; \
         {} flagged, {parse_errors} usage errors, {answers} answers",
        kinds.len(),
        input.len(),
        named.len()
    );
}
